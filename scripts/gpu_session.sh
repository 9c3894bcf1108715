#!/usr/bin/env bash
# On a GPU machine (no LLVM there), from the repository root, with .carry/ from
# scripts/gpu_prepare.sh: builds the runtime, runs the GPU tests (ctest -L gpu), the
# GPU checks of every example, and the benchmark against PyTorch. Results go to
# $OUT (the device tool's return folder) or bench/results/.
#   bash scripts/gpu_session.sh [checks|tests|bench|sanitize|all]   (default all)
# BENCH_ARGS overrides the benchmark's rows (default: head_dim 128 at 2k and 8k, about
# five minutes with FlexAttention's compiles; the full sweep takes about 20).
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
results=${OUT:-bench/results}
mkdir -p "$results"
status=0
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD/python
export ATTUNE_RUNTIME_LIB=$PWD/build-rt/runtime/libattune_runtime.so
export ATTUNE_CACHE_DIR=/tmp/attune-cache

nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader || true
cmake -S . -B build-rt -G Ninja -DATTUNE_RUNTIME_ONLY=ON -DCMAKE_BUILD_TYPE=Release \
  -DATTUNE_GTEST_SOURCE=$PWD/.carry/googletest -DPython3_EXECUTABLE="$(command -v python3)" >/dev/null &&
  ninja -C build-rt >/dev/null || { echo "runtime build failed"; exit 1; }

if [[ $what == all || $what == tests ]]; then
  mkdir -p build-rt/python/cache && cp -r .carry/cache/bundles build-rt/python/cache/
  # All of the runtime-only build's tests: the GPU ones and the rest, on this machine.
  ctest --test-dir build-rt --output-on-failure 2>&1 | tee "$results/gpu-ctest.log" || status=1
fi
if [[ $what == all || $what == checks ]]; then
  mkdir -p /tmp/gc && tar -C /tmp/gc -xJf .carry/gpu-checks.tar.xz
  python3 test/gpu/check.py /tmp/gc/gpu-checks --results "$results" || status=1
fi
if [[ $what == all || $what == bench ]]; then
  mkdir -p /tmp/bb && tar -C /tmp/bb -xJf .carry/bundles.tar.xz
  python3 bench/gpu_compare.py --bundles /tmp/bb/bundles --out "$results" \
    ${BENCH_ARGS:---seqs 2048,8192 --dims 128} || status=1
fi
if [[ $what == sanitize ]]; then
  # Out-of-bounds accesses and races on two patterns (slow: minutes).
  mkdir -p /tmp/gc && tar -C /tmp/gc -xJf .carry/gpu-checks.tar.xz
  for tool in memcheck racecheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 \
      python3 test/gpu/check.py /tmp/gc/gpu-checks --only 'causal,document,causal[ragged/ragged],document[ragged/paged]' 2>&1 |
      tail -40 | tee "$results/sanitize-$tool.log" || status=1
  done
fi
exit $status
