#!/bin/sh
# Build what scripts/device-bench.sh runs on the lent 16-core machine (which has PyTorch but
# none of our Debian libraries, and no network) into out-device/ (git-ignored), here on the
# development machine:
#   out-device/qlora              ./qlora, -march=x86-64-v4, OpenBLAS + libyaml + pcre2 linked
#                                 statically (make's LDLIBS overridden; the Makefile is unchanged)
#   out-device/lib/               the shared libraries left that a base glibc system lacks
#                                 (libgomp.so.1, libcjson.so.1, ...), copied with cp -L
#   out-device/bin/*.xz           tests/test_sgemm (+ test_bgemm if present), bench_sgemm and
#                                 bench_bf16, stripped and xz-compressed: each carries its own
#                                 static OpenBLAS (~25 MB of DYNAMIC_ARCH kernels, ~1.7 MB
#                                 compressed); device-bench.sh unpacks them
#   out-device/MANIFEST           what was built, from which tree, with sizes and checksums
# Then checks the bundle here: ldd, the newest glibc symbol version needed, and a short
# `qlora bench` with LD_LIBRARY_PATH=out-device/lib.
# Usage: sh scripts/device-bundle.sh      (root installs missing Debian packages; ~1-2 min)
set -eu
cd "$(dirname "$0")/.."
L=/usr/lib/x86_64-linux-gnu
BUILD=build/device
ARCH=-march=x86-64-v4
OUTD=out-device
sh scripts/deps.sh
for a in "$L/openblas-openmp/libopenblas.a" "$L/libyaml.a" "$L/libpcre2-8.a" "$L/libutf8proc.a"; do
    [ -f "$a" ] || { echo "device-bundle: missing static library $a" >&2; exit 1; }
done
# libcjson: Debian 12 ships no libcjson.a, so it stays shared and is carried in lib/
if [ -f "$L/libcjson.a" ]; then CJSON="$L/libcjson.a"; else CJSON=-lcjson; fi
STATIC_LIBS="$L/openblas-openmp/libopenblas.a $L/libyaml.a $L/libpcre2-8.a $L/libutf8proc.a $CJSON -lm"
# the fortran runtime only if this OpenBLAS's objects that we pull in need it (0.3.21: no)
TESTS="test_sgemm"
[ -f tests/test_bgemm.c ] && TESTS="$TESTS test_bgemm"
targets="$BUILD/qlora $BUILD/bench/bench_sgemm"
for t in $TESTS; do targets="$targets $BUILD/tests/$t"; done
# relink every time: make does not know that LDLIBS changed
# shellcheck disable=SC2086
rm -f $targets "$BUILD/bench/bench_bf16"
echo "device-bundle: make BUILD=$BUILD ARCH=$ARCH LDLIBS=\"$STATIC_LIBS\""
# shellcheck disable=SC2086
if ! make -j"$(nproc)" --no-print-directory BUILD="$BUILD" ARCH="$ARCH" LDLIBS="$STATIC_LIBS" \
        $targets; then
    echo "device-bundle: build failed" >&2
    exit 1
fi
# bench_bf16: built without make (the flags the Makefile would use, plus feature macros)
BF16_DEFS=""
if nm "$BUILD/libqlora.a" 2>/dev/null | grep -q ' T bgemm$'; then BF16_DEFS="$BF16_DEFS -DHAVE_BGEMM"; fi
if nm "$L/openblas-openmp/libopenblas.a" 2>/dev/null | grep -q ' T cblas_sbgemm$'; then
    BF16_DEFS="$BF16_DEFS -DHAVE_SBGEMM"
fi
CFLAGS_B="-O2 -g $ARCH -fopenmp -ffp-contract=off -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wvla"
OB_INC=$(pkg-config --cflags openblas 2>/dev/null || true)
mkdir -p "$BUILD/bench"
# shellcheck disable=SC2086
cc $CFLAGS_B $OB_INC -Isrc $BF16_DEFS bench/bench_bf16.c "$BUILD/libqlora.a" -o "$BUILD/bench/bench_bf16" \
    $STATIC_LIBS -ldl
