#!/usr/bin/env bash
# On a GPU machine (no LLVM there), from the repository root, with .carry/ from
# scripts/gpu_prepare.sh: builds the runtime, runs the GPU tests (ctest -L gpu), the
# GPU checks of every example, and the benchmark against PyTorch. Results go to
# $OUT (the device tool's return folder) or bench/results/.
#   bash scripts/gpu_session.sh [checks|tests|bench|decode|sanitize|all]   (default all)
# BENCH_ARGS overrides the benchmark's rows (default: head_dim 128 at 2k and 8k, about
# five minutes with FlexAttention's compiles; the full sweep takes about 20).
# BENCH_DECODE_ARGS overrides the paged-decode benchmark's (bench/gpu_decode.py) rows
# (default: batch 1/16/64 at 4k and 32k plus batch 1 at 128k, q_len 1, capped at 240 s
# of rows; e.g. "--q-len 4 --mixed --rows 16:4096,64:32768" for speculative steps).
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
if [[ $what == all || $what == decode ]]; then
  # Paged-KV decoding (ragged q, paged k/v, per-sequence lengths) against SDPA and flex.
  [[ -d /tmp/bb/bundles/decode-paged-d128 ]] || { mkdir -p /tmp/bb && tar -C /tmp/bb -xJf .carry/bundles.tar.xz; }
  if [[ -d /tmp/bb/bundles/decode-paged-d128 ]]; then
    python3 bench/gpu_decode.py --bundle /tmp/bb/bundles/decode-paged-d128 --out "$results" \
      ${BENCH_DECODE_ARGS:---rows 1:4096,16:4096,64:4096,1:32768,16:32768,64:32768,1:131072 --time-budget 240 --row-timeout 180} ||
      status=1
  else
    echo "decode: no decode-paged-d128 bundle in .carry/bundles.tar.xz (run scripts/gpu_prepare.sh after pulling bench/specs/decode-paged-d128.json)"
    status=1
  fi
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
