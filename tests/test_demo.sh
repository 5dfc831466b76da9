#!/bin/sh
# test_demo.sh: the demo's path, shortened: the shipped base model loads, configs/demo.yaml
# trains a few QLoRA steps on the shipped data, the adapter loads in eval and generate,
# and the loss on the held-out forecasts falls.
set -u
. tests/lib.sh
for f in config.json model.safetensors vocab.json merges.txt; do
    [ -s "data/base-model/$f" ]; check "data/base-model/$f is shipped" $?
done
[ "$(wc -l <data/demo/train.jsonl)" -eq 2000 ] && [ "$(wc -l <data/demo/val.jsonl)" -eq 200 ]
check "data/demo has 2000 training and 200 held-out forecasts" $?
before=$("$Q" eval --model data/base-model --data data/demo/val.jsonl 2>/dev/null | tail -n 1 | sed 's/loss=\([0-9.]*\).*/\1/')
"$Q" train configs/demo.yaml --set output_dir="$tmp/demo" --set max_steps=8 --set eval_steps=0 \
    --set warmup_steps=2 >"$tmp/log" 2>&1
check "a shortened demo job trains (8 steps)" $?
[ -f "$tmp/demo/adapter_model.safetensors" ] && [ -f "$tmp/demo/report.html" ] && [ -f "$tmp/demo/checkpoint-8/optimizer.safetensors" ]
check "adapter, report and checkpoint written" $?
after=$("$Q" eval --model data/base-model --adapter "$tmp/demo" --data data/demo/val.jsonl 2>/dev/null | tail -n 1 | sed 's/loss=\([0-9.]*\).*/\1/')
awk -v b="$before" -v a="$after" 'BEGIN { exit !(a < b) }'
check "held-out loss falls after 8 steps ($before -> $after)" $?
out=$("$Q" generate --model data/base-model --adapter "$tmp/demo" --prompt "Forecast for Oslo, Monday:" \
    --max-new-tokens 20 --seed 1 2>/dev/null)
case "$out" in "Forecast for Oslo, Monday:"*) check "generate with the adapter" 0 ;; *) check "generate with the adapter: '$out'" 1 ;; esac
grep -q "memory account (qlora nf4+dq): total" "$tmp/log"; check "the job prints its memory account" $?

# bf16 products of the frozen weights (where the CPU has AVX512-BF16 or AMX). Tolerances:
# bf16 keeps 8 significant bits, so each product's inputs are off by up to 2^-8 relative,
# but the errors are unbiased and average out over hundreds of terms; the held-out loss of
# the base model must stay within 0.5% of fp32, and a shortened demo job (24 steps) trained
# with bf16: true must end within 2% of the same job in fp32.
if "$Q" eval --model data/base-model --data data/demo/val.jsonl --bf16 >"$tmp/bf16.out" 2>"$tmp/bf16.err"; then
    b16=$(tail -n 1 "$tmp/bf16.out" | sed 's/loss=\([0-9.]*\).*/\1/')
    awk -v a="$before" -v b="$b16" 'BEGIN { d = (b - a) / a; exit !(d < 0.005 && d > -0.005) }'
    check "held-out loss with --bf16 within 0.5% of fp32 ($before vs $b16)" $?
    for p in false true; do
        "$Q" train configs/demo.yaml --set output_dir="$tmp/demo-$p" --set max_steps=24 --set eval_steps=0 \
            --set warmup_steps=4 --set bf16=$p >"$tmp/log-$p" 2>&1
        check "the demo job with bf16: $p trains 24 steps" $?
    done
    grep -q "bf16 products: " "$tmp/log-true"; check "the bf16 job names its bf16 instructions" $?
    out=$("$Q" generate --model data/base-model --adapter "$tmp/demo" --prompt "Forecast for Oslo, Monday:" \
        --max-new-tokens 10 --seed 1 --bf16 2>/dev/null)
    case "$out" in "Forecast for Oslo, Monday:"*) check "generate --bf16" 0 ;; *) check "generate --bf16: '$out'" 1 ;; esac
    f32=$(grep -o '"eval_loss": [0-9.]*' "$tmp/demo-false/metrics.jsonl" | tail -n 1 | cut -d' ' -f2)
    b16=$(grep -o '"eval_loss": [0-9.]*' "$tmp/demo-true/metrics.jsonl" | tail -n 1 | cut -d' ' -f2)
    awk -v a="$f32" -v b="$b16" 'BEGIN { d = (b - a) / a; exit !(a > 0 && d < 0.02 && d > -0.02) }'
    check "24 demo steps in bf16 end within 2% of fp32 (eval_loss $f32 vs $b16)" $?
else
    grep -q "neither" "$tmp/bf16.err"; check "--bf16 on a CPU without bf16 instructions: a clear error" $?
    skip 5 "this CPU has no AVX512-BF16 or AMX-BF16: the bf16 accuracy checks cannot run"
fi
expect 2 "method full trains every weight" "$Q" train configs/demo.yaml --set output_dir="$tmp/full" \
    --set method=full --set bf16=true
expect 2 "expected one of auto|true|false" "$Q" train configs/demo.yaml --set output_dir="$tmp/x" --set bf16=maybe
finish test_demo.sh
