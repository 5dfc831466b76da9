#!/bin/sh
# hf_tokenizers_npm.sh: fetch the `tokenizers` library itself for test_hf_tokenizer.c's direct
# comparison: the npm package tokenizers (Hugging Face's Node binding of the Rust library, with
# its prebuilt binary), pinned to 0.23.2, the version that wrote tests/ref/llama/, into
# build/npm-tokenizers. Does nothing if it is there already. Exits 1 (with the reason) when npm
# is missing or the install fails; the comparison is then counted as skipped.
set -eu
cd "$(dirname "$0")/.."
VERSION=0.23.2
prefix=build/npm-tokenizers
dir=$prefix/node_modules/tokenizers

if grep -q "\"version\": \"$VERSION\"" "$dir/package.json" 2>/dev/null &&
    node -e "require('./$dir')" 2>/dev/null; then
    echo "hf_tokenizers_npm: $dir (tokenizers $VERSION) is there already"
    exit 0
fi
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "hf_tokenizers_npm: npm or node not found; install Node.js + npm" >&2
    exit 1
fi
rm -rf "$prefix"
mkdir -p "$prefix"
if ! npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund \
    --fetch-retries=1 --fetch-timeout=60000 "tokenizers@$VERSION" ||
    ! node -e "require('./$dir')"; then
    echo "hf_tokenizers_npm: npm install tokenizers@$VERSION failed, or its binary does not load" >&2
    rm -rf "$prefix"
    exit 1
fi
echo "hf_tokenizers_npm: installed tokenizers $VERSION into $dir"
