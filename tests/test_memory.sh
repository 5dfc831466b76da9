#!/bin/sh
# test_memory.sh: the analytic memory model (`qlora memory`) on the presets, against the
# figures it must reproduce (docs/memory.md; counts in docs/formats.md, "Memory"; the published
# parameter totals of SmolLM2, Qwen2.5 and TinyLlama), and the trainer's real allocations
# against the prediction for the same job, GPT-2 and Llama (equal to the byte, every category).
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

# The LLaMA family. The real checkpoints' parameter totals as published (the safetensors
# metadata / model cards of HuggingFaceTB/SmolLM2-135M, Qwen/Qwen2.5-0.5B and
# TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T): the shapes of model_preset with
# grouped-query attention, Qwen2's q/k/v biases, tied heads for SmolLM2 and Qwen2.5.
for p in smollm2-135m:134515008 qwen2.5-0.5b:494032768 tinyllama-1.1b:1100048384; do
    n=$(field "$("$Q" memory --preset "${p%%:*}" --format json)" params)
    [ "$n" = "${p##*:}" ]; check "${p%%:*} has the published ${p##*:} parameters ($n)" $?
done
# SmolLM2-135M by hand (C 576, F 1536, 30 layers, 9 query and 3 kv heads of 64): per layer
# the linears' in + out are q 1152, k 768, v 768, o 1152, gate, up, down 2112 each, so r=8 on
# all seven gives 30 * 8 * 10176 = 2,442,240 and on q_proj, v_proj 30 * 8 * 1920 = 460,800.
# NF4: 106,168,320 linear weights -> 53,084,160 bytes of codes + the other 28,346,688
# parameters in fp32 = 166,470,912; double-quant constants per layer 5272 (q: 5184 blocks +
# 21 f32 second-level scales + an f32 offset) + 1760 (k) + 1760 (v) + 5272 (o) + 3 * 14044
# (13824 blocks + 54 scales + offset) = 56,196, times 30 = 1,685,880
j=$("$Q" memory --preset smollm2-135m --format json)
[ "$(field "$j" lora_params)" = 2442240 ]; check "smollm2-135m LoRA r=8 on all linears: 2,442,240 ($(field "$j" lora_params))" $?
dq=$(echo "$j" | sed 's/}, {/}\n{/g' | grep '"name": "qlora nf4+dq"')
[ "$(field "$dq" weights_bytes)" = 166470912 ] && [ "$(field "$dq" quant_constants_bytes)" = 1685880 ]
check "smollm2-135m NF4 + DQ: 166,470,912 bytes of weights, 1,685,880 of constants" $?
j=$("$Q" memory --preset smollm2-135m --targets q_proj,v_proj --format json)
[ "$(field "$j" lora_params)" = 460800 ]; check "smollm2-135m LoRA r=8 on q_proj, v_proj: 460,800" $?
"$Q" memory --preset smollm2-135m >"$tmp/text"
grep -q "^smollm2-135m: 1.345e+08 parameters (1.062e+08 in block linears), LoRA r=8: 2.442e+06 trainable" "$tmp/text"
check "qlora memory --preset smollm2-135m prints its counts" $?
expect 2 "q_proj" "$Q" memory --preset smollm2-135m --targets c_attn
expect 2 "c_attn" "$Q" memory --preset gpt2 --targets q_proj

# the trainer's allocations vs the prediction: every category equal to the byte
exact() {  # exact LOG WHAT: every "memory account" line of LOG has allocated == predicted
    bad=$(grep "memory account" "$1" | grep -v "category" |
          awk '{ a = $(NF-1); p = $NF; if ($0 ~ /total/) { a = $(NF-6); p = $(NF-5) } if (a != p) print }')
    [ -n "$(grep "memory account.*total" "$1")" ] && [ -z "$bad" ]
    check "$2: allocations equal the prediction ($(grep "memory account.*total" "$1" | sed 's/.*total *//'))" $?
}
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
    "$Q" train "$tmp/job.yaml" --set output_dir="$tmp/out-gpt2" --set $m >"$tmp/log" 2>&1
    exact "$tmp/log" "gpt2 $m"
done
# a Llama with grouped-query attention and a tied head (tests/ref/llama/llama_tied, F = 96 so
# NF4 blocks of 32) and a byte-level tokenizer; the data is pre-tokenized; 3 x 13 tokens make
# buffers that are not multiples of 64 bytes
mkdir "$tmp/llama" && cp tests/ref/llama/llama_tied/config.json tests/ref/llama/llama_tied/model.safetensors "$tmp/llama/" &&
    "$Q" init --preset tiny --out "$tmp/tok" >/dev/null && cp "$tmp/tok/vocab.json" "$tmp/tok/merges.txt" "$tmp/llama/"
check "prepare a llama_tied folder" $?
cat >"$tmp/llama.yaml" <<YAML
base_model: $tmp/llama
dataset: tests/ref/llama/train_data.jsonl
dataset_format: jsonl
quant_blocksize: 32
micro_batch_size: 3
max_steps: 2
sequence_len: 13
lora_r: 5
YAML
for m in "method=qlora" "method=qlora --set double_quant=false" "method=lora" "method=full" \
         "method=qlora --set gradient_checkpointing=true" "method=qlora --set lora_target_modules=[q_proj,down_proj]"; do
    # shellcheck disable=SC2086
    "$Q" train "$tmp/llama.yaml" --set output_dir="$tmp/out-llama" --set $m >"$tmp/log" 2>&1
    exact "$tmp/log" "llama_tied $m"
done
finish test_memory.sh
