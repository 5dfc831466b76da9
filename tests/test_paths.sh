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

# ---- what the system refuses: one line that keeps its reason ----------------------------------
expect 2 "/config.json: cannot open: File name too long" "$Q" eval --model "$deep/model" --text README.md
grep -q "bytes left out ...\]" "$tmp/err"
check "a message longer than qlora's error buffer keeps its start and end and says what it left out" $?
expect 2 "cannot create folder: File name too long" "$Q" merge --model tests/ref/tiny --adapter tests/ref/lora_init \
    --out "$deep/merged"

finish test_paths.sh
