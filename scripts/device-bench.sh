#!/bin/sh
# On the lent 16-core machine (PyTorch, transformers, peft there; none of our Debian libraries,
# no network), from the repo root with out-device/ carried (scripts/device-bundle.sh made it):
#   sh scripts/device-bench.sh
# Runs, at each thread count, the same GPT-2 small training step (batch 4 x 256, LoRA r=8 on
# every linear, AdamW, 1 warm-up + STEPS timed steps, median) six ways:
#   HF+PEFT fp32 / bf16      bench/hf_peft_lora.py (transformers GPT2LMHeadModel + peft LoRA;
#                            bf16 = forward + loss under torch.autocast(cpu, bfloat16))
#   minimal torch fp32 / bf16  bench/torch_lora.py (hand-written GPT-2, same LoRA)
#   qlora fp32 / bf16        out-device/qlora bench --preset gpt2 (NF4 + double quant base),
#                            bf16 = `--bf16` ("n/a" where this qlora lacks the flag)
# then a markdown table of tokens/s, one of peak RSS (MiB), and qlora's phase lines. Threads
# 16 and 2 run all six; 1 thread runs qlora and only the fastest torch configurations
# (1-thread PyTorch GPT-2 steps take ~5 s each).
# Everything goes to $OUT (default ./out-device-results): logs/, results.tsv, summary.md.
# Env:
#   SECTIONS   which parts, any of: 16 2 1 (thread counts of the step benchmark) kernels
#              (tests/test_sgemm [+ test_bgemm], bench_bf16, bench_sgemm and
#              bench/torch_bf16_mm.py at KTHREADS). Default "16 2 1"; e.g. SECTIONS=kernels.
#   KTHREADS   thread counts of the kernel benchmarks (default "1 16")
#   TORCH_1T   1-thread torch configurations: best (default: the fastest fp32 and the fastest
#              bf16 one at 2 threads), all, or none
#   STEPS      timed steps per run (default 3)
#   BUDGET_S   wall budget of the whole script in seconds (default 540): each command gets a
#              `timeout` of at most what is left, and is skipped when under 20 s is left
#   PYTHON     the Python with torch (default: the first of python3, python that imports it)
#   PRESET     gpt2 (default); tiny for a quick check of the script itself (4 layers x 128,
#              vocab 256, batch 8 x 128: qlora's bench-tiny)
# Expected time on 16 cores: ~6 min for "16 2 1", ~3 min for "kernels".
set -u
cd "$(dirname "$0")/.." || exit 2
ROOT=$(pwd)
OUT=${OUT:-$ROOT/out-device-results}
SECTIONS=${SECTIONS:-16 2 1}
KTHREADS=${KTHREADS:-1 16}
TORCH_1T=${TORCH_1T:-best}
STEPS=${STEPS:-3}
BUDGET_S=${BUDGET_S:-540}
PRESET=${PRESET:-gpt2}
if [ "$PRESET" = tiny ]; then B=8 T=128 QPRESET=bench-tiny; else B=4 T=256 QPRESET=$PRESET; fi
START=$(date +%s)
mkdir -p "$OUT/logs"
RES="$OUT/results.tsv"
SUM="$OUT/summary.md"
: >"$RES"
: >"$SUM"
QLORA="$ROOT/out-device/qlora"
QLIB="$ROOT/out-device/lib"
say() { echo "$*" | tee -a "$SUM"; }
elapsed() { echo $(($(date +%s) - START)); }
left() { echo $((BUDGET_S - $(date +%s) + START)); }
has_timeout=0
command -v timeout >/dev/null 2>&1 && has_timeout=1

# run_cmd NAME CAP_S CMD...: CMD's output into logs/NAME.log under a timeout of at most CAP_S
# and what is left of the budget; sets RC (124 = timed out, 200 = skipped for the budget).
run_cmd() {
    name=$1 cap=$2
    shift 2
    log="$OUT/logs/$name.log"
    rem=$(left)
    if [ "$rem" -lt 20 ]; then
        echo "skipped: ${rem}s of the ${BUDGET_S}s budget left" >"$log"
        RC=200
        return
    fi
    lim=$cap
    [ "$rem" -lt "$lim" ] && lim=$rem
    t0=$(date +%s)
    if [ $has_timeout = 1 ]; then
        timeout -k 5 "$lim" "$@" >"$log" 2>&1
    else
        "$@" >"$log" 2>&1
    fi
    RC=$?
    echo "[$(elapsed)s] $name: rc=$RC in $(($(date +%s) - t0))s (limit ${lim}s)"
}

