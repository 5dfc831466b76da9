#!/bin/sh
# test_tokenizer_cli.sh: LLaMA-family model folders whose tokenizer is tokenizer.json (+
# tokenizer_config.json) through the real binary: init, tokenize, eval --text / --data and generate
# put BOS and EOS where docs/training.md says, generate stops at the EOS, and every hostile
# tokenizer file or text is exit 2 with one line naming the file (and the field).
# The models are llama-tiny shapes with 600 embedding rows (the fixture tokenizers have 561, 516 and
# 505 tokens; tests/ref/llama's reference models have 320 rows, fewer than any of them).
set -u
. tests/lib.sh
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
T=tests/ref/llama

for t in llama2 smollm2 qwen2; do
    "$Q" init --preset llama-tiny --vocab-size 600 --seed 1 --tokenizer "$T/tok_$t" --out "$tmp/$t" >/dev/null &&
        cmp -s "$T/tok_$t/tokenizer.json" "$tmp/$t/tokenizer.json" && [ -f "$tmp/$t/tokenizer_config.json" ]
    check "init llama-tiny --tokenizer tok_$t copies tokenizer.json and tokenizer_config.json" $?
done
expect 2 "the tokenizer has 561 tokens but the model's vocab_size is 500" \
    "$Q" init --preset llama-tiny --vocab-size 500 --tokenizer "$T/tok_llama2" --out "$tmp/small"

# tokenize in a model folder (tests/test_tokenizer_front.c checks all 35 fixture cases):
# Llama 2's post-processor puts <s> (1) first, SmolLM2's adds nothing
[ "$("$Q" tokenize --model "$tmp/llama2" "Hello world")" = "1 343 289 309 358 319 357 349 316 308" ]
check "tokenize: Llama 2 with <s>" $?
[ "$("$Q" tokenize --model "$tmp/llama2" --no-special "Hello world")" = "343 289 309 358 319 357 349 316 308" ]
check "tokenize --no-special: Llama 2 without <s>" $?
[ "$("$Q" tokenize --model "$tmp/smollm2" "Hello world")" = "42 461 81 271 264 358" ]
check "tokenize: SmolLM2 adds nothing" $?

# eval: the last line's tokens= counts the predicted tokens
tokens() { "$Q" eval --model "$1" --quant none "$2" "$3" 2>/dev/null | tail -n 1 | sed -n 's/.*tokens=\([0-9]*\)$/\1/p'; }
printf 'Hello world' >"$tmp/hw.txt"
[ "$(tokens "$tmp/llama2" --text "$tmp/hw.txt")" = 9 ]; check "eval --text, Llama 2: <s> + 9 ids, 9 predicted" $?
[ "$(tokens "$tmp/smollm2" --text "$tmp/hw.txt")" = 5 ]; check "eval --text, SmolLM2: 6 ids, 5 predicted" $?
printf '{"text": "Hello world"}\n' >"$tmp/t.jsonl"
[ "$(tokens "$tmp/llama2" --data "$tmp/t.jsonl")" = 10 ]; check "eval --data text, Llama 2: <s> + 9 + </s>, 10 predicted" $?
[ "$(tokens "$tmp/smollm2" --data "$tmp/t.jsonl")" = 6 ]; check "eval --data text, SmolLM2: 6 + <|endoftext|>, 6 predicted" $?
[ "$(tokens "$tmp/qwen2" --data "$tmp/t.jsonl")" = 6 ]; check "eval --data text, Qwen2: 6 + <|endoftext|>, 6 predicted" $?
# prompt/completion: labels on the completion (no BOS of its own) and the EOS
printf '{"prompt": "Q: Hello?", "completion": " A: world."}\n' >"$tmp/pc.jsonl"
for t in llama2 smollm2 qwen2; do
    n=$("$Q" tokenize --model "$tmp/$t" --no-special " A: world." | wc -w)
    got=$(tokens "$tmp/$t" --data "$tmp/pc.jsonl")
    [ "$got" = $((n + 1)) ]; check "eval --data prompt/completion, $t: $got predicted = $n completion ids + EOS" $?
done

# generate: the prompt is tokenized with the post-processor's ids (Llama 2: <s> + 5)
"$Q" generate --model "$tmp/llama2" --prompt "Hello" --max-new-tokens 3 --temperature 0 >"$tmp/out" 2>"$tmp/err"
grep -q "prompt 6 tokens.*generated 3 tokens" "$tmp/err" && [ "$(head -c 5 "$tmp/out")" = Hello ]
check "generate, Llama 2: the prompt is <s> + 5 ids; 3 tokens generated greedily" $?
"$Q" generate --model "$tmp/llama2" --prompt "" --max-new-tokens 2 --temperature 0 >/dev/null 2>"$tmp/err"
grep -q "prompt 1 tokens" "$tmp/err"; check "generate, Llama 2: an empty prompt starts from <s>" $?
expect 2 "empty prompt and no BOS token to start from" "$Q" generate --model "$tmp/qwen2" --prompt ""
# the greedy continuation of "Hello" is "o" (id 319) three times: naming it the EOS stops at once
cp -r "$tmp/llama2" "$tmp/eos-tok" && sed -i 's#"eos_token": "</s>"#"eos_token": "o"#' "$tmp/eos-tok/tokenizer_config.json"
"$Q" generate --model "$tmp/eos-tok" --prompt "Hello" --max-new-tokens 3 --temperature 0 >"$tmp/out" 2>"$tmp/err"
grep -q "generated 0 tokens" "$tmp/err" && [ "$(cat "$tmp/out")" = Hello ]
check "generate stops at tokenizer_config.json's eos_token" $?
cp -r "$tmp/llama2" "$tmp/eos-cfg" && sed -i 's#"eos_token_id":.*#"eos_token_id": 319,#' "$tmp/eos-cfg/config.json"
"$Q" generate --model "$tmp/eos-cfg" --prompt "Hello" --max-new-tokens 3 --temperature 0 >/dev/null 2>"$tmp/err"
grep -q "generated 0 tokens" "$tmp/err"; check "generate stops at config.json's eos_token_id" $?

