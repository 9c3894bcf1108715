#!/usr/bin/env bash
# The whole test suite under AddressSanitizer + UndefinedBehaviorSanitizer, one command:
#   bash scripts/sanitize.sh [ctest arguments, e.g. -R lit]
# Configures build-asan/ (g++, -fsanitize=address,undefined, -O1, line tables), builds
# everything and runs ctest. Any sanitizer report aborts the process that made it (UBSan
# does not recover; abort_on_error turns ASan's exit code into SIGABRT so that lit's
# `not` and the tests' exit-code checks cannot mistake a report for an expected error).
#
# g++ rather than clang: its libasan is a shared library in the system path, so the
# instrumented libattune_runtime.so loads into Debian's python3 (LD_PRELOAD below) and
# the attnc processes that python starts use the same runtime. libMLIR/libLLVM are not
# instrumented: their own memory errors show only where they reach malloc/free.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${ATTUNE_ASAN_BUILD:-build-asan}

bash scripts/setup.sh

if [ ! -f "$BUILD/build.ninja" ]; then
  launcher=()
  if command -v ccache >/dev/null; then
    launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
  fi
  flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g1"
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=gcc -DCMAKE_CXX_COMPILER=g++ \
    -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
    -DCMAKE_C_FLAGS_RELEASE="-O1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
    -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
    -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir -DLLVM_DIR=/usr/lib/llvm-22/lib/cmake/llvm \
    "${launcher[@]}"
fi
ninja -C "$BUILD" -j"$(nproc)"

# allow_user_poisoning=0: LLVM's BumpPtrAllocator poisons and unpoisons its slabs only
# where it is compiled with ASan (our objects, through LLVM's headers), not inside the
# uninstrumented libLLVM/libMLIR, so memory MLIR hands out can read as poisoned.
# lit passes these variables through to the tools it runs; pytest and ctest inherit them.
export ASAN_OPTIONS="abort_on_error=1:allow_user_poisoning=0:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
export LLVM_SYMBOLIZER_PATH=/usr/lib/llvm-22/bin/llvm-symbolizer
export ASAN_SYMBOLIZER_PATH=$LLVM_SYMBOLIZER_PATH

# The Python package loads the instrumented runtime into an uninstrumented python3:
# the sanitizer runtime has to be preloaded, and python's own allocations (numpy,
# torch) are left out of the leak check.
python_tests=(-R '^python-')
rc=0
ctest --test-dir "$BUILD" --output-on-failure -j"$(nproc)" -E '^python-' "$@" || rc=$?
preload="$(g++ -print-file-name=libasan.so):$(g++ -print-file-name=libubsan.so)"
if [ $# -eq 0 ]; then
  LD_PRELOAD="$preload" ASAN_OPTIONS="$ASAN_OPTIONS:detect_leaks=0" \
    ctest --test-dir "$BUILD" --output-on-failure "${python_tests[@]}" || rc=$?
fi
exit $rc
