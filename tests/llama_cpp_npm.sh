#!/bin/sh
# llama_cpp_npm.sh: fetch the real llama.cpp for tests/test_gguf_llama.sh: the npm package
# node-llama-cpp (Node.js bindings with prebuilt CPU libraries of llama.cpp), pinned to 3.22.1,
# with only its Linux x64 CPU build (@node-llama-cpp/linux-x64; the optional CUDA, Vulkan and ARM
# builds are left out, 85 MB instead of 725 MB), into build/npm-llama-cpp. Install scripts are
# not run: the prebuilt libraries are used as shipped, nothing is compiled or downloaded later.
# Does nothing if it is there already. Exits 1 (with the reason) when npm is missing or the
# install fails; the llama.cpp checks are then counted as skipped. .ci/run calls it.
set -eu
cd "$(dirname "$0")/.."
VERSION=3.22.1
prefix=build/npm-llama-cpp
dir=$prefix/node_modules/node-llama-cpp
bins=$prefix/node_modules/@node-llama-cpp/linux-x64

# true when node can load llama.cpp's prebuilt CPU library from the package (from a script
# file: the package tests its binary in a child process that inherits node's arguments, which
# "-e" would break)
loads() {
    [ -d "$prefix" ] || return 1
    printf '%s\n' "const m = await import('./node_modules/node-llama-cpp/dist/index.js');" \
        "const l = await m.getLlama({gpu: false, build: 'never', logLevel: 'error'}); await l.dispose();" \
        >"$prefix/loads.mjs" && node "$prefix/loads.mjs" >/dev/null 2>&1
}

if grep -q "\"version\": \"$VERSION\"" "$dir/package.json" 2>/dev/null &&
    grep -q "\"version\": \"$VERSION\"" "$bins/package.json" 2>/dev/null && loads; then
    echo "llama_cpp_npm: $dir (node-llama-cpp $VERSION) is there already"
    exit 0
fi
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
    echo "llama_cpp_npm: npm or node not found; install Node.js (>= 20) + npm" >&2
    exit 1
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
    echo "llama_cpp_npm: node-llama-cpp $VERSION needs Node.js >= 20, found $(node --version)" >&2
    exit 1
fi
rm -rf "$prefix"
mkdir -p "$prefix"
if ! npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund --omit=optional \
    --ignore-scripts --fetch-retries=1 --fetch-timeout=60000 \
    "node-llama-cpp@$VERSION" "@node-llama-cpp/linux-x64@$VERSION"; then
    echo "llama_cpp_npm: npm install node-llama-cpp@$VERSION failed (no network?)" >&2
    rm -rf "$prefix"
    exit 1
fi
if ! loads; then
    echo "llama_cpp_npm: node-llama-cpp $VERSION installed, but its prebuilt llama.cpp does not load here" >&2
    rm -rf "$prefix"
    exit 1
fi
echo "llama_cpp_npm: installed node-llama-cpp $VERSION (llama.cpp $(sed -n 's/.*"release": "\(.*\)".*/\1/p' "$dir/llama/binariesGithubRelease.json")) into $dir"
