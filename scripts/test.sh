#!/usr/bin/env bash
# README command 2: set up, build, and run every test (lit, GoogleTest, pytest).
# GPU tests skip visibly (with the reason) where there is no GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ninja -C build -j"$(nproc)"
ctest --test-dir build --output-on-failure -j"$(nproc)" "$@"
# Then every fuzz target for ATTUNE_FUZZ_SECONDS (20) seconds from its committed seeds,
# after replaying fuzz/regressions (scripts/fuzz.sh; its own build in build-fuzz/). Only
# for the whole suite, not when ctest arguments pick part of it; ATTUNE_FUZZ_SECONDS=0
# skips it.
if [ $# -eq 0 ] && [ "${ATTUNE_FUZZ_SECONDS:-20}" != 0 ]; then
  bash scripts/fuzz.sh ci
fi