echo "device-bundle: bench_bf16 built with:${BF16_DEFS:- (no bgemm, no sbgemm)}"
# a local variant with oneDNN (Debian's libdnnl-dev, shared): for measuring here, not carried
if dpkg-query -W -f='${Status}' libdnnl-dev 2>/dev/null | grep -q "install ok installed"; then
    # shellcheck disable=SC2086
    cc $CFLAGS_B $OB_INC -Isrc $BF16_DEFS -DHAVE_DNNL bench/bench_bf16.c "$BUILD/libqlora.a" \
        -o "$BUILD/bench/bench_bf16_dnnl" $STATIC_LIBS -ldl -ldnnl
    echo "device-bundle: also $BUILD/bench/bench_bf16_dnnl (oneDNN, for this machine only)"
fi

rm -rf "$OUTD"
mkdir -p "$OUTD/lib" "$OUTD/bin"
strip --strip-debug -o "$OUTD/qlora" "$BUILD/qlora"
aux="$BUILD/bench/bench_sgemm $BUILD/bench/bench_bf16"
for t in $TESTS; do aux="$aux $BUILD/tests/$t"; done
for f in $aux; do
    strip -o "$OUTD/bin/$(basename "$f")" "$f"
    xz -T0 -9 -f "$OUTD/bin/$(basename "$f")"
done
# shared libraries outside a base glibc system
base='^(linux-vdso\.so|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|ld-linux-x86-64\.so|libresolv\.so)'
for f in "$BUILD/qlora" $aux; do
    ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }'
done | sort -u | while read -r name path; do
    echo "$name" | grep -Eq "$base" && continue
    cp -L "$path" "$OUTD/lib/$name"
done
{
    echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n) by scripts/device-bundle.sh"
    echo "tree: $(git rev-parse --short HEAD 2>/dev/null || echo '?') + uncommitted: $(git status --short src tests bench 2>/dev/null | tr '\n' ';')"
    echo "cc: $(cc --version | head -n 1); ARCH=$ARCH; LDLIBS=$STATIC_LIBS"
    echo "bench_bf16 macros:${BF16_DEFS:- none}"
    # shellcheck disable=SC2086
    echo "newest glibc symbol needed: $(objdump -T "$BUILD/qlora" $aux | grep -o 'GLIBC_[0-9.]*' | sort -t. -k2,2n -k3,3n -u | tail -n 1)"
    (cd "$OUTD" && find . -type f ! -name MANIFEST | sort | xargs sha256sum)
} >"$OUTD/MANIFEST"
cat "$OUTD/MANIFEST"
echo "--- sizes"
du -ab "$OUTD" | sort -k2 | awk '{ printf "%10.2f MiB  %s\n", $1 / 1048576, $2 }'
echo "--- ldd $OUTD/qlora (LD_LIBRARY_PATH=$OUTD/lib)"
LD_LIBRARY_PATH="$OUTD/lib" ldd "$OUTD/qlora"
echo "--- check: qlora bench --preset bench-tiny --steps 2"
LD_LIBRARY_PATH="$OUTD/lib" "$OUTD/qlora" bench --preset bench-tiny --steps 2 | tail -n 3
tmp=$(mktemp -d)
xz -dc "$OUTD/bin/bench_bf16.xz" >"$tmp/bench_bf16" && chmod +x "$tmp/bench_bf16"
echo "--- check: bench_bf16 --quick --reps 1 $(nproc)"
LD_LIBRARY_PATH="$OUTD/lib" "$tmp/bench_bf16" --quick --reps 1 "$(nproc)" | tail -n 8
rm -rf "$tmp"
total=$(du -sb "$OUTD" | cut -f1)
echo "device-bundle: $OUTD is $(awk -v b="$total" 'BEGIN { printf "%.1f", b / 1048576 }') MiB"
[ "$total" -le $((40 * 1048576)) ] || { echo "device-bundle: over 40 MiB" >&2; exit 1; }
