#!/bin/sh
# On the lent machine (see scripts/device-bench.sh for the setup): the same GPT-2 small step
# as device-bench.sh, but each configuration run ROUNDS times, the configurations alternating
# within a round, so that a noisy shared host shows as spread instead of as a ratio. Prints
# one line per run and then, per configuration, the median of its rounds. At 1 thread only
# the bf16 configurations run (the fp32 ones take 20-25 s a run there).
#   ROUNDS=3 THREADS="1 16" sh scripts/device-rounds.sh
# Env: ROUNDS (3), THREADS ("1 16"), STEPS (3), PYTHON (python3 with torch), BEFORE (a second
# qlora binary, e.g. the previous commit's, run as qlora-before-* beside the current one; an
# .xz file is unpacked first), TORCH_1T (1: PyTorch runs at 1 thread too, the default; 0: not).
set -u
cd "$(dirname "$0")/.." || exit 2
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1 16}
STEPS=${STEPS:-3}
PYTHON=${PYTHON:-python3}
Q=out-device/qlora
BEFORE=${BEFORE:-}
TORCH_1T=${TORCH_1T:-1}
case $BEFORE in
*.xz)  # unpacked beside this script's temporary files (xz, or Python's lzma where xz is missing)
    unpacked=$(mktemp)
    if command -v xz >/dev/null 2>&1; then xz -dc "$BEFORE" >"$unpacked"; else
        "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$BEFORE" "$unpacked"
    fi
    chmod +x "$unpacked" && BEFORE=$unpacked ;;
esac
export LD_LIBRARY_PATH="$PWD/out-device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
res=$(mktemp)
# run NAME THREADS CMD...: prints and records NAME THREADS tokens/s
run() {
    name=$1 th=$2
    shift 2
    line=$(OMP_NUM_THREADS=$th "$@" 2>&1 | grep 'tokens_per_s=' | tail -n 1)
    tps=$(echo "$line" | sed -n 's/.*tokens_per_s=\([0-9.]*\).*/\1/p')
    rss=$(echo "$line" | sed -n 's/.*peak_rss_mib=\([0-9.]*\).*/\1/p')
    echo "$name $th ${tps:-failed} ${rss:-0}" | tee -a "$res"
}
for r in $(seq "$ROUNDS"); do
    for th in $THREADS; do
        echo "# round $r, $th threads"
        if [ "$th" != 1 ]; then
            [ -n "$BEFORE" ] && run qlora-before-fp32 "$th" "$BEFORE" bench --preset gpt2 --threads "$th" --steps "$STEPS"
            run qlora-fp32 "$th" "$Q" bench --preset gpt2 --threads "$th" --steps "$STEPS"
            run min-fp32 "$th" "$PYTHON" bench/torch_lora.py --threads "$th" --steps "$STEPS"
            run hf-fp32 "$th" "$PYTHON" bench/hf_peft_lora.py --threads "$th" --steps "$STEPS"
        fi
        [ -n "$BEFORE" ] && run qlora-before-bf16 "$th" "$BEFORE" bench --preset gpt2 --threads "$th" --steps "$STEPS" --bf16
        run qlora-bf16 "$th" "$Q" bench --preset gpt2 --threads "$th" --steps "$STEPS" --bf16
        if [ "$th" != 1 ] || [ "$TORCH_1T" = 1 ]; then
            run min-bf16 "$th" "$PYTHON" bench/torch_lora.py --threads "$th" --steps "$STEPS" --bf16
            run hf-bf16 "$th" "$PYTHON" bench/hf_peft_lora.py --threads "$th" --steps "$STEPS" --bf16
        fi
    done
done
echo "# medians over $ROUNDS rounds (tokens/s)"
"$PYTHON" - "$res" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, th, tps, rss = line.split()
    if tps != "failed":
        runs.setdefault((name, int(th)), []).append((float(tps), float(rss)))
for (name, th), v in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    tps = [t for t, _ in v]
    print(f"{name:18s} {th:3d} threads  median {statistics.median(tps):8.1f}  runs "
          f"{' '.join(f'{x:.1f}' for x in tps)}  peak RSS <= {max(r for _, r in v):.0f} MiB")
PY
rm -f "$res" ${unpacked:+"$unpacked"}
