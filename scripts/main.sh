#!/usr/bin/env bash
# README command 1: set up, build, and run the main job on an example spec:
# show what it means, run it on random inputs and check it against the float64
# reference and an independent numpy formula.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ninja -C build -j"$(nproc)" attnc
SPEC=${1:-specs/examples/mistral-swa.json}
/usr/bin/python3 scripts/demo.py "$SPEC"
