#!/usr/bin/env bash
# Here (with attnc): everything a GPU session needs, under .carry/ (ignored by git):
#   .carry/gpu-checks.tar.xz  every example's bundle, the check cases and the reference
#                             answers (test/gpu/prepare.py), packed to fit the carry limit
#   .carry/bundles.tar.xz     the benchmark specs' bundles (bench/prepare_bundles.sh),
#                             packed: PTX and cubins shrink 15x (21 MiB -> 1.4 MiB on
#                             2026-12-02), which keeps the kit well under the limit
#   .carry/cache/bundles/     the causal example's bundle under its cache key, for the
#                             python-gpu tests (the GPU machines have no attnc)
#   .carry/googletest/        GoogleTest's sources (no package there) for the runtime's
#                             C++ tests, runtime-gpu among them
# Then, on the GPU machine: bash scripts/gpu_session.sh (carry .carry).
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=${ARCH:-sm_90a}
rm -rf .carry/gpu-checks .carry/gpu-checks.tar.xz .carry/bundles .carry/bundles.tar.xz \
  .carry/cache .carry/googletest
/usr/bin/python3 test/gpu/prepare.py --out .carry/gpu-checks --arch "$ARCH"
tar -C .carry -cJf .carry/gpu-checks.tar.xz gpu-checks
rm -rf .carry/gpu-checks
ARCH=$ARCH bash bench/prepare_bundles.sh .carry/bundles
tar -C .carry -cJf .carry/bundles.tar.xz bundles
rm -rf .carry/bundles
ATTUNE_CACHE_DIR=.carry/cache build/tools/attnc/attnc compile specs/examples/causal.json --cache
mkdir -p .carry/googletest
cp -r /usr/src/googletest/CMakeLists.txt /usr/src/googletest/googletest .carry/googletest/
du -sh .carry/*
# A call carries at most 64 MiB, the working tree (about 2 MiB) included.
kit=$(du -sb .carry | cut -f1)
if [ "$kit" -gt $((60 * 1024 * 1024)) ]; then
  echo "gpu_prepare: .carry holds $((kit / 1048576)) MiB: over the 60 MiB that leave room for the tree; split it over two calls" >&2
  exit 1
fi
