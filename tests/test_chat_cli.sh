#!/bin/sh
# test_chat_cli.sh: chat fine-tuning through the real binary. A llama-tiny model folder with the
# SmolLM2 fixture tokenizer and a SmolLM2-Instruct-style template (ChatML) in its
# tokenizer_config.json stands in for models/SmolLM2-135M-Instruct: configs/smollm2-chat.yaml on
# data/chat previews, trains with sample packing and evaluates; generate --chat renders the
# conversation with the generation prompt (the ids of `qlora tokenize --no-special` of the text);
# named templates and GPT-2's byte-level base model; every bad input is exit 2 with one line.
set -u
. tests/lib.sh
T=tests/ref/llama
SYS="You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# the stand-in for SmolLM2-135M-Instruct: its template, bos <|im_start|>, eos <|im_end|>
mkdir -p "$tmp/tok"
cp "$T/tok_smollm2/tokenizer.json" "$tmp/tok/"
cat >"$tmp/tok/tokenizer_config.json" <<EOF
{"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
 "chat_template": "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\\\n$SYS<|im_end|>\\\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\\\n' + message['content'] + '<|im_end|>' + '\\\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\\\n' }}{% endif %}"}
EOF
"$Q" init --preset llama-tiny --vocab-size 516 --n-positions 512 --seed 3 --tokenizer "$tmp/tok" --out "$tmp/m" >/dev/null
check "a llama-tiny folder with the ChatML template" $?
J="configs/smollm2-chat.yaml --set base_model=$tmp/m"

# --preview: the rendering, the marked assistant turns, counts; nothing written
"$Q" train $J --set output_dir="$tmp/never" --preview 2 >"$tmp/pv" 2>&1 &&
    grep -q "^--- chat template $tmp/m/tokenizer_config.json" "$tmp/pv" &&
    grep -q '^--- example 2 (data/chat/train.jsonl:2): [0-9]* tokens, [0-9]* trained$' "$tmp/pv" &&
    grep -qxF '[[Cairo on Monday: snow showers, with a high of -5 C.<|im_end|>]]' "$tmp/pv" &&
    grep -qxF 'How will Monday be in Cairo?<|im_end|>' "$tmp/pv" && [ ! -e "$tmp/never" ]
check "train --preview 2: the template's text, assistant turns and their <|im_end|> marked" $?

# training: packed rows, the chat line, a loss that falls; the adapter evaluates
head -n 20 data/chat/val.jsonl >"$tmp/val.jsonl"
"$Q" train $J --set max_steps=5 --set gradient_accumulation_steps=1 --set eval_steps=0 --set learning_rate=0.003 \
    --set val_dataset="$tmp/val.jsonl" --set output_dir="$tmp/o" >"$tmp/log" 2>&1
check "train configs/smollm2-chat.yaml (5 steps of 2 packed rows)" $?
grep -q "^chat: template $tmp/m/tokenizer_config.json.*end of turn <|im_end|>, roles_to_train \[assistant\], train_on_eos turn" "$tmp/log"
check "the summary names the template, the end of turn, the roles" $?
grep -q "^sample packing: 1000 examples ([0-9]* tokens) in [0-9]* rows of 512 tokens, packing efficiency 9[0-9].[0-9]%" "$tmp/log"
check "the summary gives the packing efficiency (over 90%)" $?
sed -n 's/^eval_loss before training: \([0-9.]*\).*/\1/p; s/^done:.*final eval_loss \([0-9.]*\).*/\1/p' "$tmp/log" >"$tmp/ev"
[ "$(wc -l <"$tmp/ev")" = 2 ] && awk 'NR == 1 { a = $1 } NR == 2 { exit !($1 < a) }' "$tmp/ev"
check "eval_loss falls on the held-out conversations ($(tr '\n' ' ' <"$tmp/ev"))" $?

# eval --data on conversations (the assistant's turns): the same loss packed
l1=$("$Q" eval --model "$tmp/m" --data "$tmp/val.jsonl" --dataset-format chat_template 2>/dev/null | tail -n 1)
l2=$("$Q" eval --model "$tmp/m" --data "$tmp/val.jsonl" --dataset-format chat_template --sample-packing --seq 512 \
    2>"$tmp/ee" | tail -n 1)
[ -n "$l1" ] && [ "$l1" = "$l2" ] && grep -q "in [0-9] rows" "$tmp/ee"
check "eval --data --dataset-format chat_template: '$l1', packed into fewer rows '$l2'" $?
expect 2 "--chat-template needs --dataset-format chat_template" \
    "$Q" eval --model "$tmp/m" --data "$tmp/val.jsonl" --chat-template chatml

