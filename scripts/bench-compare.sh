#!/bin/sh
# make bench-compare: qlora against the PyTorch baseline (bench/torch_lora.py: frozen fp32
# base, LoRA r=8 on every linear, AdamW), in one run on this machine, and the table into
# docs/performance.md between the bench-compare markers.
# Needs Debian's python3-torch for the baseline (installed by this script as root).
set -eu
cd "$(dirname "$0")/.."
Q=./qlora
T=${THREADS:-2}
PY=/usr/bin/python3
sh scripts/deps.sh python3-torch
out=build/bench-compare
mkdir -p "$out"
row() {  # row NAME LOGFILE
    last=$(tail -n 1 "$2")
    tps=$(echo "$last" | sed 's/tokens_per_s=\([0-9.]*\).*/\1/')
    ms=$(echo "$last" | sed 's/.*ms_per_step=\([0-9.]*\).*/\1/')
    rss=$(echo "$last" | sed 's/.*peak_rss_mib=\([0-9.]*\).*/\1/')
    printf '| %s | %s | %s | %s |\n' "$1" "$tps" "$ms" "$rss"
}
echo "bench-compare: PyTorch baseline, GPT-2 small"
$PY bench/torch_lora.py --preset gpt2 --batch 4 --seq 256 --threads "$T" >"$out/torch-gpt2.log"
$PY bench/torch_lora.py --preset gpt2 --batch 4 --seq 256 --threads "$T" --bf16 >"$out/torch-gpt2-bf16.log"
# OpenBLAS's kernels for this CPU family when it falls back to generic ones (unset otherwise)
core=$($Q bench --preset bench-tiny --steps 1 --gemm openblas | sed -n 's/^blas: .* \([A-Za-z0-9]*\) MAX_THREADS.*/\1/p')
fit=""
if [ "$core" = Prescott ] && grep -q avx512f /proc/cpuinfo; then fit=SkylakeX; fi
if [ -n "$fit" ]; then
    OPENBLAS_CORETYPE=$fit $PY bench/torch_lora.py --preset gpt2 --batch 4 --seq 256 --threads "$T" >"$out/torch-gpt2-fit.log"
fi
echo "bench-compare: qlora, GPT-2 small"
$Q bench --preset gpt2 --batch 4 --seq 256 --threads "$T" >"$out/qlora-gpt2.log"
if $Q bench --preset gpt2 --batch 4 --seq 256 --threads "$T" --bf16 >"$out/qlora-gpt2-bf16.log" 2>&1; then bf16=1; else bf16=0; fi
$Q bench --preset gpt2 --batch 4 --seq 256 --threads "$T" --gradient-checkpointing >"$out/qlora-gpt2-ckpt.log"
$Q bench --preset gpt2 --batch 4 --seq 256 --threads "$T" --method lora >"$out/qlora-gpt2-lora.log"
$Q bench --preset gpt2 --batch 4 --seq 256 --threads "$T" --gemm openblas >"$out/qlora-gpt2-openblas.log"
echo "bench-compare: tiny size"
$PY bench/torch_lora.py --preset tiny --batch 8 --seq 128 --threads "$T" --steps 20 >"$out/torch-tiny.log"
$Q bench --preset bench-tiny --batch 8 --seq 128 --threads "$T" --steps 20 >"$out/qlora-tiny.log"
$Q bench --preset bench-tiny --batch 8 --seq 128 --threads "$T" --steps 20 --gemm openblas >"$out/qlora-tiny-openblas.log"
table=$(
    echo "| run | tokens/s | ms/step | peak RSS (MiB) |"
    echo "|---|---:|---:|---:|"
    row "PyTorch $(head -n 1 "$out/torch-gpt2.log" | cut -d, -f1), GPT-2 small, fp32 base + LoRA (OpenBLAS $core)" "$out/torch-gpt2.log"
    row "PyTorch, the same under bf16 autocast" "$out/torch-gpt2-bf16.log"
    [ -n "$fit" ] && row "PyTorch, fp32, OPENBLAS_CORETYPE=$fit (kernels that fit this CPU)" "$out/torch-gpt2-fit.log"
    row "qlora, GPT-2 small, NF4 + DQ base + LoRA" "$out/qlora-gpt2.log"
    [ "$bf16" = 1 ] && row "qlora, the same with bf16: true ($(sed -n 's/^frozen weights. products: //p' "$out/qlora-gpt2-bf16.log"))" "$out/qlora-gpt2-bf16.log"
    row "qlora, GPT-2 small, NF4 + DQ, gradient checkpointing" "$out/qlora-gpt2-ckpt.log"
    row "qlora, GPT-2 small, fp32 base + LoRA" "$out/qlora-gpt2-lora.log"
    row "qlora, GPT-2 small, NF4 + DQ, with OpenBLAS's products (--gemm openblas)" "$out/qlora-gpt2-openblas.log"
    row "PyTorch, 4 layers x 128, vocab 256, batch 8 x 128" "$out/torch-tiny.log"
    row "qlora, same tiny shape, NF4 + DQ" "$out/qlora-tiny.log"
    row "qlora, same tiny shape, --gemm openblas" "$out/qlora-tiny-openblas.log"
)
sgemm=$(grep '^matmul work' "$out/qlora-gpt2.log")
phases=$(printf '%s\n%s' "$(grep '^phases' "$out/qlora-gpt2.log")" "$(grep '^inside' "$out/qlora-gpt2.log")")
sgemm_ob=$(grep '^matmul work' "$out/qlora-gpt2-openblas.log")
blas=$(grep '^blas' "$out/qlora-gpt2.log")
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
block=$(printf '%s\n\n%s\n\nMeasured by `make bench-compare` on %s, %s threads of %s (%s).\nqlora GPT-2 small: %s\n%s\nqlora GPT-2 small with --gemm openblas: %s\n' \
    "<!-- bench-compare -->" "$table" "$(date -u +%Y-%m-%d)" "$T" "$cpu" "$blas" "$sgemm" "$phases" "$sgemm_ob")
awk -v block="$block" '
    /<!-- bench-compare -->/ { print block; skip = 1; next }
    /<!-- \/bench-compare -->/ { skip = 0 }
    !skip { print }' docs/performance.md >docs/performance.md.tmp && mv docs/performance.md.tmp docs/performance.md
echo "$table"
echo "wrote docs/performance.md"
