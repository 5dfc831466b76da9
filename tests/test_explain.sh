#!/bin/sh
# test_explain.sh: `qlora explain`, the lesson. Run twice, with the defaults (A) and with other
# inputs (B: --blocksize 32 --number 1.5 --params 13e9), each with a short mini-run:
#   - the page is valid (xmllint: well-formed XML, and HTML with nothing but the HTML5, SVG and
#     MathML tag names libxml2's HTML 4 parser does not know), self-contained (no scripts, no
#     links out), has a table of contents and all nine sections in order, each with prose, a
#     MathML formula, a table and an inline SVG figure with a title, an aria-label and a
#     caption; no <pre> line is wider than 100 characters; the terminal form has the same sections;
#   - its numbers are the code's: against values derived here by hand or by independent
#     arithmetic from config.json (IEEE rounding, bytes of N parameters, NF4 bits per block
#     size, the bytes of a quantized matrix, LoRA counts, the trainer's quantization constants,
#     double quantization's saving at 65B), and B's numbers move with B's inputs;
#   - the lesson's own measurements hold (quantized INT8 done right within half a step, the
#     truncated zero-point worse, NF4 below FP4 and INT4, B = 0 leaves the loss unchanged, the
#     frozen weights' checksum survives a step, checkpointing gives the same gradients, the
#     memory account within 5% of the prediction);
#   - in a real browser (headless Chromium, where installed; CI installs it): at 1280 and at 400
#     px wide the page does not scroll sideways, and both screenshots are taken.
set -u
. tests/lib.sh
# Threads that wait on a barrier sleep instead of spinning: on a shared, busy machine a
# spinning OpenMP thread can hold a core its partner needs (a run then takes minutes, not seconds).
export OMP_WAIT_POLICY=passive

"$Q" explain --out "$tmp/a" --steps 3 >"$tmp/a.txt" 2>"$tmp/a.err"
check "explain runs with the defaults (A)" $?
"$Q" explain --out "$tmp/b" --steps 2 --blocksize 32 --number 1.5 --params 13e9 >"$tmp/b.txt" 2>"$tmp/b.err"
check "explain runs with --blocksize 32 --number 1.5 --params 13e9 (B)" $?
A="$tmp/a/index.html" B="$tmp/b/index.html"

# ---- the page ------------------------------------------------------------------------------------
# html_ok PAGE: xmllint --html reports nothing but unknown tags of HTML5, SVG and MathML
# (libxml2's HTML parser knows HTML 4 only), and xmllint parses the page as XML.
KNOWN='section|nav|figure|figcaption|svg|rect|line|polyline|circle|text|math|mi|mn|mo|mfrac|msup|msub|mrow|mtext|mspace|mover|munder|mtable|mtr|mtd|msqrt'
html_ok() {
    xmllint --noout "$1" 2>/dev/null || return 1
    xmllint --html --noout "$1" 2>&1 | grep -a -E 'parser (error|warning)|namespace error' |
        grep -a -v -E "Tag ($KNOWN) invalid\$" | grep -aq . && return 1
    return 0
}
html_ok "$A"; check "page A: valid (xmllint, XML and HTML)" $?
html_ok "$B"; check "page B: valid (xmllint, XML and HTML)" $?
sed 's|</table>|</tabel>|' "$A" >"$tmp/broken.html"
html_ok "$tmp/broken.html"; [ $? -ne 0 ]; check "the validity check fails on a page with a misspelt end tag" $?

