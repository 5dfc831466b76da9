// test_train.c: `qlora train` / `merge` / `eval --adapter` end to end through the real
// binary (path in $QLORA): per-step losses against PyTorch's torch.optim.AdamW runs
// (tests/ref/train_ref.json, made by make_train_ref.py) for LoRA and full fine-tuning,
// resume == uninterrupted, gradient checkpointing and gradient accumulation invariants,
// merge == adapter, and job-file / dataset errors with FILE:LINE messages.
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "ds.h"
#include "json.h"
#include "safetensors.h"
#include "test.h"
#include "test_metrics.h"

// fp32 training vs PyTorch's fp32 training of the same model, data and settings: the
// losses agree to ~1e-7 relative here (summation order only); the issue asks for 1e-4.
#define TOL_TRAJECTORY_RTOL 1e-4

static const char *Q;
static char tmp[] = "/tmp/qlora-test-train-XXXXXX";

static const char *JOB =
    "base_model: tests/ref/tiny\n"
    "dataset: tests/ref/train_data.jsonl\n"
    "method: lora\n"
    "lora_model_dir: tests/ref/lora_init\n"
    "lora_dropout: 0.0\n"
    "micro_batch_size: 2\n"
    "gradient_accumulation_steps: 2\n"
    "max_steps: 12\n"
    "learning_rate: 0.005\n"
    "lr_scheduler: linear\n"
    "warmup_steps: 2\n"
    "weight_decay: 0.01\n"
    "adam_beta2: 0.99\n"
    "adam_epsilon: 1e-6\n"
    "max_grad_norm: 1.0\n"
    "shuffle: false\n"
    "sequence_len: 32\n";

static void compare_trajectory(const char *name, const char *dir, const char *which) {
    expect_trajectory(name, dir, "loss", "tests/ref/train_ref.json", which, "losses", 6, TOL_TRAJECTORY_RTOL);
}

static void write_job(const char *name, const char *extra) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    FILE *f = fopen(path, "w");
    CHECK(f);
    fprintf(f, "%s%s", JOB, extra);
    fclose(f);
}

static bool same_losses(const char *a, const char *b) {
    size_t na, nb;
    double *x = metric_values(a, "loss", &na), *y = metric_values(b, "loss", &nb);
    bool same = na == nb && na > 0 && memcmp(x, y, na * sizeof(double)) == 0;
    arrfree(x);
    arrfree(y);
    return same;
}

static double eval_loss(const char *args) {
    char path[600];
    snprintf(path, sizeof path, "%s/eval.out", tmp);
    if (test_sh("%s eval %s > %s 2>/dev/null", Q, args, path) != 0) return NAN;
    char *text;
    size_t len;
    Error err = {0};
    double loss = NAN;
    if (file_read_all(path, &text, &len, &err)) {
        char *last = strstr(text, "loss=");
        if (last) loss = strtod(last + 5, NULL);
        free(text);
    }
    return loss;
}

// Overwrite in place every element of every F32 tensor of the safetensors file at path whose
// name contains `part` with x (a corrupt file whose header stays valid).
static void poison(const char *path, const char *part, float x) {
    SafeTensors st;
    Error err = {0};
    CHECK(st_open(&st, path, &err));
    FILE *f = fopen(path, "r+b");
    CHECK(f);
    for (size_t i = 0; i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        if (!strstr(t->name, part) || t->dtype != ST_F32) continue;
        CHECK(fseek(f, (long)(8 + st.header_bytes + t->begin), SEEK_SET) == 0);
        for (uint64_t k = 0; k < t->n_elements; k++) CHECK(fwrite(&x, sizeof x, 1, f) == 1);
    }
    fclose(f);
    st_close(&st);
}

// The AdamW moments of checkpoint ckpt: every exp_avg element becomes m, every exp_avg_sq v.
static void poison_moments(const char *ckpt, float m, float v) {
    char path[700];
    snprintf(path, sizeof path, "%s/optimizer.safetensors", ckpt);
    poison(path, "exp_avg.", m);
    poison(path, "exp_avg_sq.", v);
}

