// test_llama_train.c: `qlora train` on a LLaMA-family model follows PyTorch's AdamW
// trajectories step by step (issue 15). tests/ref/llama/train_ref.json holds the per-step
// losses and pre-clipping gradient norms of 12 LoRA steps (from the PEFT adapter
// llama_tied_lora, lr 5e-3) and 6 full fine-tuning steps (lr 1e-3) of llama_tied, made by
// transformers + PEFT + torch.optim.AdamW with qlora's batching (micro-batch 2, accumulation
// 2, linear warm-up 2, weight decay 0.01 except norms, betas 0.9/0.99, eps 1e-6, clipping 1.0;
// tests/make_llama_fixtures.py). Runs the real binary ($QLORA or ./qlora).
#include <stdlib.h>

#include "test.h"
#include "test_metrics.h"

// The bound. Both sides are fp32 with different summation orders: measured
// differences are below 3e-7 relative after 12 steps; a wrong decay group, warm-up or
// clipping moves a step's loss by 1e-3 or more.
#define TOL_TRAJECTORY_RTOL 1e-4

static const char *REF = "tests/ref/llama/train_ref.json";

int main(void) {
    const char *Q = getenv("QLORA") ? getenv("QLORA") : "./qlora";
    char tmp[] = "/tmp/qlora-test-llama-train-XXXXXX";
    CHECK(mkdtemp(tmp));
    // the fixture model with a byte-level tokenizer (the data is pre-tokenized: input_ids)
    EXPECT(test_sh("cp -r tests/ref/llama/llama_tied %s/model && %s init --preset tiny --out %s/tok >/dev/null && "
                   "cp %s/tok/vocab.json %s/tok/merges.txt %s/model/", tmp, Q, tmp, tmp, tmp, tmp) == 0,
           "prepare the model folder");
    FILE *f = fopen(strcat(strcpy((char[600]){0}, tmp), "/job.yaml"), "w");
    CHECK(f);
    fprintf(f, "base_model: %s/model\ndataset: tests/ref/llama/train_data.jsonl\ndataset_format: jsonl\n"
               "method: lora\nlora_model_dir: tests/ref/llama/llama_tied_lora\nlora_dropout: 0.0\n"
               "micro_batch_size: 2\ngradient_accumulation_steps: 2\nmax_steps: 12\nlearning_rate: 0.005\n"
               "lr_scheduler: linear\nwarmup_steps: 2\nweight_decay: 0.01\nadam_beta1: 0.9\nadam_beta2: 0.99\n"
               "adam_epsilon: 1e-6\nmax_grad_norm: 1.0\nshuffle: false\nsequence_len: 32\nsave_steps: 0\n"
               "logging_steps: 1\n", tmp);
    fclose(f);
    EXPECT(test_sh("%s train %s/job.yaml --set output_dir=%s/lora > %s/lora.log 2>&1", Q, tmp, tmp, tmp) == 0,
           "train lora on llama_tied");
    char dir[700];
    snprintf(dir, sizeof dir, "%s/lora", tmp);
    expect_trajectory("LoRA 12 steps", dir, "loss", REF, "lora", "losses", 12, TOL_TRAJECTORY_RTOL);
    expect_trajectory("LoRA 12 steps", dir, "grad_norm", REF, "lora", "grad_norms", 12, TOL_TRAJECTORY_RTOL);
    EXPECT(test_sh("%s train %s/job.yaml --set method=full --set lora_model_dir= --set learning_rate=0.001 "
                   "--set max_steps=6 --set output_dir=%s/full > %s/full.log 2>&1", Q, tmp, tmp, tmp) == 0,
           "train full on llama_tied");
    snprintf(dir, sizeof dir, "%s/full", tmp);
    expect_trajectory("full 6 steps", dir, "loss", REF, "full", "losses", 6, TOL_TRAJECTORY_RTOL);
    expect_trajectory("full 6 steps", dir, "grad_norm", REF, "full", "grad_norms", 6, TOL_TRAJECTORY_RTOL);
    test_sh("rm -rf %s", tmp);
    return test_summary("test_llama_train");
}