# bench_row KEY THREADS NAME CAP CMD...: run a step benchmark, record its last line
bench_row() {
    key=$1 th=$2 name=$3 cap=$4
    shift 4
    run_cmd "$name" "$cap" env OMP_NUM_THREADS="$th" "$@"
    last=$(grep '^tokens_per_s=' "$OUT/logs/$name.log" | tail -n 1)
    if [ -n "$last" ]; then
        tps=$(echo "$last" | sed 's/tokens_per_s=\([0-9.]*\).*/\1/')
        ms=$(echo "$last" | sed 's/.*ms_per_step=\([0-9.]*\).*/\1/')
        rss=$(echo "$last" | sed 's/.*peak_rss_mib=\([0-9.]*\).*/\1/')
        st=ok
    else
        tps=- ms=- rss=-
        case $RC in 124 | 137) st=timeout ;; 200) st=skipped ;; *) st="failed(rc=$RC)" ;; esac
        tail -n 5 "$OUT/logs/$name.log" | sed "s/^/  $name: /"
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$th" "$tps" "$ms" "$rss" "$st" >>"$RES"
}

# ---- the machine and the software ---------------------------------------------------------
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for p in python3 python /usr/bin/python3; do
        if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' >/dev/null 2>&1; then PY=$p; break; fi
    done
fi
[ -n "$PY" ] || { echo "device-bench: no python with torch found (set PYTHON)"; PY=python3; }
say "# device-bench $(date -u +%Y-%m-%dT%H:%M:%SZ), SECTIONS=\"$SECTIONS\", STEPS=$STEPS, budget ${BUDGET_S}s"
say ""
{
    if command -v lscpu >/dev/null 2>&1; then
        lscpu | grep -E '^(Model name|Socket|Core|Thread|CPU\(s\)|NUMA node\(s\)|L2|L3|CPU max MHz)'
    else
        grep -m1 '^model name' /proc/cpuinfo
        echo "CPU(s): $(nproc)"
    fi
    flags=$(grep -m1 '^flags' /proc/cpuinfo)
    printf 'flags:'
    for f in avx512f avx512_bf16 avx512_fp16 avx512_vnni amx_tile amx_bf16 amx_int8; do
        case " $flags " in *" $f "*) printf ' %s' "$f" ;; *) printf ' no-%s' "$f" ;; esac
    done
    echo
    echo "kernel $(uname -r); $(ldd --version 2>&1 | head -n 1); memory $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo); nproc $(nproc)"
    echo "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset} OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
    "$PY" - <<'EOF' 2>&1
import sys
print("python", sys.version.split()[0], sys.executable)
try:
    import torch
    cfg = torch.__config__.show()
    cap = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") and hasattr(torch.backends.cpu, "get_cpu_capability") else "?"
    print("torch", torch.__version__, "| CPU capability", cap, "| mkldnn", torch.backends.mkldnn.is_available(),
          "| threads", torch.get_num_threads())
    for line in cfg.splitlines():
        if any(k in line for k in ("oneDNN", "MKL-DNN", "Intel(R) oneAPI Math Kernel", "OpenMP", "BLAS_INFO", "LAPACK")):
            print(" ", line.strip()[:160])
except Exception as e:
    print("torch: not importable:", e)
for m in ("transformers", "peft", "safetensors"):
    try:
        print(m, __import__(m).__version__)
    except Exception as e:
        print(m, "not importable:", type(e).__name__, e)
