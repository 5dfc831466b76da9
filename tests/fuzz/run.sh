#!/bin/sh
# Run each libFuzzer harness for N seconds from its seed corpus (tests/fuzz/corpus/NAME),
# working on a copy under build/fuzz so the repository stays clean. Prints executions and
# coverage per harness; fails on any crash, leak, timeout or sanitizer report (the input
# that triggered it is kept in build/fuzz/artifacts/ - add it to tests/fuzz/regressions/).
# Usage: tests/fuzz/run.sh SECONDS BINARY...
set -u
secs=$1
shift
mkdir -p build/fuzz/artifacts
status=0
for bin in "$@"; do
    name=$(basename "$bin" | sed 's/^fuzz_//')
    work=build/fuzz/corpus-$name
    mkdir -p "$work"
    log=build/fuzz/$name.log
    "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix=build/fuzz/artifacts/"$name"- "$work" "tests/fuzz/corpus/$name" >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | cut -d' ' -f2)
    if [ $rc -eq 0 ]; then
        echo "fuzz $name: ok, ${execs:-?} executions in ${secs} s, coverage ${cov:-?} edges, ${ft:-?} features"
    else
        echo "fuzz $name: FAILED (exit $rc); see $log and build/fuzz/artifacts/"
        grep -E "ERROR|SUMMARY|runtime error" "$log" | head -n 5
        status=1
    fi
done
exit $status
