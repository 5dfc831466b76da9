#!/bin/sh
# On the lent machine (see scripts/device-bench.sh for the setup): the same GPT-2 small step
# as device-bench.sh, but each configuration run ROUNDS times, the configurations alternating
# within a round, so that a noisy shared host shows as spread instead of as a ratio. Prints
# one line per run and then, per configuration, the median of its rounds. At 1 thread only
# the bf16 configurations run (the fp32 ones take 20-25 s a run there).
#   ROUNDS=3 THREADS="1 16" sh scripts/device-rounds.sh
# Env: ROUNDS (3), THREADS ("1 16"), STEPS (3), PYTHON (python3 with torch).
set -u
cd "$(dirname "$0")/.." || exit 2
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1 16}
STEPS=${STEPS:-3}
PYTHON=${PYTHON:-python3}
Q=out-device/qlora
export LD_LIBRARY_PATH="$PWD/out-device/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
res=$(mktemp)
# run NAME THREADS CMD...: prints and records NAME THREADS tokens/s
run() {
    name=$1 th=$2
    shift 2
    tps=$(OMP_NUM_THREADS=$th "$@" 2>&1 | sed -n 's/.*tokens_per_s=\([0-9.]*\).*/\1/p' | tail -n 1)
    echo "$name $th ${tps:-failed}" | tee -a "$res"
}
for r in $(seq "$ROUNDS"); do
    for th in $THREADS; do
        echo "# round $r, $th threads"
        if [ "$th" != 1 ]; then
            run qlora-fp32 "$th" "$Q" bench --preset gpt2 --threads "$th" --steps "$STEPS"
            run min-fp32 "$th" "$PYTHON" bench/torch_lora.py --threads "$th" --steps "$STEPS"
            run hf-fp32 "$th" "$PYTHON" bench/hf_peft_lora.py --threads "$th" --steps "$STEPS"
        fi
        run qlora-bf16 "$th" "$Q" bench --preset gpt2 --threads "$th" --steps "$STEPS" --bf16
        run min-bf16 "$th" "$PYTHON" bench/torch_lora.py --threads "$th" --steps "$STEPS" --bf16
        run hf-bf16 "$th" "$PYTHON" bench/hf_peft_lora.py --threads "$th" --steps "$STEPS" --bf16
    done
done
echo "# medians over $ROUNDS rounds (tokens/s)"
"$PYTHON" - "$res" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, th, tps = line.split()
    if tps != "failed":
        runs.setdefault((name, int(th)), []).append(float(tps))
for (name, th), v in sorted(runs.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print(f"{name:11s} {th:3d} threads  median {statistics.median(v):8.1f}  runs {' '.join(f'{x:.1f}' for x in v)}")
PY
rm -f "$res"