# generate --chat: the conversation with the generation prompt, tokenized without special tokens
rendered="<|im_start|>system
$SYS<|im_end|>
<|im_start|>user
How will Friday be in Oslo?<|im_end|>
<|im_start|>assistant
"
n=$("$Q" tokenize --model "$tmp/m" --no-special "$rendered" | wc -w)
"$Q" generate --model "$tmp/m" --adapter "$tmp/o" --chat --prompt "How will Friday be in Oslo?" --max-new-tokens 4 \
    --temperature 0 >"$tmp/g" 2>"$tmp/ge"
check "generate --chat --prompt" $?
grep -q "^prompt $n tokens" "$tmp/ge"
check "generate --chat: the prompt is the rendered conversation's $n ids" $?
! grep -q "im_start\|How will Friday" "$tmp/g"
check "generate --chat prints the reply alone" $?
printf '[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]' >"$tmp/msgs.json"
rendered2="<|im_start|>system
Be brief.<|im_end|>
<|im_start|>user
Hi<|im_end|>
<|im_start|>assistant
"
n2=$("$Q" tokenize --model "$tmp/m" --no-special "$rendered2" | wc -w)
"$Q" generate --model "$tmp/m" --chat --messages "$tmp/msgs.json" --max-new-tokens 2 2>&1 >/dev/null | grep -q "^prompt $n2 tokens"
check "generate --chat --messages FILE: the file's system message replaces the default one ($n2 ids)" $?

# named templates on GPT-2's byte-level base model: ChatML's <|im_end|> is text there, trained whole
"$Q" train configs/demo.yaml --set dataset=data/chat/train.jsonl --set val_dataset=data/chat/val.jsonl \
    --set dataset_format=chat_template --set chat_template=chatml --set sequence_len=256 --preview 1 >"$tmp/pv2" 2>&1 &&
    grep -qxF '[[Cairo on Monday: snow showers, with a high of -5 C.<|im_end|>]]' "$tmp/pv2"
check "chatml on GPT-2's byte-level vocabulary: the text end of turn is trained" $?
"$Q" train configs/demo.yaml --set dataset=data/chat/train.jsonl --set dataset_format=chat_template \
    --set chat_template=zephyr --set sequence_len=256 --preview 1 >"$tmp/pv3" 2>&1 &&
    grep -qxF '[[Cairo on Monday: snow showers, with a high of -5 C.<|endoftext|>]]' "$tmp/pv3"
check "zephyr on GPT-2: the turn ends with the EOS <|endoftext|>" $?

# bad input: exit 2, one line
expect 2 "data/base-model: no chat template (neither chat_template.jinja nor tokenizer_config.json's chat_template); set chat_template to one of chatml" "$Q" train configs/demo.yaml --set dataset=data/chat/train.jsonl \
    --set dataset_format=chat_template --preview 1
printf '{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "x"}]}\n' >"$tmp/bad.jsonl"
expect 2 "bad.jsonl:1: messages[1]: unknown role 'bot'" "$Q" train $J --set dataset="$tmp/bad.jsonl" --preview 1
printf '{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]}\n' >"$tmp/alt.jsonl"
expect 2 "alt.jsonl:1: mistral" "$Q" train $J --set dataset="$tmp/alt.jsonl" --set chat_template=mistral --preview 1
expect 2 "--chat takes either --prompt TEXT or --messages FILE" \
    "$Q" generate --model "$tmp/m" --chat --prompt x --messages "$tmp/msgs.json"
expect 2 "--messages and --chat-template need --chat" "$Q" generate --model "$tmp/m" --prompt x --chat-template chatml
expect 2 "--prompt TEXT is required" "$Q" generate --model "$tmp/m"
printf '[{"role": "user"}]' >"$tmp/nocontent.json"
expect 2 "nocontent.json: messages[0]: no \"content\"" "$Q" generate --model "$tmp/m" --chat --messages "$tmp/nocontent.json"
printf '[]' >"$tmp/empty.json"
expect 2 "empty.json: \"messages\" is empty" "$Q" generate --model "$tmp/m" --chat --messages "$tmp/empty.json"
expect 2 "chat_template: expected one of tokenizer_default|chatml|llama3|mistral|zephyr|alpaca, found 'vicuna'" \
    "$Q" train $J --set chat_template=vicuna --preview 1
finish test_chat_cli.sh
