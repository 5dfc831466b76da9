#!/bin/sh
# test_paths.sh: long paths. qlora holds no path in a fixed-size buffer: a path the system
# takes works however long the folder it leads to is, and one the system refuses (longer than
# PATH_MAX, 4096 bytes on Linux) gets a one-line error that still names the reason, exit 2.
# The folders are 17 components of 250 bytes below $tmp (over 4,250 bytes); a system call
# takes at most PATH_MAX bytes, so the commands that reach them run inside ($in_deep) with
# short relative paths.
set -u
. tests/lib.sh
case "$Q" in /*) ;; *) Q="$PWD/$Q" ;; esac
repo=$PWD
seg=$(printf '%0250d' 0 | tr 0 p)  # one component (NAME_MAX is 255)
DEPTH=17
deep=$tmp
i=0
while [ "$i" -lt "$DEPTH" ]; do deep="$deep/$seg"; i=$((i + 1)); done
mkdir -p "$deep"
[ "${#deep}" -gt 4096 ]
check "the deep folder's path is longer than PATH_MAX (${#deep} bytes)" $?

# in_deep CMD...: run CMD in $deep, entered a component at a time (chdir takes PATH_MAX bytes;
# -P: dash would chdir to the whole logical path).
in_deep() {
    (
        cd "$tmp" || exit 99
        i=0
        while [ "$i" -lt "$DEPTH" ]; do cd -P "$seg" || exit 99; i=$((i + 1)); done
        "$@"
    )
}
in_deep cp -r "$repo/tests/ref/tiny" model
in_deep cp "$repo/tests/ref/train_data.jsonl" data.jsonl
in_deep sh -c 'printf "base_model: model\ndataset: data.jsonl\nmax_steps: 2\nsequence_len: 32\nsave_steps: 1\n" >job.yaml'

# ---- what the system takes: short relative paths to a folder whose full path is long --------
in_deep "$Q" eval --model model --text data.jsonl >"$tmp/out" 2>&1 && grep -q '^loss=' "$tmp/out"
check "eval --model with a relative path into a folder ${#deep} bytes deep: $(tail -n 1 "$tmp/out")" $?
# An output inside an input is found by comparing resolved paths, which are longer than
# PATH_MAX here: still refused
expect 2 "output_dir 'model/out' is inside base_model 'model'" in_deep "$Q" train job.yaml --set output_dir=model/out
in_deep test ! -e model/out
check "the refused output_dir inside the model folder was not created" $?
expect 2 "OUT 'model/model.safetensors' is IN 'model/model.safetensors'" \
    in_deep "$Q" quantize model/model.safetensors model/model.safetensors

# A job's paths longer than the 1,023 bytes the job once held: base_model, dataset and output_dir
# about 2,300 bytes long, written whole into the checkpoint's job.yaml
mid="$tmp/mid"
i=0
while [ "$i" -lt 9 ]; do mid="$mid/$seg"; i=$((i + 1)); done
mkdir -p "$mid" && cp -r tests/ref/tiny "$mid/model" && cp tests/ref/train_data.jsonl "$mid/data.jsonl"
printf 'base_model: tests/ref/tiny\ndataset: tests/ref/train_data.jsonl\nmax_steps: 2\nsequence_len: 32\nsave_steps: 1\n' >"$tmp/job.yaml"
"$Q" train "$tmp/job.yaml" --set base_model="$mid/model" --set dataset="$mid/data.jsonl" --set output_dir="$mid/out" \
    >"$tmp/out" 2>&1 && [ -s "$mid/out/adapter_model.safetensors" ] &&
    grep -qxF "base_model: \"$mid/model\"" "$mid/out/checkpoint-2/job.yaml" &&
    grep -qxF "output_dir: \"$mid/out\"" "$mid/out/checkpoint-2/job.yaml"
check "train with base_model, dataset and output_dir of ${#mid}+ bytes: $(tail -n 1 "$tmp/out" | cut -c1-80)" $?
grep -qF "\"base_model_name_or_path\":	\"$mid/model\"" "$mid/out/adapter_config.json"
check "adapter_config.json names the whole base_model path (${#mid}+ bytes)" $?
"$Q" train "$tmp/job.yaml" --set base_model="$mid/model" --set dataset="$mid/data.jsonl" --set output_dir="$mid/out" \
    --set max_steps=3 --set resume_from_checkpoint="$mid/out/checkpoint-1" >"$tmp/out" 2>&1 &&
    grep -qF "resuming from $mid/out/checkpoint-1 at step 1" "$tmp/out" && [ -d "$mid/out/checkpoint-3" ]
check "resume_from_checkpoint with a ${#mid}+ byte path: $(tail -n 1 "$tmp/out" | cut -c1-80)" $?
printf '{"prompt": "a", "completion": "b"}\n{"prompt": 1}\n' >"$mid/bad.jsonl"
expect 2 "bad.jsonl:2: \"prompt\" and \"completion\" must both be strings" \
    "$Q" train "$tmp/job.yaml" --set dataset="$mid/bad.jsonl" --set output_dir="$tmp/bad"
cp tests/bad/nan.safetensors "$mid/nan.safetensors"
expect 2 "nan.safetensors: tensor 'w': element 1 is NaN" "$Q" quantize "$mid/nan.safetensors" "$tmp/o.safetensors"
# a base_model of 512..1023 bytes, which the adapter's name field once cut to 511
short=$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$(dirname "$mid")")")")")")
cp -r tests/ref/tiny "$short/model"
"$Q" train "$tmp/job.yaml" --set base_model="$short/model" --set output_dir="$short/out" >"$tmp/out" 2>&1 &&
    grep -qF "\"base_model_name_or_path\":	\"$short/model\"" "$short/out/adapter_config.json"
check "adapter_config.json names a base_model of ${#short}+ bytes whole" $?

"$Q" memory --model "$mid/model" --format json >"$tmp/out" 2>&1 && grep -qF "{\"model\": \"$mid/model\", " "$tmp/out" &&
    "$Q" memory --model "$mid/model" >"$tmp/out" 2>&1 && grep -qF "$mid/model: " "$tmp/out"
check "memory --model names the folder by its whole path (${#mid}+ bytes), in text and JSON" $?
cp -r tests/ref/tiny "$tmp/say \"hi\""
"$Q" memory --model "$tmp/say \"hi\"" --format json >"$tmp/out" 2>&1 && grep -qF "{\"model\": \"$tmp/say \\\"hi\\\"\", " "$tmp/out"
check "memory --format json escapes a '\"' in the folder's name: $(cut -c1-60 "$tmp/out")" $?

# a run inside the deep folder, its checkpoints' full paths over PATH_MAX: saved and resumed from
in_deep "$Q" train job.yaml --set output_dir=out >"$tmp/out" 2>&1 &&
    in_deep "$Q" train job.yaml --set output_dir=out --set max_steps=3 --set resume_from_checkpoint=latest >"$tmp/out" 2>&1 &&
    grep -q "resuming from out/checkpoint-2 at step 2" "$tmp/out" && in_deep test -s out/checkpoint-3/trainer_state.json
check "train and resume latest inside the deep folder: $(tail -n 1 "$tmp/out" | cut -c1-80)" $?

# output_dir: as long as leaves room for the files a run writes in it under PATH_MAX, and no longer
# dir_of_length N: a new folder path of exactly N bytes below $tmp/len
dir_of_length() {
    p="$tmp/len"
    while [ $((${#p} + 256)) -lt "$1" ]; do p="$p/$seg"; done
    printf '%s/%s\n' "$p" "$(printf '%0*d' $(($1 - ${#p} - 1)) 0 | tr 0 q)"
}
expect 2 "(PATH_MAX); choose a shorter output_dir" "$Q" train "$tmp/job.yaml" --set output_dir="$deep/out"
grep -q "output_dir '.*': expected at most [0-9]* bytes, found $((${#deep} + 4)): the files a run writes there" "$tmp/err"
check "an output_dir longer than PATH_MAX is refused before anything is written, with the most it may be" $?
most=$(sed -n 's/.*expected at most \([0-9]*\) bytes.*/\1/p' "$tmp/err")
at_most=$(dir_of_length "${most:-4000}")
"$Q" train "$tmp/job.yaml" --set output_dir="$at_most" >"$tmp/out" 2>&1 && [ -s "$at_most/checkpoint-2/optimizer.safetensors" ] &&
    [ "${#at_most}" = "$most" ] && [ "$most" -ge 3900 ]
check "output_dir of the longest length accepted ($most bytes) trains and checkpoints: $(tail -n 1 "$tmp/out" | cut -c1-60)" $?
over=$(dir_of_length $((${most:-4000} + 1)))
expect 2 "expected at most $most bytes, found $((most + 1))" "$Q" train "$tmp/job.yaml" --set output_dir="$over"
[ ! -e "$over" ]
check "the refused output_dir was not created" $?

# ---- what the system refuses: one line that keeps its reason ----------------------------------
expect 2 "/config.json: cannot open: File name too long" "$Q" eval --model "$deep/model" --text README.md
grep -q "bytes left out ...\]" "$tmp/err"
check "a message longer than qlora's error buffer keeps its start and end and says what it left out" $?
expect 2 "/trainer_state.json: cannot open: File name too long" "$Q" train "$tmp/job.yaml" --set output_dir="$tmp/o" \
    --set resume_from_checkpoint="$deep/checkpoint-1"
expect 2 "cannot create folder: File name too long" "$Q" merge --model tests/ref/tiny --adapter tests/ref/lora_init \
    --out "$deep/merged"

finish test_paths.sh
