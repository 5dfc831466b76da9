#!/bin/sh
# valgrind.sh BINARY: memcheck on short real runs (training with dropout and a checkpoint,
# resume, eval with an adapter, generation, quantize/dequantize, GGUF export); fails on any memory
# error or definite leak.
set -u
Q=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
VG="valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite --show-leak-kinds=definite"
export OMP_NUM_THREADS=2
status=0
run() {
    if $VG "$@" >"$tmp/out" 2>"$tmp/err"; then echo "valgrind ok: $*" | cut -c1-120
    else status=1; echo "valgrind FAILED: $*"; tail -n 30 "$tmp/err"; fi
}
run "$Q" train configs/demo.yaml --check
cat >"$tmp/job.yaml" <<YAML
base_model: tests/ref/tiny
dataset: tests/ref/train_data.jsonl
lora_dropout: 0.1
micro_batch_size: 2
max_steps: 2
save_steps: 1
sequence_len: 32
val_set_size: 2
YAML
run "$Q" train "$tmp/job.yaml" --set output_dir="$tmp/out1"
run "$Q" train "$tmp/job.yaml" --set output_dir="$tmp/out1" --set max_steps=3 --set resume_from_checkpoint=latest
run "$Q" train "$tmp/job.yaml" --set output_dir="$tmp/out2" --set method=full --set max_steps=1
run "$Q" eval --model tests/ref/tiny --adapter tests/ref/peft --data tests/ref/train_data.jsonl
run "$Q" generate --model tests/ref/tiny --adapter tests/ref/peft --prompt "The" --max-new-tokens 8
run "$Q" quantize tests/data/small.safetensors "$tmp/q.safetensors"
run "$Q" dequantize "$tmp/q.safetensors" "$tmp/d.safetensors"
run "$Q" explain --model tests/ref/tiny --job "$tmp/job.yaml" --steps 1 --out "$tmp/explain"
run "$Q" export-gguf --model tests/ref/tiny --adapter tests/ref/peft --out "$tmp/m.gguf" --type q8_0
run "$Q" export-gguf --model tests/ref/tiny --adapter tests/ref/peft --out "$tmp/a.gguf" --adapter-only --type f16
exit $status
