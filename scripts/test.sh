#!/usr/bin/env bash
# Set up .venv if needed, then run the whole test suite (slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