# hostile tokenizer files in a model folder: exit 2, one line naming the file and the field
hostile() {  # hostile NAME FILE CONTENT-COMMAND PHRASE
    rm -rf "$tmp/h-$1" && cp -r "$tmp/llama2" "$tmp/h-$1" && (cd "$tmp/h-$1" && eval "$3")
    expect 2 "$tmp/h-$1/$2$4" "$Q" eval --model "$tmp/h-$1" --text "$tmp/hw.txt"
}
hostile trunc tokenizer.json 'head -c 1000 '"$PWD/$T"'/tok_llama2/tokenizer.json >tokenizer.json' ": invalid JSON at byte 999"
hostile wordpiece tokenizer.json "sed -i 's/\"type\": \"BPE\"/\"type\": \"WordPiece\"/' tokenizer.json" \
    ": model.type: unsupported 'WordPiece' (supported: BPE)"
hostile roberta tokenizer.json "sed -i 's/\"type\": \"TemplateProcessing\"/\"type\": \"RobertaProcessing\"/' tokenizer.json" \
    ": post_processor.type: unsupported 'RobertaProcessing'"
hostile dir tokenizer.json "rm tokenizer.json && mkdir tokenizer.json" ": expected a regular file, found a directory"
hostile eosname tokenizer_config.json "printf '{\"eos_token\": \"<nope>\"}' >tokenizer_config.json" \
    ": eos_token: '<nope>' is not a token of the tokenizer"
hostile eosnum tokenizer_config.json "printf '{\"eos_token\": 5}' >tokenizer_config.json" \
    ": eos_token: expected a string or {\"content\": string}, found a number"
hostile bosobj tokenizer_config.json "printf '{\"bos_token\": {\"content\": 1}}' >tokenizer_config.json" \
    ": bos_token: expected a string or {\"content\": string}"
hostile array tokenizer_config.json "printf '[]' >tokenizer_config.json" ": expected a JSON object"
hostile dupkey tokenizer_config.json "printf '{\"eos_token\": \"</s>\", \"eos_token\": \"<s>\"}' >tokenizer_config.json" \
    ": key 'eos_token' appears twice"
hostile fifo tokenizer_config.json "rm tokenizer_config.json && mkfifo tokenizer_config.json" \
    ": expected a regular file, found a FIFO"
hostile vocab tokenizer.json "sed -i 's/\"vocab_size\":.*/\"vocab_size\": 500,/' config.json" \
    ": 561 tokens, but $tmp/h-vocab/config.json has vocab_size 500 (tokenizer and model do not belong together)"
rm -rf "$tmp/none" && cp -r "$tmp/llama2" "$tmp/none" && rm "$tmp/none/tokenizer.json" "$tmp/none/tokenizer_config.json"
expect 2 "$tmp/none: no tokenizer: expected tokenizer.json, or vocab.json and merges.txt" \
    "$Q" eval --model "$tmp/none" --text "$tmp/hw.txt"
expect 2 "$tmp/none: no tokenizer" "$Q" tokenize --model "$tmp/none" x
expect 2 "$tmp/h-eosname/tokenizer_config.json: eos_token" "$Q" generate --model "$tmp/h-eosname" --prompt x
expect 2 "$tmp/h-wordpiece/tokenizer.json: model.type" "$Q" tokenize --model "$tmp/h-wordpiece" x

# text a tokenizer.json model cannot take (invalid UTF-8): exit 2 naming the text, the line and field
printf 'ab\377' >"$tmp/bad.txt"
expect 2 "$tmp/bad.txt: byte 2 is not valid UTF-8" "$Q" eval --model "$tmp/llama2" --text "$tmp/bad.txt"
expect 2 "$tmp/bad.txt: byte 2 is not valid UTF-8" "$Q" eval --model "$tmp/llama2" --data "$tmp/bad.txt"
expect 2 "$tmp/bad.txt: byte 2 is not valid UTF-8" "$Q" tokenize --model "$tmp/smollm2" --file "$tmp/bad.txt"
expect 2 "--prompt: byte 1 is not valid UTF-8" "$Q" generate --model "$tmp/qwen2" --prompt "$(printf 'a\377')"
printf '{"text": "fine"}\n{"prompt": "a", "completion": "b\377"}\n' >"$tmp/bad.jsonl"
expect 2 "$tmp/bad.jsonl:2: \"completion\": byte 1 is not valid UTF-8" "$Q" eval --model "$tmp/llama2" --data "$tmp/bad.jsonl"
# a GPT-2 folder still takes any bytes
[ "$("$Q" tokenize --model tests/ref/tiny --file "$tmp/bad.txt")" = "97 98 255" ]; check "GPT-2 tokenizes invalid UTF-8 as bytes" $?
finish test_tokenizer_cli.sh
