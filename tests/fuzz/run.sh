#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -DPC_FUZZ=ON) into build-fuzz/ and
# runs each for PC_FUZZ_SECONDS (default 15) from its seed corpus
# tests/fuzz/corpus/<target>/ (regression inputs of fixed crashes live there
# too, so every run replays them first). New inputs go to
# build-fuzz/corpus/<target>/, never into the committed seeds; a crash, leak
# or sanitizer report fails the target, and its input is kept as a
# regression input: copied into tests/fuzz/corpus/<target>/ (commit it with
# the fix; every later run replays it first). Prints one line per target and
# "N passed, N failed".
#   tests/fuzz/run.sh [target…]       (default: every tests/fuzz/fuzz_*.c)
#   PC_FUZZ_SECONDS=600 tests/fuzz/run.sh fuzz_http    a longer run
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/scripts/lib.sh"
seconds=${PC_FUZZ_SECONDS:-15}
build="$root/build-fuzz"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$root"/tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi
passed=0 failed=0
if ! pc_build build-fuzz RelWithDebInfo -DCMAKE_C_COMPILER=clang -DPC_FUZZ=ON; then
  echo "fuzz targets did not build"
  echo "0 passed, ${#targets[@]} failed"
  exit 1
fi
for t in "${targets[@]}"; do
  work="$build/corpus/$t"
  mkdir -p "$work"
  log="$build/$t.log"
  # Leaks are checked (LeakSanitizer) and any sanitizer report is fatal.
  # Inputs up to 20,000 bytes: past the HTTP target's 16 KiB body limit.
  rm -f "$build/crash-$t-"* # libFuzzer's artifacts: this prefix, then crash-/leak-/timeout-/oom-
  if ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1" \
    "$build/tests/fuzz/$t" -max_total_time="$seconds" -max_len=20000 -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$build/crash-$t-" -print_final_stats=1 "$work" "$root/tests/fuzz/corpus/$t" \
    >"$log" 2>&1; then
    runs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -n 1)
    echo "ok   $t: ${runs:-?} inputs in ${seconds} s, no crash"
    passed=$((passed + 1))
  else
    kept=""
    for a in "$build/crash-$t-"*; do
      [ -f "$a" ] || continue
      cp "$a" "$root/tests/fuzz/corpus/$t/regression-$(sha1sum "$a" | cut -c1-16)"
      kept="$kept $(basename "$a")"
    done
    echo "FAIL $t: see $log; kept as regression input(s) in tests/fuzz/corpus/$t/:${kept:- none written}"
    grep -E "ERROR|SUMMARY|panic|Assertion" "$log" | head -n 5
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
