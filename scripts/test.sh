#!/usr/bin/env bash
# Installs what is needed, then runs the test suite (extra arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 scripts/versions.py
python3 -m pytest -q -x "$@"
