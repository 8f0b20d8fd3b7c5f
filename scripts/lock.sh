#!/usr/bin/env bash
# Refresh requirements.lock: the exact, hash-checked versions scripts/setup.sh installs, resolved
# from pyproject.toml's dependencies and its dev extra by pip-tools (in a throwaway environment).
# Run it after changing a dependency, then run the tests and commit both files.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
tools="$(mktemp -d)"
trap 'rm -rf "$tools"' EXIT
"$PYTHON" -m venv "$tools"
"$tools/bin/python" -m pip install --quiet "pip-tools==7.7.0"
"$tools/bin/pip-compile" --quiet --generate-hashes --extra dev --strip-extras --allow-unsafe \
    --no-emit-index-url --no-emit-find-links --output-file requirements.lock pyproject.toml
echo "requirements.lock refreshed: $(grep -c '==' requirements.lock) packages"
