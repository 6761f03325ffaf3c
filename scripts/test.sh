#!/usr/bin/env bash
# Installs what is needed, then runs the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m pytest -q -x "$@"
