#!/bin/sh
# test_kill.sh: a training run killed at 20 random moments (SIGKILL and SIGTERM in turn)
# always leaves a newest complete checkpoint that resumes to exactly the losses and the
# adapter of an uninterrupted run. SIGTERM must also checkpoint and exit 143.
set -u
. tests/lib.sh
cat >"$tmp/job.yaml" <<YAML
base_model: tests/ref/tiny
dataset: tests/ref/train_data.jsonl
method: qlora
lora_dropout: 0.1
shuffle: true
micro_batch_size: 1
max_steps: 60
save_steps: 1
learning_rate: 0.003
sequence_len: 32
seed: 3
YAML
losses() { sed -n 's/^{"step": \([0-9]*\), "epoch": [0-9.]*, "loss": \([0-9.]*\).*/\1 \2/p' "$1/metrics.jsonl"; }
t0=$(date +%s%N)
"$Q" train "$tmp/job.yaml" --set output_dir="$tmp/ref" >/dev/null 2>&1
check "uninterrupted reference run" $?
t1=$(date +%s%N)
ref_ms=$(( (t1 - t0) / 1000000 ))
echo "reference run: ${ref_ms} ms; kills land at random points within it"
losses "$tmp/ref" >"$tmp/ref.losses"
[ "$(wc -l <"$tmp/ref.losses")" -eq 60 ]; check "reference logged 60 steps" $?
# a kill during a resume's set-up (widened by a test-only delay right after metrics.jsonl
# is reopened) keeps every logged step: the history is replaced by a rename, never truncated
d="$tmp/setupkill"
cp -r "$tmp/ref" "$d"
for n in $(seq 31 60); do rm -rf "$d/checkpoint-$n"; done
rm -f "$d/adapter_model.safetensors"
QLORA_TEST_DELAY=setup:5000 "$Q" train "$tmp/job.yaml" --set output_dir="$d" --set resume_from_checkpoint=latest >/dev/null 2>&1 &
pid=$!
sleep 1
kill -s KILL "$pid" 2>/dev/null
wait "$pid"
[ "$(losses "$d" | wc -l)" -eq 30 ]; check "a kill during resume set-up keeps metrics.jsonl's 30 logged steps" $?
"$Q" train "$tmp/job.yaml" --set output_dir="$d" --set resume_from_checkpoint=latest >/dev/null 2>&1
losses "$d" >"$tmp/setupkill.losses"
cmp -s "$tmp/ref.losses" "$tmp/setupkill.losses" && cmp -s "$tmp/ref/adapter_model.safetensors" "$d/adapter_model.safetensors"
check "and the resumed run has every step's loss and the reference adapter" $?
# a kill while checkpoint-31 is being replaced (a resume from checkpoint-30 saves step 31
# again; a test-only delay after the old copy is moved aside) loses neither copy: the next
# start recovers checkpoint-31 and resumes from it
d="$tmp/replacekill"
cp -r "$tmp/ref" "$d"
for n in $(seq 32 60); do rm -rf "$d/checkpoint-$n"; done
rm -f "$d/adapter_model.safetensors"
QLORA_TEST_DELAY=replace:5000 "$Q" train "$tmp/job.yaml" --set output_dir="$d" --set resume_from_checkpoint="$d/checkpoint-30" >/dev/null 2>&1 &
pid=$!
# kill inside the delay, once the old copy has been moved aside (polled, not a fixed sleep:
# on a loaded machine the resume may take longer than any fixed time to get there)
for _ in $(seq 600); do
    ls -d "$d"/checkpoint-31.old-* >/dev/null 2>&1 && break
    sleep 0.1
