#!/usr/bin/env bash
# Installs what sunode_like needs: a system SUNDIALS (apt-get, when root and missing) and
# the package with its extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/include/cvodes/cvodes.h ] && [ -z "${SUNDIALS_DIR:-}" ] && [ -z "${CONDA_PREFIX:-}" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsundials-dev >/dev/null
    else
        echo "SUNDIALS is missing: run 'apt-get install libsundials-dev' (as root), or" \
             "'conda install -c conda-forge sundials', or set SUNDIALS_DIR." >&2
        exit 1
    fi
fi
python3 -m pip install -q --disable-pip-version-check -e ".[test]"
