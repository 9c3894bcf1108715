#!/usr/bin/env bash
# Compiles the benchmark specs (bench/specs/*.json) into kernel bundles under DIR
# (default .carry/bundles, ignored by git) so that they can be carried to a GPU
# machine, where there is no LLVM. Usage: [ARCH=sm_90a] bash bench/prepare_bundles.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.carry/bundles}
mkdir -p "$out"
for spec in bench/specs/*.json; do
  name=$(basename "$spec" .json)
  # The sm_90a wgmma variants join the defaults here, for the tuner and the table to
  # weigh, until a GPU session has verified them and they join the defaults everywhere.
  build/tools/attnc/attnc compile "$spec" -o "$out/$name" --arch "${ARCH:-sm_80,sm_90a}" \
    --configs "${CONFIGS:-default,128x64w,128x128w}"
done
