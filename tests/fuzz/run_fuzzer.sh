#!/usr/bin/env bash
# run_fuzzer.sh FUZZER SEEDS SCRATCH SECONDS JUNIT [LIBFUZZER-FLAG...]: runs one
# libFuzzer target for SECONDS over its seeds (with the flags, e.g. -dict=FILE)
# and writes a one-case JUnit file with the number of executions, so the test
# total counts it.
set -uo pipefail
fuzzer=$1 seeds=$2 scratch=$3 seconds=$4 junit=$5
shift 5
name=$(basename "$fuzzer")
rm -rf "$scratch" && mkdir -p "$scratch"
log=$scratch.log
"$fuzzer" -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="$scratch/" "$@" "$scratch" "$seeds" >"$log" 2>&1
status=$?
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
tail -n 20 "$log"
if [[ $status -eq 0 ]]; then
  printf '<testsuite name="fuzz"><testcase classname="fuzz" name="%s (%s executions)"/></testsuite>\n' "$name" "${execs:-0}" >"$junit"
else
  printf '<testsuite name="fuzz"><testcase classname="fuzz" name="%s"><failure message="fuzzer exit %s"/></testcase></testsuite>\n' "$name" "$status" >"$junit"
  ls "$scratch"/crash-* "$scratch"/leak-* 2>/dev/null
fi
# libFuzzer exits 77 on a finding by default, which meson takes for "skipped".
[[ $status -eq 0 ]] || exit 1