// The NaN guard checks the state after the update: a step whose AdamW update overflows
// (finite gradients, a corrupt finite optimizer state) stops the run, names the last
// checkpoint actually saved, and writes no checkpoint of its own; adam_epsilon 0 (0/0
// where a gradient is 0) is refused up front.
static void test_nonfinite_update(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/nan", tmp);
    EXPECT(test_sh("%s train %s/job.yaml --set max_steps=1 --set save_steps=1 --set output_dir=%s > /dev/null 2>&1",
              Q, tmp, dir) == 0, "one step with a checkpoint");
    poison_moments(strcat(strcpy((char[700]){0}, dir), "/checkpoint-1"), 3e38f, 0.0f);
    int rc = test_sh("%s train %s/job.yaml --set max_steps=3 --set save_steps=1 --set output_dir=%s "
                "--set resume_from_checkpoint=latest > /dev/null 2> %s/err", Q, tmp, dir, tmp);
    EXPECT(rc == 1 && test_sh("grep -qF 'step 2: the AdamW update made' %s/err && "
                         "grep -qF 'last good checkpoint: %s/checkpoint-1 (lower learning_rate' %s/err",
                         tmp, dir, tmp) == 0, "an overflowing update stops the run with exit 1 (status %d)", rc);
    EXPECT(test_sh("test ! -e %s/checkpoint-2 && test ! -e %s/checkpoint-3", dir, dir) == 0,
           "no checkpoint is written from a non-finite state");
    rc = test_sh("%s train %s/job.yaml --set adam_epsilon=0 --set output_dir=%s/eps0 > /dev/null 2> %s/err", Q, tmp, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'adam_epsilon: 0 is out of range [1e-30, 1]' %s/err", tmp) == 0,
           "adam_epsilon 0 is refused (status %d)", rc);
}

// Non-finite results are errors, not results: eval's loss, generate's logits (an adapter
// whose finite weights overflow), and dequantize with a NaN quant_map; an adapter whose
// lora_alpha would overflow the scale is refused when it loads.
static void test_nonfinite_results(void) {
    test_sh("mkdir -p %s/hot && cp tests/ref/peft/* %s/hot/", tmp, tmp);
    char path[700];
    snprintf(path, sizeof path, "%s/hot/adapter_model.safetensors", tmp);
    poison(path, "lora_", 1e30f);
    int rc = test_sh("%s eval --model tests/ref/tiny --adapter %s/hot --data tests/ref/train_data.jsonl > %s/out 2> %s/err",
                Q, tmp, tmp, tmp);
    EXPECT(rc == 1 && test_sh("grep -qF 'eval: the mean loss over' %s/err && ! grep -q loss= %s/out", tmp, tmp) == 0,
           "eval with a non-finite loss exits 1 and prints no loss (status %d)", rc);
    rc = test_sh("%s generate --model tests/ref/tiny --adapter %s/hot --prompt 'ab' > /dev/null 2> %s/err", Q, tmp, tmp);
    EXPECT(rc == 1 && test_sh("grep -qF 'generate: after 0 generated tokens the logit of token' %s/err", tmp) == 0,
           "generate from non-finite logits exits 1 (status %d)", rc);
    test_sh("mkdir -p %s/alpha && cp tests/ref/peft/* %s/alpha/ && sed -i 's/\"lora_alpha\": [0-9.]*/\"lora_alpha\": 1e300/' "
       "%s/alpha/adapter_config.json", tmp, tmp, tmp);
    rc = test_sh("%s eval --model tests/ref/tiny --adapter %s/alpha --data tests/ref/train_data.jsonl > /dev/null 2> %s/err",
            Q, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF '\"lora_alpha\" must be a number in [-1e6, 1e6]' %s/err", tmp) == 0,
           "lora_alpha 1e300 is refused (status %d)", rc);
    EXPECT(test_sh("%s quantize tests/data/small.safetensors %s/q.safetensors > /dev/null 2>&1", Q, tmp) == 0, "quantize");
    snprintf(path, sizeof path, "%s/q.safetensors", tmp);
    poison(path, ".quant_map", NAN);
    rc = test_sh("%s dequantize %s/q.safetensors %s/d.safetensors > /dev/null 2> %s/err", Q, tmp, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF \".quant_map': element 0 is NaN\" %s/err && test ! -e %s/d.safetensors", tmp, tmp) == 0,
           "dequantize with a NaN quant_map is refused (status %d)", rc);
}

