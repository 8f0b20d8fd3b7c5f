#!/usr/bin/env bash
# Create or update the virtual environment in .venv and install the project into it, with the
# exact, hash-checked versions of requirements.lock (refreshed by scripts/lock.sh).
# UNLOCKED=1 installs whatever versions pyproject.toml's ranges allow today instead.
# Re-running is cheap: pip only installs what changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ "${UNLOCKED:-0}" = 1 ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
else
    .venv/bin/python -m pip install --quiet --require-hashes -r requirements.lock
    # The project itself, its dependencies being installed already; hatchling comes from the lock.
    .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
fi
