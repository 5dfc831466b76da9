#!/bin/sh
# make compare: the same job (configs/compare-methods.yaml) with method full, lora and
# qlora, side by side: held-out loss, speed, trainable parameters and peak memory.
set -eu
cd "$(dirname "$0")/.."
Q=./qlora
rm -rf out/compare
printf '%-7s %12s %12s %12s %14s\n' method eval_loss tokens/s peak_RSS_MiB trainable
for m in full lora qlora; do
    lr=0.002
    [ "$m" = full ] && lr=0.0005
    $Q train configs/compare-methods.yaml --set method=$m --set learning_rate=$lr \
        --set output_dir=out/compare/$m >out/compare-$m.log 2>&1 || { echo "$m failed: see out/compare-$m.log"; exit 1; }
    done_line=$(grep '^done:' out/compare-$m.log)
    eval_loss=$(echo "$done_line" | sed 's/.*final eval_loss \([0-9.]*\).*/\1/')
    tps=$(echo "$done_line" | sed 's/.*(\([0-9]*\) tokens\/s).*/\1/')
    rss=$(echo "$done_line" | sed 's/.*peak RSS \([0-9.]*\) MiB.*/\1/')
    trainable=$(sed -n 's/^trainable: \([0-9]*\) parameters.*/\1/p' out/compare-$m.log)
    printf '%-7s %12s %12s %12s %14s\n' "$m" "$eval_loss" "$tps" "$rss" "$trainable"
done
mv out/compare-*.log out/compare/ 2>/dev/null || true
echo "logs and outputs: out/compare/"
