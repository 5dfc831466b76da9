#!/bin/sh
# make memory-report: the memory savings of QLoRA, measured. The same short job (a
# GPT-2-small-shaped model from `qlora init`, micro-batch 4 x 256 tokens, 2 steps) with
# method full, lora, qlora nf4 and qlora nf4 + double quant; for each, the trainer's
# allocation account by category and the process's peak RSS (from /usr/bin/time or
# getrusage). Writes docs/memory.md and docs/memory.svg.
set -eu
cd "$(dirname "$0")/.."
Q=./qlora
W=build/memory-report
mkdir -p "$W"
[ -f "$W/gpt2/model.safetensors" ] || $Q init --preset gpt2 --out "$W/gpt2" --seed 7 --force >/dev/null
# data: the demo's forecasts as plain text (bytes are valid ids of the byte-level vocab)
sed 's/.*"prompt": "\([^"]*\)", "completion": "\([^"]*\)".*/\1\2/' data/demo/train.jsonl >"$W/text.txt"
cat >"$W/job.yaml" <<YAML
base_model: $W/gpt2
dataset: $W/text.txt
dataset_format: text
sequence_len: 256
micro_batch_size: 4
max_steps: 2
lora_r: 8
lora_alpha: 16
lora_target_modules: [c_attn, c_proj, c_fc]
logging_steps: 1
YAML
rows=""
for m in "full:--set method=full" "lora:--set method=lora" "qlora-nf4:--set method=qlora --set double_quant=false" \
         "qlora-nf4-dq:--set method=qlora --set double_quant=true" \
         "qlora-dq-ckpt:--set method=qlora --set double_quant=true --set gradient_checkpointing=true"; do
    name=${m%%:*}
    # REUSE=1 rebuilds the report from the logs of an earlier run
    if [ -z "${REUSE:-}" ] || [ ! -s "$W/$name.log" ]; then
        # shellcheck disable=SC2086
        $Q train "$W/job.yaml" --set output_dir="$W/out-$name" ${m#*:} >"$W/$name.log" 2>&1
    fi
    acct() { grep "memory account.*: $1 " "$W/$name.log" | awk '{print $(NF-1)}'; }
    total=$(grep "memory account.*total" "$W/$name.log" | awk '{print $(NF-6)}')
    pred=$(grep "memory account.*total" "$W/$name.log" | awk '{print $(NF-5)}')
    rss=$(grep "memory account.*total" "$W/$name.log" | sed 's/.*peak RSS \([0-9.]*\) MiB.*/\1/')
    tps=$(grep '^done:' "$W/$name.log" | sed 's/.*(\([0-9]*\) tokens\/s).*/\1/')
    rows="$rows$name $(acct "frozen weights") $(acct "quant constants") $(acct trainable) $(acct gradients) $(acct optimizer) $(acct activations) $total $pred $rss $tps
"
    echo "memory-report: $name done (peak RSS $rss MiB)"
done
date=$(date -u +%Y-%m-%d)
# the hand-written part of docs/memory.md (the formulas, from its "## The formulas" heading on)
# is kept as it is; only the measurements above it are rewritten
sed -n '/^## The formulas/,$p' docs/memory.md >"$W/formulas.md"
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
{
    echo "# Memory: QLoRA's savings, measured"
    echo
    echo "Produced by \`make memory-report\` on $date: $(nproc) cores of an $cpu, $(free -g | awk '/Mem:/ {print $2}') GiB."
    echo "The same job for every method: a GPT-2-small-shaped model (124 M parameters, from"
    echo "\`qlora init --preset gpt2\`), micro-batch 4 x 256 tokens, LoRA r=8 on all linear layers,"
    echo "2 optimizer steps. \"allocated\" is the trainer's own account of the buffers it allocated, by"
    echo "category (MiB); \"predicted\" is \`qlora memory\` for the same job; peak RSS is the whole"
    echo "process (including the tokenizer, data, OpenBLAS buffers and the C library)."
    echo
    echo "| method | frozen weights | quant constants | trainable | gradients | AdamW state | activations | allocated total | predicted total | peak RSS | tokens/s |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    echo "$rows" | awk 'NF { printf "| %s | %.1f | %.2f | %.1f | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %s |\n",
        $1, $2/1048576, $3/1048576, $4/1048576, $5/1048576, $6/1048576, $7/1048576, $8/1048576, $9/1048576, $10, $11 }'
    echo
    echo "![stacked bars of the allocation account per method](memory.svg)"
    echo
    echo "Reading it: full fine-tuning pays 16 bytes per parameter (weights, gradients and two AdamW"
    echo "moments); LoRA freezes the fp32 weights and trains 1.2 M parameters; QLoRA stores the 85 M"
    echo "block-linear weights in 4 bits (4.5 with fp32 block scales, 4.127 with double quantization)."
    echo "The embeddings (38.6 M parameters, tied with the output layer) stay fp32 in every method, as"
    echo "bitsandbytes and transformers keep them, so for a model this small they dominate what is"
    echo "left; \`qlora memory --preset llama-65b\` shows the same accounting at paper scale. With"
    echo "gradient checkpointing (last row) only each block's input is kept and one block is"
    echo "recomputed at a time during the backward, which shrinks the activations the most."
    if [ -s "$W/formulas.md" ]; then echo; cat "$W/formulas.md"; fi
} >docs/memory.md
# stacked bars (MiB) with awk
echo "$rows" | awk -v out=docs/memory.svg 'NF {
        n++; name[n] = $1; for (k = 2; k <= 7; k++) v[n, k] = $k / 1048576; rss[n] = $10
        t = 0; for (k = 2; k <= 7; k++) t += v[n, k]; if (t > top) top = t; if (rss[n] > top) top = rss[n]
    }
    END {
        W = 760; H = 420; x0 = 80; y0 = 50; pw = W - 260; ph = H - 110; top *= 1.1
        split("#1f77b4 #9ecae1 #ff7f0e #2ca02c #98df8a #9467bd", col, " ")
        split("frozen weights|quant constants|trainable|gradients|AdamW state|activations", lab, "|")
        printf "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" font-family=\"sans-serif\">\n", W, H > out
        printf "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%d\" y=\"25\" font-size=\"15\" text-anchor=\"middle\">Fine-tuning a 124 M GPT-2: allocated MiB by category, and peak RSS</text>\n", W / 2 >> out
        for (g = 0; g <= 4; g++) { y = y0 + ph - g * ph / 4; printf "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#e5e5e5\"/><text x=\"%d\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">%.0f</text>\n", x0, y, x0 + pw, y, x0 - 6, y + 4, g * top / 4 >> out }
        bw = pw / n
        for (i = 1; i <= n; i++) {
            base = 0; x = x0 + (i - 1) * bw + bw * 0.15
            for (k = 2; k <= 7; k++) { h = v[i, k] / top * ph; printf "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"/>\n", x, y0 + ph - base - h, bw * 0.7, h, col[k - 1] >> out; base += h }
            yr = y0 + ph - rss[i] / top * ph
            printf "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/>\n", x - 4, yr, x + bw * 0.7 + 4, yr >> out
            printf "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n", x + bw * 0.35, y0 + ph + 18, name[i] >> out
        }
        for (k = 1; k <= 6; k++) printf "<rect x=\"%d\" y=\"%d\" width=\"12\" height=\"12\" fill=\"%s\"/><text x=\"%d\" y=\"%d\" font-size=\"12\">%s</text>\n", x0 + pw + 25, y0 + 20 * k, col[k], x0 + pw + 42, y0 + 20 * k + 10, lab[k] >> out
        printf "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/><text x=\"%d\" y=\"%d\" font-size=\"12\">peak RSS</text>\n", x0 + pw + 25, y0 + 146, x0 + pw + 37, y0 + 146, x0 + pw + 42, y0 + 150 >> out
        print "</svg>" >> out
    }'
echo "wrote docs/memory.md and docs/memory.svg"
