#!/bin/sh
# test_memory.sh: the analytic memory model (`qlora memory`) on the presets, against the
# figures it must reproduce (docs/memory.md; counts in docs/formats.md, "Memory"), and the trainer's real
# allocations against the prediction for the same job (within 5%).
set -u
. tests/lib.sh
field() {  # field JSON KEY: the first numeric value of "KEY" in JSON text
    echo "$1" | sed -n "s/.*\"$2\": \([0-9.e+-]*\).*/\1/p" | head -n 1
}
method_total() {  # method_total JSON NAME
    echo "$1" | sed 's/}, {/}\n{/g' | grep "\"name\": \"$2\"" | sed -n 's/.*"total_bytes": \([0-9]*\).*/\1/p'
}

j=$("$Q" memory --preset gpt2 --format json)
[ "$(field "$j" params)" = 124439808 ]; check "gpt2 has 124,439,808 parameters ($(field "$j" params))" $?
[ "$(field "$j" lora_params)" = 1179648 ]; check "gpt2 LoRA r=8 on all linears: 1,179,648 ($(field "$j" lora_params))" $?
j=$("$Q" memory --preset gpt2 --targets c_attn --format json)
[ "$(field "$j" lora_params)" = 294912 ]; check "gpt2 LoRA r=8 on c_attn: 294,912" $?
[ "$(field "$j" nf4_bits)" = 4.5000 ] && [ "$(field "$j" nf4_dq_bits)" = 4.1270 ]; check "NF4 4.5 bits, 4.127 with DQ" $?
for p in gpt2-medium:354823168 gpt2-large:774030080 gpt2-xl:1557611200; do
    n=$(field "$("$Q" memory --preset "${p%%:*}" --format json)" params)
    [ "$n" = "${p##*:}" ]; check "${p%%:*} has ${p##*:} parameters ($n)" $?
done

# the 7B table: bytes of 7e9 parameters in GiB (2^30)
t=$("$Q" memory --params 7e9)
for f in "fp32   26.08" "fp16   13.04" "int8    6.52" "int4    3.26"; do
    echo "$t" | grep -q "  $f GiB"; check "7B in $f GiB" $?
done

# QLoRA's claims for a 65B model: > 780 GB for 16-bit full fine-tuning, < 48 GiB with
# QLoRA (NF4 + double quant, r=64 on all linears, gradient checkpointing, batch 1 x 512)
j=$("$Q" memory --preset llama-65b --lora-r 64 --gradient-checkpointing --seq 512 --format json)
full16=$(method_total "$j" "full 16-bit")
qlora=$(method_total "$j" "qlora nf4+dq")
awk -v x="$full16" 'BEGIN { exit !(x > 780e9) }'; check "65B full 16-bit: $full16 bytes > 780 GB" $?
awk -v x="$qlora" 'BEGIN { exit !(x < 48 * 2^30) }'; check "65B QLoRA: $qlora bytes < 48 GiB" $?
awk -v x="$(field "$j" params)" 'BEGIN { exit !(x > 65.0e9 && x < 65.5e9) }'; check "llama-65b ~65.2e9 parameters" $?
n7=$(field "$("$Q" memory --preset llama-7b --format json)" params)
awk -v x="$n7" 'BEGIN { exit !(x > 6.7e9 && x < 6.8e9) }'; check "llama-7b ~6.74e9 parameters ($n7)" $?

# the trainer's allocations vs the prediction, for each method
cat >"$tmp/job.yaml" <<YAML
base_model: tests/ref/tiny
dataset: tests/ref/train_data.jsonl
micro_batch_size: 2
max_steps: 2
sequence_len: 32
YAML
for m in "method=qlora" "method=qlora --set double_quant=false" "method=qlora --set quant=int8" \
         "method=lora" "method=full" "method=qlora --set gradient_checkpointing=true"; do
    # shellcheck disable=SC2086
    "$Q" train "$tmp/job.yaml" --set output_dir="$tmp/out" --set $m >"$tmp/log" 2>&1
    line=$(grep "memory account.*total" "$tmp/log")
    pct=$(echo "$line" | sed -n 's/.*(\([-+][0-9.]*\)%).*/\1/p')
    awk -v p="$pct" 'BEGIN { if (p < 0) p = -p; exit !(p != "" && p <= 5) }'
    check "$m: allocations within 5% of the prediction ($pct%)" $?
done
finish test_memory.sh
