#!/bin/sh
# Run every test program given as an argument, then every tests/*.sh suite, and add up
# their "NAME: N passed, M failed[, S skipped]" lines. Ends with the plain line
# "N passed, M failed, S skipped" and exits non-zero if anything failed or a suite crashed.
# A skipped check is one that could not run on this machine; it never counts as passed.
# Environment: QLORA (path of the binary under test), BUILD, SANITIZE.
set -u
cd "$(dirname "$0")/.." || exit 2
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
if [ "${SANITIZE:-0}" = 1 ]; then
    export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=86"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
fi
total_pass=0
total_fail=0
total_skip=0
log=$(mktemp)
skiplog=$(mktemp)
for t in "$@" tests/test_*.sh; do
    [ "$t" = tests/run.sh ] && continue
    case "$t" in *.sh) cmd="sh $t" ;; *) cmd="$t" ;; esac
    name=$(basename "$t")
    start=$(date +%s)
    $cmd >"$log" 2>&1
    rc=$?
    line=$(grep -E '^[A-Za-z0-9_.-]+: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
    p=$(echo "$line" | sed -n 's/.*: \([0-9]*\) passed.*/\1/p')
    f=$(echo "$line" | sed -n 's/.* \([0-9]*\) failed.*/\1/p')
    grep -E '^skip' "$log" | sed "s/^/$name: /" >>"$skiplog"
    sk=$(echo "$line" | sed -n 's/.* \([0-9]*\) skipped.*/\1/p')
    [ -n "$sk" ] || sk=0
    [ -n "$p" ] || p=0
    [ -n "$f" ] || f=0
    if [ $rc -ne 0 ] && [ "$f" = 0 ]; then
        f=1  # crashed or exited non-zero without a failed count
        echo "$name: exited with status $rc"
    fi
    if [ "$f" != 0 ]; then
        grep -E 'FAIL|error|ERROR|Sanitizer|runtime error' "$log" | head -n 40
    fi
    echo "$name: $p passed, $f failed, $sk skipped ($(( $(date +%s) - start )) s)"
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    total_skip=$((total_skip + sk))
done
if [ "$total_skip" != 0 ]; then
    echo "skipped checks (they could not run here):"
    sed 's/^/  /' "$skiplog"
fi
rm -f "$log" "$skiplog"
echo "$total_pass passed, $total_fail failed, $total_skip skipped"
[ "$total_fail" = 0 ]
