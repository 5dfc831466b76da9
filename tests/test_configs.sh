#!/bin/sh
# test_configs.sh: every shipped job file validates; configs/README.md documents every key
# the parser knows; --check's output is itself a valid job that reads back the same.
set -u
. tests/lib.sh
for f in configs/*.yaml; do
    if "$Q" train "$f" --check >"$tmp/out" 2>"$tmp/err"; then pass=$((pass + 1)); else
        fail=$((fail + 1)); echo "FAIL: $f: $(cat "$tmp/err")"; fi
    cp "$tmp/out" "$tmp/round.yaml"
    if "$Q" train "$tmp/round.yaml" --check >"$tmp/out2" 2>&1 && cmp -s "$tmp/out" "$tmp/out2"; then
        pass=$((pass + 1)); else fail=$((fail + 1)); echo "FAIL: --check output of $f does not read back"; fi
done
"$Q" train --list-keys | sed -n 's/^| `\([a-z_0-9]*\)`.*/\1/p' >"$tmp/keys"
n=$(wc -l <"$tmp/keys")
[ "$n" -ge 35 ] && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: only $n keys listed"; }
while read -r k; do
    grep -q "| \`$k\` |" configs/README.md && pass=$((pass + 1)) || { fail=$((fail + 1)); echo "FAIL: configs/README.md lacks key $k"; }
done <"$tmp/keys"
finish test_configs.sh