// resume_from_checkpoint=latest takes the newest complete checkpoint folder by its own
// name: checkpoint-0002 is found, and a regular file checkpoint-100, an empty folder
// checkpoint-50 and a number beyond long (checkpoint-99999999999999999999) are passed over.
static void test_latest(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/latest", tmp);
    EXPECT(test_sh("%s train %s/job.yaml --set max_steps=2 --set save_steps=1 --set output_dir=%s > /dev/null 2>&1",
              Q, tmp, dir) == 0, "two steps with checkpoints");
    test_sh("mv %s/checkpoint-2 %s/checkpoint-0002 && touch %s/checkpoint-100 && mkdir %s/checkpoint-50 "
       "%s/checkpoint-99999999999999999999", dir, dir, dir, dir, dir);
    int rc = test_sh("%s train %s/job.yaml --set max_steps=3 --set output_dir=%s --set resume_from_checkpoint=latest "
                "> %s/out 2>&1", Q, tmp, dir, tmp);
    EXPECT(rc == 0 && test_sh("grep -qF 'resuming from %s/checkpoint-0002 at step 2' %s/out", dir, tmp) == 0,
           "latest is checkpoint-0002 (status %d)", rc);
    if (rc != 0) test_sh("cat %s/out", tmp);
}

// Messages that say what happened: a prompt longer than sequence_len, a 3-D adapter tensor
// with all its dimensions, a method mismatch on resume, a bad --set value not blamed on
// the job file, a NUL byte at its real line, and no "nan" without a validation set.
static void test_messages(void) {
    char path[700];
    snprintf(path, sizeof path, "%s/longprompt.jsonl", tmp);
    FILE *f = fopen(path, "w");
    CHECK(f);
    fprintf(f, "{\"prompt\": \"%0100d\", \"completion\": \"b\"}\n", 0);
    fclose(f);
    int rc = test_sh("%s train %s/job.yaml --set dataset=%s --set output_dir=%s/lp > /dev/null 2> %s/err", Q, tmp, path, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'longprompt.jsonl:1: the prompt fills all 32 tokens of sequence_len' %s/err", tmp) == 0,
           "a prompt longer than sequence_len is named as such (status %d)", rc);
    test_sh("mkdir -p %s/ad3 && cp tests/ref/peft/adapter_config.json %s/ad3/", tmp, tmp);
    StWriter w;
    st_writer_init(&w);
    static float zeros[4 * 64];
    st_writer_add(&w, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight", ST_F32, 3,
                  (const uint64_t[]){4, 64, 1}, zeros);
    snprintf(path, sizeof path, "%s/ad3/adapter_model.safetensors", tmp);
    Error err = {0};
    CHECK(st_writer_write(&w, path, &err));
    st_writer_free(&w);
    rc = test_sh("%s eval --model tests/ref/tiny --adapter %s/ad3 --data tests/ref/train_data.jsonl > /dev/null 2> %s/err", Q, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'expected shape [4, 64] (r=4), found [4, 64, 1]' %s/err", tmp) == 0,
           "a 3-D adapter tensor is printed with its 3 dimensions (status %d)", rc);
    rc = test_sh("%s train %s/job.yaml --set method=full --set max_steps=3 --set output_dir=%s/lora "
            "--set resume_from_checkpoint=latest > /dev/null 2> %s/err", Q, tmp, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'the checkpoint was made with method lora, this job has method full' %s/err", tmp) == 0,
           "a method mismatch on resume is named (status %d)", rc);
    rc = test_sh("%s train %s/job.yaml --set output_dir= > /dev/null 2> %s/err", Q, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'job.yaml with its --set overrides: output_dir must not be empty' %s/err", tmp) == 0,
           "an invalid --set value is not blamed on the job file alone (status %d)", rc);
    test_sh("printf 'seed: 1\\nlora_r: 4\\nmax_steps: 3\\000\\n' > %s/nul.yaml", tmp);
    rc = test_sh("%s train %s/nul.yaml > /dev/null 2> %s/err", Q, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'nul.yaml:3: invalid YAML: control characters' %s/err", tmp) == 0,
           "a NUL byte is reported at its line (status %d)", rc);
    EXPECT(test_sh("grep -qF 'no validation set, peak RSS' %s/lora.log && ! grep -q nan %s/lora.log", tmp, tmp) == 0,
           "without a validation set the summary says so instead of 'nan'");
}

