#!/bin/sh
# test_layout.sh: the shape of src/ that STYLE.md asks for, checked on the sources:
#   - no function longer than 100 lines (from the line of its opening brace to its closing one);
#   - nothing below the commands exits: no exit/_Exit/quick_exit/abort/die/die_error call in
#     src/ outside src/cmd/ and src/main.c, except the documented exceptions below;
#   - the commands (functions cmd_*) are defined only under src/cmd/.
# A check per file that breaks a rule (naming the functions), and one per rule for the rest.
set -u
. tests/lib.sh

# file:function pairs allowed to exit, with why (util.h documents both):
#   util.c:out_of_memory   xmalloc and friends: out of memory can strike anywhere
#   util.c:check_failed    CHECK(): a broken invariant is a bug in qlora, not bad input
EXIT_OK="src/util.c:out_of_memory src/util.c:check_failed"
MAX_LINES=100

# One line per function definition, "F<TAB>file<TAB>name<TAB>first line<TAB>lines", and per
# exiting call inside one, "C<TAB>file<TAB>function<TAB>line<TAB>callee". Comments, string
# and character literals and preprocessor lines are blanked before braces are counted.
scan() {
    awk '
    function clean(s,    out, i, c, n, q) {
        out = ""; n = length(s); i = 1
        while (i <= n) {
            c = substr(s, i, 1)
            if (in_comment) {
                if (substr(s, i, 2) == "*/") { in_comment = 0; i += 2 } else i++
                continue
            }
            if (substr(s, i, 2) == "/*") { in_comment = 1; i += 2; continue }
            if (substr(s, i, 2) == "//") break
            if (c == "\"" || c == "\047") {
                q = c; i++
                while (i <= n && substr(s, i, 1) != q) i += (substr(s, i, 1) == "\\") ? 2 : 1
                i++; out = out " "; continue
            }
            out = out c; i++
        }
        return out
    }
    FNR == 1 { depth = 0; in_comment = 0; macro = 0; hdr = ""; fn = "" }
    {
        if (macro || ($0 ~ /^[ \t]*#/ && !in_comment)) { macro = ($0 ~ /\\$/); next }
        line = clean($0)
        line_fn = fn
        for (i = 1; i <= length(line); i++) {
            c = substr(line, i, 1)
            if (c == "{") {
                if (depth == 0 && hdr ~ /\)[ \t]*$/ && hdr !~ /=/ && hdr !~ /^[ \t]*(typedef|struct|enum|union)[ \t{]/) {
                    name = hdr; sub(/[ \t]*\(.*$/, "", name); sub(/^.*[^A-Za-z0-9_]/, "", name)
                    fn = name; start = FNR; line_fn = fn
                }
                depth++
            } else if (c == "}") {
                depth--
                if (depth == 0) {
                    if (fn != "") printf "F\t%s\t%s\t%d\t%d\n", FILENAME, fn, start, FNR - start + 1
                    fn = ""; hdr = ""
                }
            } else if (c == ";" && depth == 0) {
                hdr = ""
            } else if (depth == 0) {
                hdr = hdr c
            }
        }
        if (depth == 0) hdr = hdr " "
        if (line_fn != "") {  # a line inside a function (or a whole one-line function)
            rest = " " line
            while (match(rest, /[^A-Za-z0-9_](exit|_Exit|quick_exit|abort|die|die_error)[ \t]*\(/)) {
                callee = substr(rest, RSTART + 1, RLENGTH - 1); sub(/[ \t]*\($/, "", callee)
                printf "C\t%s\t%s\t%d\t%s\n", FILENAME, line_fn, FNR, callee
                rest = substr(rest, RSTART + RLENGTH)
            }
        }
    }' "$@"
}

files=$(ls src/*.c src/*.h src/cmd/*.c src/cmd/*.h 2>/dev/null)
# shellcheck disable=SC2086
scan $files >"$tmp/scan"
n_files=$(echo "$files" | wc -l)
n_fn=$(grep -c '^F' "$tmp/scan")
[ "$n_fn" -gt 200 ]; check "the scan finds the functions ($n_fn in $n_files files)" $?

# report RULE: one failing check per file in $tmp/bad ("file<TAB>what"), one passing for the rest
report() {
    for f in $(cut -f 1 "$tmp/bad" | sort -u); do
        echo "FAIL: $1: $f: $(grep -F "$f	" "$tmp/bad" | cut -f 2 | tr '\n' ' ')"
        fail=$((fail + 1))
    done
    check "$1 ($(cut -f 1 "$tmp/bad" | sort -u | wc -l) of $n_files files break it)" 0
}

awk -F '\t' -v max="$MAX_LINES" '$1 == "F" && $5 > max { printf "%s\t%s:%d (%d lines)\n", $2, $3, $4, $5 }' \
    "$tmp/scan" >"$tmp/bad"
report "no function longer than $MAX_LINES lines"

awk -F '\t' -v ok="$EXIT_OK" '
    BEGIN { n = split(ok, a, " "); for (i = 1; i <= n; i++) allowed[a[i]] = 1 }
    $1 == "C" && $2 !~ /^src\/cmd\// && $2 != "src/main.c" && !(($2 ":" $3) in allowed) {
        printf "%s\t%s() calls %s at line %d\n", $2, $3, $5, $4
    }' "$tmp/scan" >"$tmp/bad"
report "only src/cmd/ and src/main.c exit"

awk -F '\t' '$1 == "F" && $3 ~ /^cmd_/ && $2 !~ /^src\/cmd\// { printf "%s\t%s at line %d\n", $2, $3, $4 }' \
    "$tmp/scan" >"$tmp/bad"
report "commands (cmd_*) are defined under src/cmd/"

# the scanner itself, on a file made to break every rule once
mkdir -p "$tmp/src"
{
    echo '#define LOOKS_LIKE(x) do { exit(x); } while (0)'
    echo 'static const int T[] = {1, 2};  /* { not a function */'
    echo 'int cmd_x(int n) {'
    echo '    const char *s = "} exit(1) {";'
    awk 'BEGIN { for (i = 0; i < 100; i++) print "    n++;" }'
    echo '    if (n < 0) die(2, "x");  // exit(3) in a comment'
    echo '    return atomic_abort(n);'
    echo '}'
    echo 'static void stop(void) { abort(); }'
} >"$tmp/src/x.c"
got=$(scan "$tmp/src/x.c" | cut -f 1,3,4,5 | tr '\t\n' ' ')
[ "$got" = "C cmd_x 105 die F cmd_x 3 105 F stop 108 1 C stop 108 abort " ]; check "the scanner on a known file: '$got'" $?
finish test_layout.sh
