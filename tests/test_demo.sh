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
finish test_demo.sh
