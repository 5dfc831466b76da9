#!/bin/sh
# Memory check for the largest GPT-2: write a random gpt2-xl (1.56 B parameters, a 6.2 GB
# F32 model.safetensors) with `qlora init`, then `qlora eval --quant nf4` a short text and
# report its peak RSS next to the file size. Slow (minutes) and disk-hungry: not part of
# `make test`. Usage: scripts/memory-xl.sh [DIR] (default /tmp/qlora-gpt2-xl).
set -eu
Q="$(dirname "$0")/../qlora"
DIR="${1:-/tmp/qlora-gpt2-xl}"
[ -f "$DIR/model.safetensors" ] || "$Q" init --preset gpt2-xl --out "$DIR" --force
printf 'QLoRA keeps the frozen base model in four bits.\n' >"$DIR/short.txt"
for quant in nf4 none; do
    /usr/bin/time -f "max_rss_kib=%M wall_s=%e" "$Q" eval --model "$DIR" --quant "$quant" \
        --text "$DIR/short.txt" 2>"$DIR/eval-$quant.log" | tail -n 1
    grep -E "^weights:|max_rss_kib" "$DIR/eval-$quant.log"
done
ls -l "$DIR/model.safetensors" | awk '{printf "model.safetensors: %d bytes (%.2f GiB)\n", $5, $5 / 1073741824}'