# sec PAGE N: section N of the page
sec() { sed -n "/<section id=\"s$2\">/,/<\/section>/p" "$1"; }
n=$(grep -o '<section id="s[0-9]*">' "$A" | tr -d '\n')
[ "$n" = '<section id="s1"><section id="s2"><section id="s3"><section id="s4"><section id="s5"><section id="s6"><section id="s7"><section id="s8"><section id="s9">' ]
check "nine sections, in order" $?
k=1
for topic in "How a number is stored" "memory" "INT8" "NF4" "real model" "LoRA" "training step" "mini-run" "paper"; do
    sec "$A" $k | grep -m 1 '<h2>' | grep -q "$topic"; check "section $k is about: $topic" $?
    s=$(sec "$A" $k)
    p=$(echo "$s" | grep -c '<p>') f=$(echo "$s" | grep -c '<svg role="img" aria-label="[^"]')
    t=$(echo "$s" | grep -c '<title>') c=$(echo "$s" | grep -c '<figcaption>')
    m=$(echo "$s" | grep -c '<math ') tb=$(echo "$s" | grep -c '<table>')
    [ "$p" -ge 1 ] && [ "$f" -ge 1 ] && [ "$t" -ge "$f" ] && [ "$c" -ge "$f" ] && [ "$m" -ge 1 ] && [ "$tb" -ge 1 ]
    check "section $k: $p paragraphs, $m formulas, $tb tables, $f figures with title and caption" $?
    k=$((k + 1))
