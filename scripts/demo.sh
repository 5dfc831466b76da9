#!/bin/sh
# make demo: QLoRA end to end on the small base model and the forecast data that ship with
# qlora. Prints the held-out loss and samples before and after fine-tuning, the speed and
# the memory account, and where the outputs are. About two minutes on 2 cores.
set -eu
cd "$(dirname "$0")/.."
Q=./qlora
OUT=out/demo
PROMPTS="Forecast for Oslo, Monday:|Forecast for Cairo, Saturday:|Forecast for Paris, Friday:"
rule() { echo "------------------------------------------------------------------------"; }
samples() {  # samples [--adapter DIR]
    echo "$PROMPTS" | tr '|' '\n' | while read -r p; do
        printf '  '
        $Q generate --model data/base-model "$@" --prompt "$p" --max-new-tokens 100 \
            --temperature 0.3 --top-k 10 --seed 7 2>/dev/null | head -n 1
    done
}
rule
echo "qlora demo: QLoRA fine-tuning of a small GPT-2 on the CPU"
echo "base model: data/base-model (4 layers, 192 wide, byte-level, pretrained on the KJV Bible)"
echo "task:       data/demo (2000 weather forecasts to learn, 200 held out)"
rule
before=$($Q eval --model data/base-model --quant nf4 --data data/demo/val.jsonl 2>/dev/null | tail -n 1)
echo "held-out loss before fine-tuning: $before"
echo "samples before (base model):"
samples
rule
rm -rf "$OUT"
$Q train configs/demo.yaml --set output_dir="$OUT"
rule
after=$($Q eval --model data/base-model --quant nf4 --adapter "$OUT" --data data/demo/val.jsonl 2>/dev/null | tail -n 1)
echo "held-out loss after fine-tuning:  $after"
echo "samples after (base model + adapter):"
samples --adapter "$OUT"
rule
lb=$(echo "$before" | sed 's/loss=\([0-9.]*\).*/\1/')
la=$(echo "$after" | sed 's/loss=\([0-9.]*\).*/\1/')
awk -v b="$lb" -v a="$la" 'BEGIN { printf "held-out loss %.4f -> %.4f (%.0f%% lower)\n", b, a, 100 * (b - a) / b }'
echo "adapter (PEFT format): $OUT/adapter_model.safetensors + adapter_config.json"
echo "metrics:               $OUT/metrics.jsonl   checkpoint: $OUT/checkpoint-*"
if [ -f "$OUT/report.html" ]; then echo "report:                $OUT/report.html"; fi
echo "try it:  ./qlora generate --model data/base-model --adapter $OUT --prompt 'Forecast for Lima, Sunday:'"
rule
