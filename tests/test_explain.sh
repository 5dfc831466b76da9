#!/bin/sh
# test_explain.sh: the numbers `qlora explain` prints, against values derived independently
# (IEEE rounding of 0.3457 by hand, bytes of 7e9 parameters, NF4 bit counts, the scale/4
# error of uniform rounding), and its figures as well-formed XML (xmllint).
set -u
. tests/lib.sh
"$Q" explain --out "$tmp/ex" --model tests/ref/tiny >"$tmp/out" 2>&1
check "explain runs" $?
has() { grep -qF -- "$1" "$tmp/out"; check "prints: $1" $?; }
# 0.3457 = 1.3828 x 2^-2: f32 keeps 24 significant bits -> 0.34569999575614929;
# f16 keeps 11 -> round(0.3457 * 2^12) / 2^12 = 1416/4096 = 0.345703125;
# bf16 keeps 8 -> round(0.3457 * 2^9) / 2^9 = 177/512 = 0.345703125
has "FP32  0 01111101 01100001111111110010111       0.345699995756"
has "FP16  0 01101 0110001000                       0.345703125            +3.125e-06"
has "BF16  0 01111101 0110001                       0.345703125            +3.125e-06"
has "FP16            65504"
# 7e9 x {4, 2, 1, 0.5} bytes / 2^30
has "FP32  26.08 GiB   FP16/BF16  13.04 GiB   INT8   6.52 GiB   INT4   3.26 GiB"
# NF4: 4 + 32/64 = 4.5 bits (32/4.5 = 7.11x); DQ: 4 + 8/64 + 32/(64*256) = 4.127 (7.75x)
has "4.500 bits/param, 7.11x smaller than FP32"
has "4.127 bits/param, 7.75x smaller than FP32"
# INT8 errors within 5% of scale/4 (uniform rounding error of a step s has mean s/4)
for kind in symmetric asymmetric; do
    line=$(grep -A 2 "^$kind" "$tmp/out" | grep "mean absolute error")
    err=$(echo "$line" | sed 's/.*mean absolute error \([0-9.]*\).*/\1/')
    pred=$(echo "$line" | sed 's/.*= \([0-9.]*\)).*/\1/')
    awk -v e="$err" -v p="$pred" 'BEGIN { d = (e - p) / p; if (d < 0) d = -d; exit !(d < 0.05) }'
    check "$kind INT8 error $err within 5% of scale/4 = $pred" $?
done
nf4=$(sed -n 's/^  NF4  mean abs error \([0-9.e-]*\).*/\1/p' "$tmp/out")
fp4=$(sed -n 's/^  FP4  mean abs error \([0-9.e-]*\).*/\1/p' "$tmp/out")
int4=$(sed -n 's/^  INT4 mean abs error \([0-9.e-]*\).*/\1/p' "$tmp/out")
awk -v a="$nf4" -v b="$fp4" -v c="$int4" 'BEGIN { exit !(a < b && a < c) }'
check "NF4 error ($nf4) below FP4 ($fp4) and INT4 ($int4) on normal weights" $?
# block-size table: error grows, bits shrink, from 32 to 4096
awk '/^ +[0-9]+ +[0-9.]+ +[0-9.e-]+ +[0-9.]+ +[0-9.e-]+$/ { if (n && ($3 <= e || $2 >= b)) bad = 1; e = $3; b = $2; n++ }
     END { exit !(n == 8 && !bad) }' "$tmp/out"
check "block sizes 32..4096: error rises and bits fall monotonically" $?
grep -q "^1      mlp.c_proj" "$tmp/out"; check "per-layer statistics of --model" $?
n=0
for f in "$tmp"/ex/*.svg; do
    xmllint --noout "$f" 2>/dev/null; check "$(basename "$f") is well-formed XML" $?
    n=$((n + 1))
done
[ "$n" -ge 5 ]; check "at least 5 figures ($n)" $?
grep -c '<img src=' "$tmp/ex/index.html" | grep -q '^5$'; check "index.html shows the 5 figures" $?
finish test_explain.sh
