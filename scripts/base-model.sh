#!/bin/sh
# make base-model: rebuild the demo's base model from scratch.
#  1. the corpus: the King James Bible from Debian's bible-kjv package (public domain),
#     verse references stripped -> build/corpus/kjv.txt (not committed);
#  2. a random 4-layer, 192-wide byte-level GPT-2 from `qlora init` (seed 1234);
#  3. `qlora train configs/pretrain-base.yaml` (method full, ~4 minutes on 2 cores);
#  4. copy the result to data/base-model/ and compare its held-out eval_loss with the
#     committed model's (the run is deterministic for a given thread count and matrix-
#     product engine; the check allows 5%).
set -eu
cd "$(dirname "$0")/.."
Q=./qlora
mkdir -p build/corpus
if [ ! -s build/corpus/kjv.txt ]; then
    echo "base-model: extracting the King James Bible from Debian's bible-kjv package"
    bible -f "gen1:1-rev22:21" | sed -E 's/^[0-9]?[A-Za-z]+[0-9]+:[0-9]+ //' >build/corpus/kjv.txt.tmp
    mv build/corpus/kjv.txt.tmp build/corpus/kjv.txt
fi
echo "base-model: corpus $(wc -c <build/corpus/kjv.txt) bytes"
rm -rf build/base-init build/base-model
$Q init --preset tiny --n-layer 4 --n-embd 192 --n-head 4 --n-positions 256 --seed 1234 --out build/base-init
$Q train configs/pretrain-base.yaml
new=$(sed -n 's/.*"eval_loss": \([0-9.]*\).*/\1/p' build/base-model/metrics.jsonl | tail -n 1)
old=$(sed -n 's/.*"eval_loss": \([0-9.]*\).*/\1/p' data/base-model/metrics.jsonl 2>/dev/null | tail -n 1)
for f in model.safetensors config.json vocab.json merges.txt metrics.jsonl; do
    cp build/base-model/$f data/base-model/$f.tmp && mv data/base-model/$f.tmp data/base-model/$f
done
echo "base-model: held-out eval_loss $new (committed model: ${old:-none})"
if [ -n "$old" ]; then
    awk -v a="$new" -v b="$old" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d;
        printf "base-model: relative difference %.2f%% (limit 5%%)\n", 100 * d; exit d > 0.05 }'
fi