done
kill -s KILL "$pid" 2>/dev/null
wait "$pid"
"$Q" train "$tmp/job.yaml" --set output_dir="$d" --set resume_from_checkpoint=latest >"$tmp/replacekill.log" 2>&1
grep -q "resuming from $d/checkpoint-31 " "$tmp/replacekill.log"; check "a kill during a checkpoint replacement: the next start resumes from the recovered checkpoint-31" $?
losses "$d" >"$tmp/replacekill.losses"
cmp -s "$tmp/ref.losses" "$tmp/replacekill.losses" && cmp -s "$tmp/ref/adapter_model.safetensors" "$d/adapter_model.safetensors"
check "and ends with the reference losses and adapter" $?
ls -d "$d"/checkpoint-*.old-* "$d"/checkpoint-*.tmp-* >/dev/null 2>&1
[ $? -ne 0 ]; check "and no .old/.tmp folder is left" $?
# SIGTERM during set-up (widened by the test-only delay) is not lost: the first step
# finishes, a checkpoint is written and the resume command printed, exit 143
d="$tmp/setupterm"
QLORA_TEST_DELAY=setup:3000 "$Q" train "$tmp/job.yaml" --set output_dir="$d" >"$tmp/setupterm.log" 2>&1 &
pid=$!
sleep 1
kill -s TERM "$pid" 2>/dev/null
wait "$pid"
rc=$?
[ $rc -eq 143 ] && [ -d "$d/checkpoint-1" ] && grep -qF -- "--set 'resume_from_checkpoint=$d/checkpoint-1'" "$tmp/setupterm.log"
check "SIGTERM during set-up: step 1 is checkpointed and the resume command printed (rc $rc)" $?

# a second run into an output_dir that a running job holds is refused (exit 1), and the
# first run is unaffected
d="$tmp/locked"
QLORA_TEST_DELAY=setup:4000 "$Q" train "$tmp/job.yaml" --set output_dir="$d" --set max_steps=2 >/dev/null 2>&1 &
pid=$!
sleep 1
expect 1 "in use by another run (pid $pid)" "$Q" train "$tmp/job.yaml" --set output_dir="$d"
wait "$pid"
check "the first run, holding the lock, completes" $?
seed=12345
for i in $(seq 1 20); do
    seed=$(( (seed * 1103515245 + 12345) % 2147483648 ))
    delay=$(awk -v s="$seed" -v ms="$ref_ms" 'BEGIN { printf "%.3f", (0.02 + 0.9 * (s % 1000) / 1000) * ms / 1000 }')
    sig=KILL
    [ $((i % 2)) -eq 0 ] && sig=TERM
    d="$tmp/run$i"
    "$Q" train "$tmp/job.yaml" --set output_dir="$d" >"$tmp/log$i" 2>&1 &
    pid=$!
    sleep "$delay"
    kill -s "$sig" "$pid" 2>/dev/null
    wait "$pid"
    rc=$?
    if [ "$sig" = TERM ] && [ $rc -ne 0 ]; then
        [ $rc -eq 143 ] && grep -qF -- "--set 'output_dir=$d' --set 'resume_from_checkpoint=$d/checkpoint-" "$tmp/log$i"
        check "kill $i: SIGTERM exits 143 and prints how to resume, --set overrides included (rc $rc)" $?
    fi
    # every step up to the newest checkpoint is already in metrics.jsonl (logged and flushed
    # before the checkpoint is written), whatever moment the kill hit
    newest=$(ls -d "$d"/checkpoint-[0-9]* 2>/dev/null | sed 's/.*checkpoint-//' | grep -E '^[0-9]+$' | sort -n | tail -n 1)
    if [ -n "$newest" ]; then
        [ "$(losses "$d" | awk -v n="$newest" '$1 <= n' | wc -l)" -eq "$newest" ]
        check "kill $i: metrics.jsonl holds every step up to checkpoint-$newest" $?
    fi
    # resume from the newest complete checkpoint until the job finishes
    n=0
    while [ $n -lt 3 ]; do
        if ls -d "$d"/checkpoint-[0-9]* >/dev/null 2>&1; then
            "$Q" train "$tmp/job.yaml" --set output_dir="$d" --set resume_from_checkpoint=latest >>"$tmp/log$i" 2>&1 && break
        else
            "$Q" train "$tmp/job.yaml" --set output_dir="$d" >>"$tmp/log$i" 2>&1 && break
        fi
        n=$((n + 1))
    done
    losses "$d" >"$tmp/run$i.losses"
    cmp -s "$tmp/ref.losses" "$tmp/run$i.losses" && cmp -s "$tmp/ref/adapter_model.safetensors" "$d/adapter_model.safetensors"
    check "kill $i (SIG$sig after ${delay}s): resumed run has the reference losses and adapter" $?
    ls -d "$d"/checkpoint-*.tmp-* >/dev/null 2>&1
    [ $? -ne 0 ]; check "kill $i: no half-written checkpoint left behind" $?
done
finish test_kill.sh
