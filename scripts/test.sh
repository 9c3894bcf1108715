#!/usr/bin/env bash
# README command 2: set up, build, and run every test (lit, GoogleTest, pytest).
# GPU tests skip visibly (with the reason) where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ninja -C build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