EOF
    if [ -x "$QLORA" ]; then
        echo "qlora: $(LD_LIBRARY_PATH="$QLIB" "$QLORA" bench --help >/dev/null 2>&1 && echo runs || echo 'DOES NOT RUN')"
        LD_LIBRARY_PATH="$QLIB" ldd "$QLORA" 2>&1 | grep -E 'not found|=>' | sed 's/^/  /'
        [ -f out-device/MANIFEST ] && sed -n '1,5p' out-device/MANIFEST | sed 's/^/  manifest: /'
    else
        echo "qlora: $QLORA missing (carry out-device/)"
    fi
} 2>&1 | tee -a "$SUM"
QBF16=0
LD_LIBRARY_PATH="$QLIB" "$QLORA" bench --help 2>&1 | grep -q -- '--bf16' && QBF16=1
say "qlora bench --bf16: $([ $QBF16 = 1 ] && echo supported || echo 'not in this build (column n/a)')"
say ""

qlora_run() {  # qlora_run THREADS fp32|bf16
    if [ "$2" = bf16 ] && [ $QBF16 = 0 ]; then
        printf 'qlora-bf16\t%s\t-\t-\t-\tn/a\n' "$1" >>"$RES"
        return
    fi
    extra=""
    [ "$2" = bf16 ] && extra=--bf16
    cap=$((60 + 120 / $1))
    # shellcheck disable=SC2086
    bench_row "qlora-$2" "$1" "qlora-$2-t$1" "$cap" env LD_LIBRARY_PATH="$QLIB" "$QLORA" bench --preset "$QPRESET" \
        --batch $B --seq $T --threads "$1" --steps "$STEPS" $extra
}
torch_run() {  # torch_run THREADS hf|min fp32|bf16
    extra=""
    [ "$3" = bf16 ] && extra=--bf16
    script=bench/hf_peft_lora.py
    [ "$2" = min ] && script=bench/torch_lora.py
    cap=$((60 + 130 / $1))
    # shellcheck disable=SC2086
    bench_row "$2-$3" "$1" "$2-$3-t$1" "$cap" "$PY" "$script" --preset "$PRESET" --batch $B --seq $T --threads "$1" \
        --steps "$STEPS" $extra
}
tps_of() {  # tps_of KEY THREADS -> tokens/s or empty
    awk -F'\t' -v k="$1" -v t="$2" '$1 == k && $2 == t && $6 == "ok" { print $3 }' "$RES" | tail -n 1
}

# ---- the step benchmark ---------------------------------------------------------------------
step_threads=""
for s in $SECTIONS; do
    case $s in [0-9]*) step_threads="$step_threads $s" ;; esac
done
for th in $step_threads; do
    echo "== $th threads (budget left $(left)s)"
    if [ "$th" = 1 ]; then
        qlora_run 1 fp32
        qlora_run 1 bf16
        case $TORCH_1T in
        none) ;;
        all) for c in hf-fp32 hf-bf16 min-fp32 min-bf16; do torch_run 1 "${c%-*}" "${c#*-}"; done ;;
        *)  # the fastest fp32 and the fastest bf16 torch configuration at 2 threads (else 16)
            for prec in fp32 bf16; do
                best="" bt=0
                for c in hf-$prec min-$prec; do
                    v=$(tps_of "$c" 2)
                    [ -n "$v" ] || v=$(tps_of "$c" 16)
                    [ -n "$v" ] || continue
                    if awk -v a="$v" -v b="$bt" 'BEGIN { exit !(a > b) }'; then best=$c bt=$v; fi
                done
                [ -n "$best" ] || best=min-$prec
                torch_run 1 "${best%-*}" "$prec"
            done ;;
        esac
    else
        for c in hf-fp32 hf-bf16 min-fp32 min-bf16; do torch_run "$th" "${c%-*}" "${c#*-}"; done
        qlora_run "$th" fp32
        qlora_run "$th" bf16
    fi
done