done
[ "$(grep -c '<li><a href="#s[1-9]">' "$A")" = 9 ] && grep -q '<nav aria-label="Contents">' "$A"
check "a table of contents with the nine sections" $?
grep -q '<meta name="viewport" content="width=device-width' "$A" && grep -q '<style>' "$A"
check "a viewport for phones and an inline stylesheet" $?
! grep -q -i -E '<script|<link|@import|(src|href)="(https?:)?//' "$A"; check "nothing from elsewhere: no scripts, links or imports" $?

# pre_width PAGE: the widest <pre> line, in characters, entities decoded
pre_width() {
    sed -n '/<pre>/,/<\/pre>/p' "$1" | sed 's/<[^>]*>//g; s/&lt;/</g; s/&gt;/>/g; s/&quot;/"/g; s/&amp;/\&/g' |
        LC_ALL=C.UTF-8 wc -L
}
[ "$(grep -c '<pre>' "$A")" -ge 1 ]; check "the page has preformatted lines" $?
w=$(pre_width "$A"); [ "$w" -le 100 ]; check "no <pre> line wider than 100 characters (widest $w)" $?
printf '<pre>%0101d</pre>\n' 0 >"$tmp/wide.html"
[ "$(pre_width "$tmp/wide.html")" -gt 100 ]; check "the width check sees a 101-character line" $?

# the terminal form has the same sections, titled alike
sed -n 's/^== \([0-9]\. .*\) ==$/\1/p' "$tmp/a.txt" >"$tmp/t1"
sed -n 's/^<h2>\([0-9]\. .*\)<\/h2>$/\1/p' "$A" | sed 's/&amp;/\&/g; s/<[^>]*>//g' >"$tmp/t2"
[ "$(wc -l <"$tmp/t1")" = 9 ] && cmp -s "$tmp/t1" "$tmp/t2"; check "the terminal form has the same nine sections" $?

# ---- numbers, against hand and independent arithmetic ---------------------------------------------
# cells PAGE START: the first table row of PAGE that starts with START, cells joined by '|'
cells() {
    grep -F -- "$2" "$1" | head -n 1 | sed 's|</t[dh]><t[dh][^>]*>|\||g; s/<[^>]*>//g; s/&amp;/\&/g'
}
row_is() {  # row_is PAGE START WANT DESCRIPTION
    got=$(cells "$1" "$2")
    [ "$got" = "$3" ]; check "$4 ($got)" $?
}
has() { grep -qE -- "$2" "$1"; check "$3" $?; }
hasF() { grep -qF -- "$2" "$1"; check "$3" $?; }
# 0.3457 = 1.3828 x 2^-2: FP16 keeps 11 significant bits -> 1416/4096 = 0.345703125, BF16 8 ->
# 177/512 = 0.345703125, both 3.125e-06 above; FP32 keeps 24 -> 0.345699995756..., 4.244e-09 below
row_is "$A" '<tr><td>FP32</td><td><code>' 'FP32|0|01111101 (2^-2)|01100001111111110010111|0.345699995756|-4.244e-09' \
    "A: 0.3457 in FP32"
row_is "$A" '<tr><td>FP16</td><td><code>' 'FP16|0|01101 (2^-2)|0110001000|0.345703125|+3.125e-06' "A: 0.3457 in FP16"
row_is "$A" '<tr><td>BF16</td><td><code>' 'BF16|0|01111101 (2^-2)|0110001|0.345703125|+3.125e-06' "A: 0.3457 in BF16"
row_is "$B" '<tr><td>FP16</td><td><code>' 'FP16|0|01111 (2^0)|1000000000|1.5|+0.000e+00' "B: 1.5 = 1.1b x 2^0, exact"
cells "$A" '<tr><td>FP16</td><td class="r">' | grep -q '^FP16|5|10|65504|'; check "FP16's largest is 65504" $?
# N parameters x bits / 8, in GB and GiB
for run in A:7e9 B:13e9; do
    eval page=\$${run%%:*}
    n=${run##*:}
    for fmt in FP32:32 INT8:8 INT4:4; do
        want=$(awk -v f="${fmt%%:*}" -v n="$n" -v b="${fmt##*:}" \
            'BEGIN { printf "%s|%.3f|%.2f|%.2f", f, b, n * b / 8 / 1e9, n * b / 8 / 2^30 }')
        row_is "$page" "<tr><td>${fmt%%:*}</td><td class=\"r\">${fmt##*:}.000" "$want" "${run%%:*}: $n parameters in ${fmt%%:*}"
    done
done
# NF4 bits: 4 + 32/b, with double quantization 4 + 8/b + 32/(256 b)
for run in a:64 b:32; do
    bs=${run##*:}
    want=$(awk -v b="$bs" 'BEGIN { printf "4 + 32/%d = %.3f bits   ->   4 + 8/%d + 32/(%d × 256) = %.3f bits", b, 4 + 32 / b, b, b, 4 + 8 / b + 32 / (b * 256) }')
    hasF "$tmp/${run%%:*}.txt" "$want" "${run%%:*}: double quantization at block size $bs: $want"
    dq=$(awk -v b="$bs" 'BEGIN { printf "%.3f", 4 + 8 / b + 32 / (b * 256) }')
    sec "$tmp/${run%%:*}/index.html" 4 | grep -q "<mn>$dq</mn></math>"; check "${run%%:*}: the page's formula ends in $dq" $?
done
# the shapes, from config.json
C=$(sed -n 's/.*"n_embd":[^0-9]*\([0-9]*\).*/\1/p' data/base-model/config.json)
L=$(sed -n 's/.*"n_layer":[^0-9]*\([0-9]*\).*/\1/p' data/base-model/config.json)
# NF4 + double quant bytes of a matrix of n weights in blocks of b: codes n/2, one byte per block,
# 4 per 256 blocks, 4 for the mean
nf4_bytes() { awk -v n="$1" -v b="$2" 'BEGIN { k = n / b; m = int((k + 255) / 256); print n / 2 + k + 4 * m + 4 }'; }
for run in A:64 B:32; do
    eval page=\$${run%%:*}
    bs=${run##*:}
    kib=$(awk -v x="$(nf4_bytes $((3 * C * C)) "$bs")" 'BEGIN { printf "%.2f KiB", x / 1024 }')
    cells "$page" '<tr><td>0</td><td><code>attn.c_attn</code>' | cut -d '|' -f 3,5 | grep -qx "\[$((3 * C)), $C\]|$kib"
    check "${run%%:*}: layer 0's c_attn ([$((3 * C)), $C]) takes $kib in blocks of $bs" $?
    consts=0
    for shape in $((3 * C * C)) $((C * C)) $((4 * C * C)) $((4 * C * C)); do
        consts=$((consts + $(nf4_bytes "$shape" "$bs") - shape / 2))
    done
    consts=$((consts * L))
    cells "$page" '<tr><td>quant constants</td>' | cut -d '|' -f 2 | grep -qx "$consts"
    check "${run%%:*}: the trainer allocated $consts bytes of quantization constants" $?
done
# LoRA r = 16 on the four linears: r L ((C + 3C) + (C + C) + (C + 4C) + (4C + C)) = 16 r L C
cells "$A" '<tr><td class="r">16</td><td class="r">' | cut -d '|' -f 2 | grep -qx "$((16 * 16 * L * C))"
check "LoRA r = 16 on every linear: $((16 * 16 * L * C)) parameters" $?
# double quantization's saving on LLaMA-65B's linears (80 x (4 d^2 + 3 d f), d 8192, f 22016)
gb=$(awk 'BEGIN { n = 80 * (4 * 8192 * 8192 + 3 * 8192 * 22016); printf "%.2f GB", (32 / 64 - 8 / 64 - 32 / (64 * 256)) * n / 8 / 1e9 }')
has "$tmp/a.txt" "= 0\.3730 bits; .* = $gb" "double quantization saves 0.373 bits, $gb at 65B"
has "$tmp/a.txt" "fitting: qlora nf4\+dq" "65B: QLoRA with double quantization fits 48 GiB"
cells "$A" '<tr><td>steps</td>' | grep -qE '^steps\|3 \(the job file says [0-9]+\)$'; check "A: the mini-run took --steps 3" $?
cells "$B" '<tr><td>steps</td>' | grep -qE '^steps\|2 \(the job file says [0-9]+\)$'; check "B: the mini-run took --steps 2" $?
# B differs from A wherever its inputs reach: sections 1-5 and 8
for k in 1 2 3 4 5 8; do
    sec "$A" $k | sed 's/<[^>]*>/ /g' | grep -oE '[0-9]+\.[0-9]+' >"$tmp/na"
    sec "$B" $k | sed 's/<[^>]*>/ /g' | grep -oE '[0-9]+\.[0-9]+' >"$tmp/nb"
    ! cmp -s "$tmp/na" "$tmp/nb"; check "section $k's numbers change with B's inputs" $?
done

# ---- the lesson's own measurements ---------------------------------------------------------------
# INT8 rows: scheme|code|mean|max|max steps|clamped|wrapped
r=$(cells "$A" '<tr><td>zero-point, rounded, clamped (right)') t=$(cells "$A" '<tr><td>zero-point, truncated, clamped')
w=$(cells "$A" '<tr><td>zero-point, truncated, not clamped') s=$(cells "$A" '<tr><td>absmax (symmetric)')
echo "$r" | awk -F '|' '{ exit !(NF == 7 && $5 <= 0.5005 && $7 == 0) }'; check "INT8 done right: within half a step ($r)" $?
echo "$t" | awk -F '|' '{ exit !(NF == 7 && $5 > 0.5 && $6 > 0) }'; check "truncated zero-point: more than half a step off ($t)" $?
echo "$w" | awk -F '|' '{ exit !(NF == 7 && $7 > 0 && $5 > 1) }'; check "truncated, not clamped: values wrap around ($w)" $?
m1=$(echo "$r" | cut -d '|' -f 3) m2=$(echo "$s" | cut -d '|' -f 3)
awk -v a="$m1" -v b="$m2" 'BEGIN { exit !(a != "" && a < b) }'; check "zero-point beats absmax on lopsided values ($m1 < $m2)" $?
agree=$(sed -n 's/.*they agree to \([0-9.e+-]*\).*/\1/p' "$tmp/a.txt")
awk -v x="$agree" 'BEGIN { exit !(x != "" && x < 1e-6) }'; check "NF4 levels from quantiles match quant.c's table ($agree)" $?
# block size|bits|NF4 error|bits with DQ|NF4 + DQ|FP4 + DQ|INT4, from 32 to 4096
sec "$A" 4 | grep '^<tr><td class="r">[0-9]*</td><td class="r">[0-9.]*</td><td class="r">[0-9.]*e-[0-9]*</td>' |
    sed 's|</t[dh]><t[dh][^>]*>|\||g; s/<[^>]*>//g' >"$tmp/blocks"
awk -F '|' '{ if (n && ($3 <= e || $2 >= b)) bad = 1; e = $3; b = $2; n++ } END { exit !(n == 8 && !bad) }' "$tmp/blocks"
check "block sizes 32..4096: NF4's error rises and its bits fall" $?
nf=$(cells "$A" '<tr><td>NF4 + double quant</td>' | cut -d '|' -f 3)
fp=$(cells "$A" '<tr><td>FP4 + double quant</td>' | cut -d '|' -f 3)
i4=$(cells "$A" '<tr><td>INT4, fp32 absmax</td>' | cut -d '|' -f 3)
awk -v a="$nf" -v b="$fp" -v c="$i4" 'BEGIN { exit !(a != "" && a < b && a < c) }'; check "NF4 ($nf) below FP4 ($fp) and INT4 ($i4)" $?
has "$tmp/a.txt" "with the fresh one \(difference 0\)" "B = 0: the fresh adapter leaves the loss unchanged"
b1=$(cells "$A" '<tr><td>checksum of the frozen weights, before' | cut -d '|' -f 2)
b2=$(cells "$A" '<tr><td>checksum of the frozen weights, after' | cut -d '|' -f 2)
[ -n "$b1" ] && [ "$b1" = "$b2" ]; check "the frozen weights' checksum survives the step ($b1)" $?
row_is "$A" '<tr><td>norm of all dA, after clipping' 'norm of all dA, after clipping|0' "first step: every dA is zero"
cells "$A" '<tr><td>gradient checkpointing</td>' | grep -q '|yes, bit for bit$'; check "checkpointing gives the same gradients" $?
pct=$(sec "$A" 8 | grep -F '<tr><td>total</td>' | sed 's/.*(\([-+0-9.]*\)%).*/\1/')
awk -v p="$pct" 'BEGIN { if (p < 0) p = -p; exit !(p != "" && p < 5) }'; check "memory account within 5% of the prediction ($pct%)" $?

# ---- bad input -----------------------------------------------------------------------------------
expect 2 "--blocksize" "$Q" explain --blocksize 100
expect 2 "nope.yaml" "$Q" explain --job "$tmp/nope.yaml"
expect 2 "--steps" "$Q" explain --steps 0
expect 2 "blocksize 128" "$Q" explain --blocksize 128
sed 's/^dataset_format:.*//' configs/demo.yaml >"$tmp/chat.yaml" && echo "dataset_format: chat_template" >>"$tmp/chat.yaml"
expect 2 "chat_template: the lesson reads" "$Q" explain --job "$tmp/chat.yaml"

# ---- in a browser --------------------------------------------------------------------------------
CHROME=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$CHROME" ]; then
    skip 4 "no Chromium here (Debian's chromium; CI installs it): the page is not rendered at 1280 and 400 px"
else
    for width in 1280 400; do
        # the page in a frame of that width (headless Chromium keeps windows at least 500 px wide);
        # the frame's own document must be no wider than the frame
        cat >"$tmp/frame$width.html" <<EOF
<!DOCTYPE html><html><head><meta charset="utf-8"/><title>-</title><style>body{margin:0}iframe{border:0;display:block}</style></head>
<body><iframe id="f" src="a/index.html" style="width:${width}px;height:2400px"></iframe><script>
var f = document.getElementById('f');
f.onload = function () { var e = f.contentDocument.documentElement; document.title = 'W=' + e.scrollWidth + ' C=' + e.clientWidth; };
</script></body></html>
EOF
        win=$((width < 500 ? 500 : width))
        got=$(timeout 120 "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars \
            --allow-file-access-from-files --window-size="$win,2400" --virtual-time-budget=5000 \
            --dump-dom "file://$tmp/frame$width.html" 2>/dev/null | sed -n 's/.*<title>W=\([0-9]*\) C=\([0-9]*\)<.*/\1 \2/p')
        echo "$got" | awk '{ exit !(NF == 2 && $1 <= $2) }'
        check "at $width px the page does not scroll sideways (content and frame width: ${got:-none})" $?
        timeout 120 "$CHROME" --headless --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files \
            --window-size="$win,2400" --virtual-time-budget=5000 --screenshot="$tmp/shot$width.png" \
            "file://$tmp/frame$width.html" >/dev/null 2>&1
        [ "$(head -c 4 "$tmp/shot$width.png" 2>/dev/null | od -An -c | tr -d ' ')" = '211PNG' ]
        check "a screenshot at $width px" $?
    done
fi
finish test_explain.sh
