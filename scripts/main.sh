#!/usr/bin/env bash
# Installs what is needed, then fits the hares/lynx Lotka-Volterra model with NUTS.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
python3 -m sunode_like.examples.lotka_volterra "$@"