// A write that fails (the file-size limit standing in for a full disk; SIGXFSZ ignored so
// that write returns EFBIG) stops training with exit 1 naming metrics.jsonl, instead of
// training on without a history.
static void test_full_disk(void) {
    int rc = test_sh("sh -c \"trap '' XFSZ; ulimit -f 8; exec %s train %s/job.yaml --set max_steps=400 --set save_steps=0 "
                "--set output_dir=%s/full\" > /dev/null 2> %s/err", Q, tmp, tmp, tmp);
    EXPECT(rc == 1 && test_sh("grep -qF 'full/metrics.jsonl: write failed at step' %s/err", tmp) == 0,
           "a failed metrics.jsonl write stops the run (status %d)", rc);
    if (rc != 1) test_sh("cat %s/err", tmp);
}

// Resume refuses a checkpoint whose run differs from this job in what it depends on (a
// changed lora_r, seed, base model or dataset), naming the field; the same job resumes.
static void test_resume_mismatch(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/mm", tmp);
    EXPECT(test_sh("%s train %s/job.yaml --set method=qlora --set max_steps=1 --set save_steps=1 --set output_dir=%s "
              "> /dev/null 2>&1", Q, tmp, dir) == 0, "one step with a checkpoint");
    test_sh("cp -r tests/ref/tiny %s/tiny2 && cp tests/ref/train_data.jsonl %s/data2.jsonl", tmp, tmp);
    const struct { const char *set, *phrase; } cases[] = {
        {"--set lora_r=16", "trainer_state.json: lora: the checkpoint was made with 'r 8 alpha 16"},
        {"--set seed=7", "seed: the checkpoint was made with '42', this job has '7'"},
        {"--set base_model=TMP/tiny2", "base_model: the checkpoint was made with"},
        {"--set dataset=TMP/data2.jsonl", "dataset: the checkpoint was made with"},
        {"--set quant=fp4", "quant: the checkpoint was made with 'nf4 blocksize 64 double_quant', this job has 'fp4"},
        {"--set sample_packing=true", "data: the checkpoint was made with 'format (by extension), train_on_inputs 0, "
                                      "drop_long 0, sample_packing 0', this job has '"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char set[700];
        const char *t = strstr(cases[i].set, "TMP");
        if (t) snprintf(set, sizeof set, "%.*s%s%s", (int)(t - cases[i].set), cases[i].set, tmp, t + 3);
        else snprintf(set, sizeof set, "%s", cases[i].set);
        int rc = test_sh("%s train %s/job.yaml --set method=qlora --set max_steps=2 --set output_dir=%s %s "
                    "--set resume_from_checkpoint=latest > /dev/null 2> %s/err", Q, tmp, dir, set, tmp);
        EXPECT(rc == 2 && test_sh("grep -qF \"%s\" %s/err", cases[i].phrase, tmp) == 0, "resume with %s is refused (status %d)",
               cases[i].set, rc);
        if (rc != 2) test_sh("cat %s/err", tmp);
    }
}

int main(void) {
    Q = getenv("QLORA") ? getenv("QLORA") : "./qlora";
    CHECK(mkdtemp(tmp));
    write_job("job.yaml", "");
    // 1. LoRA and full fine-tuning follow PyTorch's AdamW trajectories
    EXPECT(test_sh("%s train %s/job.yaml --set output_dir=%s/lora > %s/lora.log 2>&1", Q, tmp, tmp, tmp) == 0, "train lora");
    compare_trajectory("LoRA (fp32 base) 12 steps", strcat(strcpy((char[600]){0}, tmp), "/lora"), "lora");
    EXPECT(test_sh("%s train %s/job.yaml --set method=full --set learning_rate=0.001 --set max_steps=6 "
              "--set output_dir=%s/full > %s/full.log 2>&1", Q, tmp, tmp, tmp) == 0, "train full");
    compare_trajectory("full fine-tuning 6 steps", strcat(strcpy((char[600]){0}, tmp), "/full"), "full");

    // 2. resume: QLoRA with dropout, shuffling and a validation split; keep checkpoint-5
    //    only and continue: identical losses and a byte-identical adapter
    const char *S = "--set method=qlora --set lora_dropout=0.1 --set shuffle=true --set save_steps=5 --set val_set_size=2";
    test_sh("%s train %s/job.yaml %s --set output_dir=%s/a > /dev/null 2>&1", Q, tmp, S, tmp);
    test_sh("%s train %s/job.yaml %s --set output_dir=%s/b > /dev/null 2>&1", Q, tmp, S, tmp);
    test_sh("rm -rf %s/b/checkpoint-10 %s/b/checkpoint-12 %s/b/adapter_model.safetensors", tmp, tmp, tmp);
    EXPECT(test_sh("%s train %s/job.yaml %s --set output_dir=%s/b --set resume_from_checkpoint=latest > %s/resume.log 2>&1",
              Q, tmp, S, tmp, tmp) == 0, "resume from the latest checkpoint");
    char a[600], b[600];
    snprintf(a, sizeof a, "%s/a", tmp);
    snprintf(b, sizeof b, "%s/b", tmp);
    EXPECT(same_losses(a, b), "resumed run logs the same losses as the uninterrupted one");
    EXPECT(test_sh("cmp -s %s/adapter_model.safetensors %s/adapter_model.safetensors", a, b) == 0,
           "resumed run writes a byte-identical adapter");
    // the same with sample packing: an epoch's rows are a function of (seed, epoch) too
    const char *P = "--set method=qlora --set lora_dropout=0.1 --set shuffle=true --set save_steps=5 --set val_set_size=2 "
                    "--set sample_packing=true";
    test_sh("%s train %s/job.yaml %s --set output_dir=%s/pa > /dev/null 2>&1", Q, tmp, P, tmp);
    test_sh("%s train %s/job.yaml %s --set output_dir=%s/pb > /dev/null 2>&1", Q, tmp, P, tmp);
    test_sh("rm -rf %s/pb/checkpoint-10 %s/pb/checkpoint-12 %s/pb/adapter_model.safetensors", tmp, tmp, tmp);
    EXPECT(test_sh("%s train %s/job.yaml %s --set output_dir=%s/pb --set resume_from_checkpoint=latest > /dev/null 2>&1",
                   Q, tmp, P, tmp) == 0 &&
               same_losses(strcat(strcpy((char[600]){0}, tmp), "/pa"), strcat(strcpy((char[600]){0}, tmp), "/pb")) &&
               test_sh("cmp -s %s/pa/adapter_model.safetensors %s/pb/adapter_model.safetensors", tmp, tmp) == 0,
           "sample packing: a resumed run logs the same losses and writes a byte-identical adapter");
    size_t ne;
    double *ev = metric_values(a, "eval_loss", &ne);
    EXPECT(ne == 2 && ev[1] < ev[0], "eval_loss logged at start and end, and it fell (%.4f -> %.4f)",
           ne ? ev[0] : 0, ne > 1 ? ev[1] : 0);
    arrfree(ev);

    // 3. gradient checkpointing changes memory, not numbers; micro-batch 2 x accumulation 2
    //    equals micro-batch 4 x 1 up to summation order (loss normalised by all tokens)
    test_sh("%s train %s/job.yaml %s --set output_dir=%s/ckpt --set gradient_checkpointing=true > /dev/null 2>&1", Q, tmp, S, tmp);
    snprintf(b, sizeof b, "%s/ckpt", tmp);
    EXPECT(same_losses(a, b), "gradient_checkpointing gives bit-identical losses");
    test_sh("%s train %s/job.yaml --set output_dir=%s/mb4 --set micro_batch_size=4 --set gradient_accumulation_steps=1 > /dev/null 2>&1", Q, tmp, tmp);
    size_t n1, n2;
    snprintf(a, sizeof a, "%s/lora", tmp);
    snprintf(b, sizeof b, "%s/mb4", tmp);
    double *l1 = metric_values(a, "loss", &n1), *l2 = metric_values(b, "loss", &n2);
    double worst = 0;
    for (size_t i = 0; i < n1 && i < n2; i++) worst = fmax(worst, fabs(l1[i] - l2[i]) / l1[i]);
    // same samples per step, same normalisation: only fp32 summation order differs
    EXPECT(n1 == 12 && n2 == 12 && worst < 1e-5, "micro 2 x accum 2 == micro 4 x accum 1 (max rel diff %.2e)", worst);
    arrfree(l1);
    arrfree(l2);

    // 4. the trained adapter loads in eval; merge into fp32 == eval with the adapter;
    //    merge into the dequantized NF4 weights == eval of the NF4 base with the adapter
    char args[1200];
    snprintf(args, sizeof args, "--model tests/ref/tiny --quant none --data tests/ref/train_data.jsonl --adapter %s/lora", tmp);
    double with_adapter = eval_loss(args);
    double base = eval_loss("--model tests/ref/tiny --quant none --data tests/ref/train_data.jsonl");
    EXPECT(with_adapter < base - 0.1, "trained adapter lowers the training-set loss (%.4f -> %.4f)", base, with_adapter);
    EXPECT(test_sh("%s merge --model tests/ref/tiny --adapter %s/lora --out %s/merged > /dev/null 2>&1", Q, tmp, tmp) == 0, "merge");
    snprintf(args, sizeof args, "--model %s/merged --quant none --data tests/ref/train_data.jsonl", tmp);
    double merged = eval_loss(args);
    // merging changes only the order of fp32 additions: 1e-5 relative
    EXPECT(fabs(merged - with_adapter) <= 1e-5 * with_adapter, "merged model loss %.6f == base + adapter %.6f", merged, with_adapter);
    snprintf(args, sizeof args, "--model tests/ref/tiny --quant nf4 --data tests/ref/train_data.jsonl --adapter %s/a", tmp);
    double nf4_adapter = eval_loss(args);
    EXPECT(test_sh("%s merge --model tests/ref/tiny --adapter %s/a --dequantized --out %s/mergedq > /dev/null 2>&1", Q, tmp, tmp) == 0, "merge --dequantized");
    snprintf(args, sizeof args, "--model %s/mergedq --quant none --data tests/ref/train_data.jsonl", tmp);
    double mergedq = eval_loss(args);
    EXPECT(fabs(mergedq - nf4_adapter) <= 1e-5 * nf4_adapter, "merged-into-dequantized loss %.6f == NF4 base + adapter %.6f", mergedq, nf4_adapter);

    // 5. bad jobs and data: status 2, one line with FILE:LINE
    char path[700];
    snprintf(path, sizeof path, "%s/bad.yaml", tmp);
    struct { const char *yaml; const char *phrase; } bad[] = {
        {"base_model: tests/ref/tiny\nlerning_rate: 0.1\n", "bad.yaml:2: unknown key 'lerning_rate' (did you mean 'learning_rate'?)"},
        {"lora_r: many\n", "bad.yaml:1: lora_r: expected an integer, found 'many'"},
        {"\n\nlora_dropout: 1.5\n", "bad.yaml:3: lora_dropout: 1.5 is out of range [0, 0.99]"},
        {"method: qlora\nmethod: full\n", "bad.yaml:2: key 'method' given twice (first on line 1)"},
        {"lora_target_modules: [c_attn, qq_proj]\n", "bad.yaml:1: lora_target_modules: unknown LoRA target module 'qq_proj'"},
        {"quant: nf3\n", "bad.yaml:1: quant: expected one of nf4|fp4|int8|none, found 'nf3'"},
        {"dataset: x\n", "the job sets no base_model"},
        {"seed: 'unterminated\n", "bad.yaml:2: invalid YAML"},
        {"seed:\n  value: 3\n", "bad.yaml:2: seed: expected a value, found a nested mapping"},
        {"lora_r: [1, 2]\n", "bad.yaml:1: lora_r: expected a single value, found a list"},
        {"roles_to_train: [assistant, robot]\n", "bad.yaml:1: roles_to_train: expected system, user, assistant or tool, found 'robot'"},
        {"train_on_eos: every\n", "bad.yaml:1: train_on_eos: expected one of turn|all|none|last, found 'every'"},
        {"chat_template: vicuna\n", "bad.yaml:1: chat_template: expected one of tokenizer_default|chatml|llama3|mistral|zephyr|alpaca, found 'vicuna'"},
        {"dataset_format: sharegpt\n", "bad.yaml:1: dataset_format: expected one of text|jsonl|chat_template|alpaca, found 'sharegpt'"},
        {"drop_long: maybe\n", "bad.yaml:1: drop_long: expected true or false, found 'maybe'"},
        {"base_model: m\ndataset: d\ndataset_format: chat_template\nroles_to_train: []\n", "roles_to_train is empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        FILE *f = fopen(path, "w");
        fputs(bad[i].yaml, f);
        fclose(f);
        int rc = test_sh("%s train %s > /dev/null 2> %s/err", Q, path, tmp);
        snprintf(args, sizeof args, "grep -qF -- \"%s\" %s/err && test $(wc -l < %s/err) -eq 1", bad[i].phrase, tmp, tmp);
        EXPECT(rc == 2 && test_sh("%s", args) == 0, "bad job %zu -> status %d, message with '%s'", i, rc, bad[i].phrase);
        if (rc != 2 || test_sh("%s", args) != 0) test_sh("cat %s/err", tmp);
    }
    int rc = test_sh("%s train %s/job.yaml --set lora_alpha=x > /dev/null 2> %s/err", Q, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF -- '--set lora_alpha: lora_alpha: expected a number' %s/err", tmp) == 0, "--set with a bad value");
    snprintf(path, sizeof path, "%s/bad.jsonl", tmp);
    FILE *f = fopen(path, "w");
    fputs("{\"text\": \"fine\"}\n\n{\"prompt\": \"q\"}\n", f);
    fclose(f);
    rc = test_sh("%s train %s/job.yaml --set dataset=%s > /dev/null 2> %s/err", Q, tmp, path, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'bad.jsonl:3: \"prompt\" and \"completion\" must both be strings' %s/err", tmp) == 0,
           "bad jsonl line -> FILE:LINE (status %d)", rc);
    f = fopen(path, "w");
    fputs("{\"input_ids\": [1, 2, 99999]}\n", f);
    fclose(f);
    rc = test_sh("%s train %s/job.yaml --set dataset=%s > /dev/null 2> %s/err", Q, tmp, path, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'bad.jsonl:1: \"input_ids\" must be an array of token ids in [0, 257)' %s/err", tmp) == 0,
           "out-of-vocabulary input_ids -> FILE:LINE");
    rc = test_sh("%s train %s/job.yaml --set sequence_len=64 > /dev/null 2> %s/err", Q, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'sequence_len 64 exceeds the model' %s/err", tmp) == 0, "sequence_len beyond n_positions");
    // the model's limit is checked before memory is predicted from sequence_len, and a job
    // that sets no sequence_len uses the model's length (32 here, below the usual 512)
    rc = test_sh("%s train %s/job.yaml --set sequence_len=1000000 --set micro_batch_size=65536 > /dev/null 2> %s/err", Q, tmp, tmp);
    EXPECT(rc == 2 && test_sh("grep -qF 'sequence_len 1000000 exceeds the model' %s/err", tmp) == 0,
           "a huge sequence_len is a model limit, not a memory problem (status %d)", rc);
    test_sh("grep -v '^sequence_len' %s/job.yaml > %s/noseq.yaml", tmp, tmp);
    rc = test_sh("%s train %s/noseq.yaml --set max_steps=1 --set output_dir=%s/noseq > %s/out 2>&1", Q, tmp, tmp, tmp);
    EXPECT(rc == 0 && test_sh("%s train %s/noseq/checkpoint-1/job.yaml --check | grep -q '^sequence_len: 32$'", Q, tmp) == 0,
           "no sequence_len: the model's 32 positions are used (status %d)", rc);

    test_nonfinite_update();
    test_nonfinite_results();
    test_latest();
    test_messages();
    test_full_disk();
    test_resume_mismatch();

    test_sh("rm -rf %s", tmp);
    return test_summary("test_train");
}
