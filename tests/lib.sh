# lib.sh: sourced by the shell test suites. Sets Q (the binary under test, $QLORA or
# ./qlora) and tmp (a folder removed on exit), and counts results:
#   check DESCRIPTION STATUS         passes when STATUS is 0
#   expect STATUS PHRASE CMD...      runs CMD; passes when it exits STATUS and prints one
#                                    line on stderr containing PHRASE
#   skip N REASON                    counts N checks as skipped (not passed), prints REASON
#   finish NAME                      prints "NAME: N passed, M failed, S skipped"; fails if M > 0
Q="${QLORA:-./qlora}"
pass=0
fail=0
skipped=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check() {
    if [ "$2" = 0 ]; then pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: $1"; fi
}

expect() {
    want=$1 phrase=$2
    shift 2
    "$@" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    lines=$(wc -l <"$tmp/err")
    if [ "$rc" = "$want" ] && [ "$lines" -eq 1 ] && grep -qF -- "$phrase" "$tmp/err"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        echo "FAIL: $* -> status $rc (want $want), $lines stderr lines, want '$phrase':"
        head -n 3 "$tmp/err"
    fi
}

skip() {
    skipped=$((skipped + $1))
    echo "skip ($1): $2"
}

finish() {
    echo "$1: $pass passed, $fail failed, $skipped skipped"
    [ "$fail" = 0 ]
}
