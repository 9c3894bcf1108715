#!/usr/bin/env bash
# The libFuzzer targets of fuzz/ (see fuzz/README.md).
#
#   bash scripts/fuzz.sh [ci]                  build, replay fuzz/regressions, then run every
#                                              target for ATTUNE_FUZZ_SECONDS (20) seconds from
#                                              the committed seeds (what scripts/test.sh runs)
#   bash scripts/fuzz.sh campaign [SECONDS] [TARGET...]
#                                              a longer run (default 900 s per target) into
#                                              build-fuzz/corpus/<target>, which persists
#   bash scripts/fuzz.sh replay                the regression inputs only
#   bash scripts/fuzz.sh build                 just build build-fuzz/
#
# build-fuzz/ is configured once with clang-22 (Debian's clang for LLVM 22: the fuzz
# code includes MLIR 22's headers) and -fsanitize=fuzzer-no-link,address,undefined for
# all the code; only the target `attune-fuzzers` is built (the targets, the dialect, the
# spec importer, the passes and the runtime: no code generators, tools or tests).
# A crash, sanitizer report, leak, timeout or broken invariant fails with the path of
# the saved input, and the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${ATTUNE_FUZZ_BUILD:-build-fuzz}
mode=${1:-ci}
[ $# -gt 0 ] && shift

TARGETS=(attn_ir spec_importer expr_parser rt_json rt_manifest rt_grid_expr rt_tuning_db)
declare -A DICT=([attn_ir]=attn_ir [spec_importer]=spec [expr_parser]=expr [rt_json]=manifest
                 [rt_manifest]=manifest [rt_grid_expr]=grid_expr [rt_tuning_db]=manifest)
declare -A MAXLEN=([attn_ir]=16384 [spec_importer]=8192 [expr_parser]=512 [rt_json]=16384
                   [rt_manifest]=16384 [rt_grid_expr]=256 [rt_tuning_db]=4096)

# libFuzzer reads its own flags; these reach the sanitizers. UBSan never recovers (the
# code is built with -fno-sanitize-recover=undefined), so a report is a crash.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:strict_string_checks=1:allow_user_poisoning=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export LLVM_SYMBOLIZER_PATH=/usr/lib/llvm-22/bin/llvm-symbolizer
export ASAN_SYMBOLIZER_PATH=$LLVM_SYMBOLIZER_PATH

build() {
  if [ ! -x /usr/lib/llvm-22/bin/clang++ ] ||
     [ ! -f /usr/lib/llvm-22/lib/clang/22/lib/linux/libclang_rt.fuzzer-x86_64.a ]; then
    bash scripts/setup.sh
  fi
  if [ ! -f "$BUILD/build.ninja" ]; then
    local launcher=()
    if command -v ccache >/dev/null; then
      launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
    fi
    local flags="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
    flags+=" -fno-omit-frame-pointer -gline-tables-only"
    cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DATTUNE_FUZZ=ON \
      -DCMAKE_C_COMPILER=/usr/lib/llvm-22/bin/clang -DCMAKE_CXX_COMPILER=/usr/lib/llvm-22/bin/clang++ \
      -DCMAKE_C_FLAGS="$flags" -DCMAKE_CXX_FLAGS="$flags" \
      -DCMAKE_C_FLAGS_RELEASE="-O1 -DNDEBUG" -DCMAKE_CXX_FLAGS_RELEASE="-O1 -DNDEBUG" \
      -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir -DLLVM_DIR=/usr/lib/llvm-22/lib/cmake/llvm \
      "${launcher[@]}" >/dev/null
  fi
  ninja -C "$BUILD" -j"$(nproc)" attune-fuzzers
}

bin() { echo "$BUILD/fuzz/fuzz_$1"; }

# fuzz/regressions/OPEN lists reproducers of crashes not fixed yet ("<target>/<file>
# <what>"): they are run and reported, but do not fail the run; once one stops
# crashing, the run says so, and the line is to be removed.
is_open() {
  [ -f fuzz/regressions/OPEN ] && grep -q "^$1/$2\b" fuzz/regressions/OPEN
}

replay() {
  local failed=0 t f out
  for t in "${TARGETS[@]}"; do
    [ -d "fuzz/regressions/$t" ] || continue
    for f in "fuzz/regressions/$t"/*; do
      [ -f "$f" ] || continue
      out=$("$(bin "$t")" -timeout=30 -rss_limit_mb=2048 "$f" 2>&1) && rc=0 || rc=$?
      if is_open "$t" "$(basename "$f")"; then
        if [ $rc -eq 0 ]; then
          echo "fuzz: $f no longer crashes: remove its line from fuzz/regressions/OPEN"
        else
          echo "fuzz: $f still crashes (known, listed in fuzz/regressions/OPEN)"
        fi
      elif [ $rc -ne 0 ]; then
        echo "$out" | tail -40
        echo "fuzz: REGRESSION: $t crashes on $f"
        echo "fuzz:   reproduce: $(bin "$t") $f"
        failed=1
      fi
    done
  done
  replay_valgrind || failed=1
  return $failed
}

# The IR reproducers once more under valgrind, through the plain (uninstrumented)
# attn-opt of build/: the parser's memory errors happen inside libMLIR, which ASan
# cannot see (it is not instrumented), while valgrind checks every access.
replay_valgrind() {
  local opt=${ATTUNE_ATTN_OPT:-build/tools/attn-opt/attn-opt} failed=0 f rc
  if ! command -v valgrind >/dev/null || [ ! -x "$opt" ]; then
    echo "fuzz: valgrind replay skipped (needs valgrind and $opt)"
    return 0
  fi
  for f in fuzz/regressions/attn_ir/*; do
    [ -f "$f" ] || continue
    is_open attn_ir "$(basename "$f")" && continue
    rc=0
    valgrind -q --error-exitcode=99 "$opt" "$f" >"$BUILD/valgrind.log" 2>&1 || rc=$?
    if [ $rc -eq 99 ] || grep -q "Invalid \(read\|write\|free\)" "$BUILD/valgrind.log"; then
      grep -A12 -m2 "Invalid" "$BUILD/valgrind.log"
      echo "fuzz: REGRESSION: memory error under valgrind: $opt $f"
      failed=1
    fi
  done
  [ $failed -eq 0 ] && echo "fuzz: valgrind replay of fuzz/regressions/attn_ir: clean"
  return $failed
}

# run TARGET SECONDS CORPUS_DIR... : one libFuzzer run; prints a summary line.
passed=0 failed=0
run() {
  local t=$1 secs=$2; shift 2
  local art="$BUILD/artifacts/$t" log="$BUILD/logs/$t.log"
  rm -rf "$art"
  mkdir -p "$art" "$BUILD/logs"
  local rc=0
  "$(bin "$t")" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len="${MAXLEN[$t]}" -dict="fuzz/dict/${DICT[$t]}.dict" \
    -artifact_prefix="$art/" -print_final_stats=1 ${EXTRA_FLAGS:-} "$@" >"$log" 2>&1 || rc=$?
  local execs cov ft corp
  # The last status line: "#<execs> ... cov: C ft: F corp: N[/size]" (the fork mode of
  # a campaign writes "#<execs>: cov: ...", without the size).
  read -r execs cov ft corp < <(grep -E '^#[0-9]+' "$log" | tail -1 |
    sed -E 's/^#([0-9]+).*cov: ([0-9]+).*ft: ([0-9]+).*corp: ([0-9]+(\/[0-9a-zA-Z]+)?).*/\1 \2 \3 \4/') || true
  local found
  found=$(find "$art" -type f | wc -l)
  if [ $rc -eq 0 ] && [ "$found" -eq 0 ]; then
    printf 'fuzz: %-14s ok    %8s execs in %ss  cov %s  ft %s  corpus %s\n' \
      "$t" "${execs:-?}" "$secs" "${cov:-?}" "${ft:-?}" "${corp:-?}"
    passed=$((passed + 1))
  else
    grep -E -A60 '^==[0-9]+==|fuzz invariant broken|runtime error:|ERROR: libFuzzer' "$log" | head -80
    echo "fuzz: FAILED: $t (exit $rc, $found saved inputs); full log: $log"
    local unit
    for unit in $(sed -n "s/.*Test unit written to \(.*\)$/\1/p" "$log"; find "$art" -type f); do
      echo "fuzz:   reproducer: $unit"
      echo "fuzz:   reproduce: $(bin "$t") $unit"
    done | sort -u
    failed=$((failed + 1))
  fi
}

case "$mode" in
  build)
    build
    ;;
  replay)
    build
    replay
    ;;
  ci)
    secs=${ATTUNE_FUZZ_SECONDS:-20}
    build
    replay_rc=0
    replay || replay_rc=1
    for t in "${TARGETS[@]}"; do
      # New inputs go to a scratch directory (the first one); the seeds stay as committed.
      scratch="$BUILD/ci-corpus/$t"
      rm -rf "$scratch" && mkdir -p "$scratch"
      EXTRA_FLAGS="-seed=1" run "$t" "$secs" "$scratch" "fuzz/corpus/$t"
    done
    [ $replay_rc -eq 0 ] || failed=$((failed + 1))
    echo "fuzz: $passed passed, $failed failed"
    [ $failed -eq 0 ]
    ;;
  campaign)
    secs=900
    if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then secs=$1; shift; fi
    [ $# -gt 0 ] && TARGETS=("$@")
    build
    for t in "${TARGETS[@]}"; do
      corpus="$BUILD/corpus/$t"
      mkdir -p "$corpus"
      # Fork mode with crashes ignored: a campaign goes on past the first finding and
      # leaves every distinct one under build-fuzz/artifacts/<target>/.
      EXTRA_FLAGS="-use_value_profile=1 -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 ${ATTUNE_FUZZ_FLAGS:-}" run "$t" "$secs" "$corpus" "fuzz/corpus/$t"
      echo "fuzz:   corpus $corpus: $(find "$corpus" -type f | wc -l) files, $(du -sh "$corpus" | cut -f1)"
    done
    echo "fuzz: $passed passed, $failed failed"
    [ $failed -eq 0 ]
    ;;
  *)
    echo "usage: bash scripts/fuzz.sh [ci | campaign [SECONDS] [TARGET...] | replay | build]" >&2
    exit 2
    ;;
esac