if [ -n "$step_threads" ]; then
    cell() {  # cell KEY THREADS COLUMN(3 = tokens/s, 5 = RSS)
        awk -F'\t' -v k="$1" -v t="$2" -v c="$3" '$1 == k && $2 == t { v = ($6 == "ok") ? $c : $6 } END { print (v == "" ? "-" : v) }' "$RES"
    }
    table() {  # table COLUMN TITLE
        say ""
        say "$2 (preset $PRESET, batch $B x $T, LoRA r=8, median of $STEPS steps)"
        say ""
        say "| threads | HF+PEFT fp32 | HF+PEFT bf16 | minimal torch fp32 | minimal torch bf16 | qlora fp32 | qlora bf16 |"
        say "|---:|---:|---:|---:|---:|---:|---:|"
        for th in $step_threads; do
            say "| $th | $(cell hf-fp32 "$th" "$1") | $(cell hf-bf16 "$th" "$1") | $(cell min-fp32 "$th" "$1") | $(cell min-bf16 "$th" "$1") | $(cell qlora-fp32 "$th" "$1") | $(cell qlora-bf16 "$th" "$1") |"
        done
    }
    table 3 "tokens/s"
    table 5 "peak RSS (MiB)"
    say ""
    say "qlora phase lines:"
    for f in "$OUT"/logs/qlora-*-t*.log; do
        [ -f "$f" ] || continue
        say "-- $(basename "$f" .log)"
        grep -E '^(blas|ms/step|phases|inside|matmul work|bf16|bgemm)' "$f" | tee -a "$SUM"
    done
    say ""
    say "torch first lines:"
    for f in "$OUT"/logs/hf-*-t*.log "$OUT"/logs/min-*-t*.log; do
        [ -f "$f" ] || continue
        say "-- $(basename "$f" .log): $(grep -m1 -E '^(hf\+peft|torch )' "$f" | cut -c1-220)"
    done
fi

# ---- kernels ----------------------------------------------------------------------------------
case " $SECTIONS " in *" kernels "*)
    echo "== kernels at threads $KTHREADS (budget left $(left)s)"
    BIN=$(mktemp -d)
    for f in out-device/bin/*.xz; do
        [ -f "$f" ] || continue
        n=$(basename "$f" .xz)
        if command -v xz >/dev/null 2>&1; then
            xz -dc "$f" >"$BIN/$n"
        else
            "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$BIN/$n"
        fi
        chmod +x "$BIN/$n"
    done
    maxk=1
    for k in $KTHREADS; do [ "$k" -gt "$maxk" ] && maxk=$k; done
    for t in test_sgemm test_bgemm; do
        [ -x "$BIN/$t" ] || continue
        run_cmd "$t" 180 env OMP_NUM_THREADS="$maxk" LD_LIBRARY_PATH="$QLIB" "$BIN/$t"
        say "$t: $(grep -E '[0-9]+ passed, [0-9]+ failed' "$OUT/logs/$t.log" | tail -n 1) (rc=$RC)"
        grep -E 'FAIL' "$OUT/logs/$t.log" | head -n 10 | tee -a "$SUM"
    done
    # shellcheck disable=SC2086
    run_cmd bench_bf16 240 env LD_LIBRARY_PATH="$QLIB" "$BIN/bench_bf16" $KTHREADS
    say ""
    say '```'
    tee -a "$SUM" <"$OUT/logs/bench_bf16.log"
    say '```'
    # shellcheck disable=SC2086
    run_cmd torch_bf16_mm 240 "$PY" bench/torch_bf16_mm.py $KTHREADS
    say '```'
    tee -a "$SUM" <"$OUT/logs/torch_bf16_mm.log"
    say '```'
    # which oneDNN kernel PyTorch's bf16 product runs (AMX or not), at the largest thread count
    run_cmd onednn_verbose 60 env ONEDNN_VERBOSE=1 DNNL_VERBOSE=1 "$PY" bench/torch_bf16_mm.py --quick --reps 1 \
        --engines torch-bf16 "$maxk"
    say "oneDNN kernels seen for torch bf16 (ONEDNN_VERBOSE):"
    grep -E 'exec' "$OUT/logs/onednn_verbose.log" | awk -F, '{ print $3, $4, $5 }' | sort | uniq -c | head -n 6 | tee -a "$SUM"
    grep -m2 -E 'info,cpu,isa|cpu,runtime' "$OUT/logs/onednn_verbose.log" | tee -a "$SUM"
    # shellcheck disable=SC2086
    run_cmd bench_sgemm 240 env LD_LIBRARY_PATH="$QLIB" "$BIN/bench_sgemm" $KTHREADS
    say '```'
    tee -a "$SUM" <"$OUT/logs/bench_sgemm.log"
    say '```'
    rm -rf "$BIN"
    ;;
esac
say ""
say "device-bench: done in $(elapsed)s; logs and summary.md in $OUT"
