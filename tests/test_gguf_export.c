// test_gguf_export.c: what `qlora export-gguf` puts in a file (src/gguf_export.h), read back
// with src/gguf.h and held to the source files read independently: the tiny GPT-2 fixture
// (tests/ref/tiny) merged with the adapter Hugging Face PEFT wrote for it (tests/ref/peft):
// metadata and tokenizer keys, every tensor's name, shape and type, the merged weights against
// W^T + (alpha/r) B A computed here from the safetensors files, the f16 and q8_0 files against
// the f32 one, the F16 fallback of q8_0 rows that are not whole blocks, the adapter file, and
// the inputs that are refused. Whether llama.cpp agrees: tests/test_gguf_llama.sh. The LLaMA
// family: tests/test_gguf_export_llama.c.
#include <stdlib.h>
#include <unistd.h>

#include "ds.h"
#include "gguf_export.h"
#include "model.h"
#include "path.h"
#include "safetensors.h"
#include "test.h"

#define TINY "tests/ref/tiny"
#define PEFT "tests/ref/peft"
// The merged weight is a float sum W + delta; the reference sums the rank-4 product in double.
#define TOL_MERGE_ATOL 1e-6

static char tmpdir[] = "/tmp/qlora-test-gguf-export-XXXXXX";

static char *tmp_path(const char *name) { return path_join(tmpdir, name); }

// Tensor name of st as a new fp32 array (the caller frees), or NULL after a failed EXPECT.
static float *st_floats(const char *file, const char *name, size_t *n) {
    SafeTensors st;
    Error err = {0};
    if (!st_open(&st, file, &err)) {
        EXPECT(0, "open %s: %s", file, err.msg);
        return NULL;
    }
    const StTensor *t = st_find(&st, name);
    float *out = t ? xmalloc(t->n_elements * sizeof(float)) : NULL;
    if (t) *n = t->n_elements;
    EXPECT(t && st_read_f32(&st, t, out, &err), "%s has tensor %s", file, name);
    st_close(&st);
    return out;
}

// The GGUF tensor name of f as fp32 (the caller frees), checking its ne and type.
static float *gguf_floats(const GgufFile *f, const char *name, uint64_t ne0, uint64_t ne1, GgmlType type) {
    const GgufTensor *t = gguf_find_tensor(f, name);
    const bool ok = t && t->ne[0] == ne0 && t->ne[1] == ne1 && t->type == type && t->n_dims == (ne1 > 1 ? 2 : 1);
    EXPECT(ok, "%s: tensor %s has ne {%llu, %llu} and type %s", f->name, name, (unsigned long long)ne0,
           (unsigned long long)ne1, ggml_type_name(type));
    if (!ok) return NULL;
    float *out = xmalloc(t->n_elements * sizeof(float));
    gguf_tensor_to_f32(t, out);
    return out;
}

static void check_metadata(const GgufFile *f) {
    Error err = {0};
    uint32_t u[8] = {0};
    float eps = 0;
    char *arch = NULL, *model = NULL, *pre = NULL, **toks = NULL, **merges = NULL;
    int32_t *types = NULL;
    EXPECT(gguf_get_str(f, "general.architecture", &arch, &err) && strcmp(arch, "gpt2") == 0, "general.architecture gpt2");
    EXPECT(gguf_get_u32(f, "gpt2.context_length", &u[0], &err) && gguf_get_u32(f, "gpt2.embedding_length", &u[1], &err) &&
               gguf_get_u32(f, "gpt2.feed_forward_length", &u[2], &err) && gguf_get_u32(f, "gpt2.block_count", &u[3], &err) &&
               gguf_get_u32(f, "gpt2.attention.head_count", &u[4], &err) && gguf_get_u32(f, "general.file_type", &u[5], &err) &&
               u[0] == 32 && u[1] == 64 && u[2] == 256 && u[3] == 2 && u[4] == 4 && u[5] == GGUF_FILE_ALL_F32,
           "gpt2 hyperparameters: context 32, embedding 64, feed-forward 256, 2 blocks, 4 heads, all f32 (%s)", err.msg);
    EXPECT(gguf_get_f32(f, "gpt2.attention.layer_norm_epsilon", &eps, &err) && eps == 1e-5f, "layer_norm_epsilon 1e-5");
    EXPECT(gguf_get_str(f, "tokenizer.ggml.model", &model, &err) && strcmp(model, "gpt2") == 0 &&
               gguf_get_str(f, "tokenizer.ggml.pre", &pre, &err) && strcmp(pre, "gpt-2") == 0,
           "tokenizer.ggml.model gpt2, pre gpt-2");
    EXPECT(gguf_get_str_array(f, "tokenizer.ggml.tokens", &toks, &err) && arrlenu(toks) == 257 &&
               strcmp(toks[32], "\xc4\xa0") == 0 && strcmp(toks[65], "A") == 0 && strcmp(toks[256], "<|endoftext|>") == 0,
           "257 tokens in id order, byte symbols as vocab.json spells them");
    EXPECT(gguf_get_i32_array(f, "tokenizer.ggml.token_type", &types, &err) && arrlenu(types) == 257 && types[0] == 1 &&
               types[255] == 1 && types[256] == GGUF_TOKEN_CONTROL, "token types: normal, <|endoftext|> control");
    EXPECT(gguf_get_str_array(f, "tokenizer.ggml.merges", &merges, &err) && arrlenu(merges) == 0,
           "an empty merges array for a byte-level vocabulary");
    EXPECT(gguf_get_u32(f, "tokenizer.ggml.bos_token_id", &u[6], &err) && gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &u[7], &err) &&
               u[6] == 256 && u[7] == 256, "bos and eos 256 (config.json)");
    EXPECT(!gguf_find_tensor(f, "output.weight") && f->n_tensors == 4 + 2 * 12, "28 tensors; tied: no output.weight");
    free(arch);
    free(model);
    free(pre);
    gguf_free_strs(toks);
    gguf_free_strs(merges);
    arrfree(types);
}

// Max |got - want| over the merged linear (layer l, hub name hub, GGUF name gg): want[o][i] =
// W[i][o] (Conv1D [in, out] in the file) + scaling * sum_r B[o][r] A[r][i], in double.
static double merged_error(const GgufFile *f, int l, const char *hub, const char *gg, size_t in, size_t out) {
    char name[128], key[160];
    size_t n;
    snprintf(name, sizeof name, "h.%d.%s.weight", l, hub);
    float *w = st_floats(TINY "/model.safetensors", name, &n);
    snprintf(key, sizeof key, "base_model.model.transformer.h.%d.%s.lora_A.weight", l, hub);
    float *A = st_floats(PEFT "/adapter_model.safetensors", key, &n);
    snprintf(key, sizeof key, "base_model.model.transformer.h.%d.%s.lora_B.weight", l, hub);
    float *B = st_floats(PEFT "/adapter_model.safetensors", key, &n);
    snprintf(name, sizeof name, "blk.%d.%s.weight", l, gg);
    float *got = gguf_floats(f, name, in, out, GGML_TYPE_F32);
    double worst = got && w && A && B ? 0 : INFINITY;
    for (size_t o = 0; got && w && A && B && o < out; o++)
        for (size_t i = 0; i < in; i++) {
            double d = 0;
            for (size_t r = 0; r < 4; r++) d += (double)B[o * 4 + r] * A[r * in + i];
            const double e = fabs(got[o * in + i] - (w[i * out + o] + 2.0 * d));  // scaling = alpha 8 / r 4
            worst = e > worst ? e : worst;
        }
    free(w);
    free(A);
    free(B);
    free(got);
    return worst;
}

static void test_merged_f32(void) {
    char *out = tmp_path("merged.gguf");
    Error err = {0};
    GgufExportInfo info;
    const bool ok = gguf_export_model(TINY, PEFT, GGML_TYPE_F32, out, &info, &err);
    EXPECT(ok, "export tiny + PEFT adapter: %s", err.msg);
    EXPECT(info.n_tensors == 28 && info.n_lora_pairs == 8 && info.vocab.n_tokens == 257 && info.vocab.n_merges == 0 &&
               info.n_f32_kept == 0, "info: 28 tensors, 8 linears merged, 257 tokens");
    GgufFile f;
    if (!gguf_open(&f, out, &err)) {
        EXPECT(0, "read back: %s", err.msg);
        free(out);
        return;
    }
    check_metadata(&f);
    static const struct { const char *hub, *gg; size_t in, out; } LIN[] = {
        {"attn.c_attn", "attn_qkv", 64, 192}, {"attn.c_proj", "attn_output", 64, 64},
        {"mlp.c_fc", "ffn_up", 64, 256}, {"mlp.c_proj", "ffn_down", 256, 64}};
    double worst = 0;
    for (int l = 0; l < 2; l++)
        for (int k = 0; k < 4; k++) {
            const double e = merged_error(&f, l, LIN[k].hub, LIN[k].gg, LIN[k].in, LIN[k].out);
            worst = e > worst ? e : worst;
        }
    EXPECT(worst <= TOL_MERGE_ATOL, "8 merged linears, ne {in, out}, = W^T + (alpha/r) B A within %g (max %.3g)",
           TOL_MERGE_ATOL, worst);
    static const struct { const char *hub, *gg; uint64_t ne0, ne1; } SAME[] = {
        {"wte.weight", "token_embd.weight", 64, 257}, {"wpe.weight", "position_embd.weight", 64, 32},
        {"ln_f.weight", "output_norm.weight", 64, 1}, {"ln_f.bias", "output_norm.bias", 64, 1},
        {"h.1.ln_1.weight", "blk.1.attn_norm.weight", 64, 1}, {"h.1.ln_2.bias", "blk.1.ffn_norm.bias", 64, 1},
        {"h.0.attn.c_attn.bias", "blk.0.attn_qkv.bias", 192, 1}, {"h.1.mlp.c_proj.bias", "blk.1.ffn_down.bias", 64, 1}};
    for (size_t k = 0; k < sizeof SAME / sizeof SAME[0]; k++) {
        size_t n = 0;
        float *want = st_floats(TINY "/model.safetensors", SAME[k].hub, &n);
        float *got = gguf_floats(&f, SAME[k].gg, SAME[k].ne0, SAME[k].ne1, GGML_TYPE_F32);
        EXPECT(want && got && memcmp(want, got, n * sizeof(float)) == 0, "%s = %s exactly", SAME[k].gg, SAME[k].hub);
        free(want);
        free(got);
    }
    gguf_close(&f);
    free(out);
}

// The f16 and q8_0 exports of tiny against its f32 export: which tensors keep f32, and the
// others' bytes equal to rounding / quantizing the f32 file's values.
static void test_types(void) {
    char *p32 = tmp_path("t32.gguf"), *p16 = tmp_path("t16.gguf"), *p8 = tmp_path("t8.gguf");
    Error err = {0};
    GgufExportInfo i16, i8;
    const bool ok = gguf_export_model(TINY, NULL, GGML_TYPE_F32, p32, NULL, &err) &&
                    gguf_export_model(TINY, NULL, GGML_TYPE_F16, p16, &i16, &err) &&
                    gguf_export_model(TINY, NULL, GGML_TYPE_Q8_0, p8, &i8, &err);
    EXPECT(ok, "export tiny as f32, f16 and q8_0: %s", err.msg);
    GgufFile f32, f16, f8;
    if (!ok || !gguf_open(&f32, p32, &err) || !gguf_open(&f16, p16, &err) || !gguf_open(&f8, p8, &err)) return;
    EXPECT(i16.n_f32_kept == 19 && i8.n_f32_kept == 19, "19 tensors kept in f32: 1-D norms and biases, position_embd");
    int bad16 = 0, bad8 = 0;
    for (size_t k = 0; k < f32.n_tensors; k++) {
        const GgufTensor *a = &f32.tensors[k], *b = gguf_find_tensor(&f16, a->name), *c = gguf_find_tensor(&f8, a->name);
        const bool keep = a->n_dims == 1 || strcmp(a->name, "position_embd.weight") == 0;
        if (!b || !c) {
            bad16++;
            continue;
        }
        const float *x = (const float *)a->data;
        if (keep) {
            bad16 += b->type != GGML_TYPE_F32 || memcmp(a->data, b->data, a->nbytes) != 0;
            bad8 += c->type != GGML_TYPE_F32 || memcmp(a->data, c->data, a->nbytes) != 0;
            continue;
        }
        for (uint64_t i = 0; i < a->n_elements; i++)
            bad16 += b->type != GGML_TYPE_F16 || ((const uint16_t *)(const void *)b->data)[i] != gguf_f32_to_f16(x[i]);
        GgmlBlockQ8_0 *q = xmalloc(a->n_elements / 32 * sizeof *q);
        gguf_quantize_q8_0(x, a->n_elements, q);
        bad8 += c->type != GGML_TYPE_Q8_0 || memcmp(q, c->data, c->nbytes) != 0;
        free(q);
    }
    uint32_t ft = 0, qv = 0;
    EXPECT(bad16 == 0, "f16 file: kept tensors identical, the others the f32 values rounded to half (%d bad)", bad16);
    EXPECT(bad8 == 0, "q8_0 file: kept tensors identical, the others the f32 values quantized (%d bad)", bad8);
    EXPECT(gguf_get_u32(&f8, "general.file_type", &ft, &err) && ft == GGUF_FILE_MOSTLY_Q8_0 &&
               gguf_get_u32(&f8, "general.quantization_version", &qv, &err) && qv == 2 &&
               !gguf_find_kv(&f32, "general.quantization_version"),
           "q8_0: file_type 7 and quantization_version 2 (absent from the f32 file)");
    gguf_close(&f32);
    gguf_close(&f16);
    gguf_close(&f8);
    free(p32);
    free(p16);
    free(p8);
}

// A random GPT-2 folder in tmpdir/name of width C with tiny's tokenizer, its wte[0] = first.
static char *random_model(const char *name, int C, float first) {
    GPT2Config cfg = {.n_layer = 1, .n_head = 4, .n_embd = C, .n_positions = 16, .vocab_size = 257,
                      .n_inner = 4 * C, .n_kv_head = 4, .head_dim = C / 4, .eps = 1e-5f, .tied = true,
                      .arch = ARCH_GPT2, .bos_id = 256, .eos_id = 256};
    char *dir = tmp_path(name), *vocab = path_join(dir, "vocab.json"), *merges = path_join(dir, "merges.txt");
    Model m;
    Error err = {0};
    const QuantConfig q = {QUANT_NONE, 64, false};
    CHECK(path_mkdir_p(dir, &err) && model_write_random(&cfg, dir, 3, &err) &&
          copy_file_atomic(TINY "/vocab.json", vocab, &err) && copy_file_atomic(TINY "/merges.txt", merges, &err));
    CHECK(model_load(&m, dir, &q, &err));
    m.wte[0] = first;
    CHECK(model_save_hf(&m, dir, dir, NULL, NULL, &err));  // config.json and the tokenizer copied onto themselves
    model_free(&m);
    free(vocab);
    free(merges);
    return dir;
}

static void test_fallback_and_refusals(void) {
    char *d48 = random_model("w48", 48, 0.01f), *out = tmp_path("w48.gguf");
    Error err = {0};
    GgufExportInfo info;
    GgufFile f;
    const bool ok = gguf_export_model(d48, NULL, GGML_TYPE_Q8_0, out, &info, &err) && gguf_open(&f, out, &err);
    EXPECT(ok, "export a 48-wide model as q8_0: %s", err.msg);
    if (ok) {
        const GgufTensor *e = gguf_find_tensor(&f, "token_embd.weight"), *down = gguf_find_tensor(&f, "blk.0.ffn_down.weight");
        EXPECT(e && e->type == GGML_TYPE_F16 && down && down->type == GGML_TYPE_Q8_0 && info.n_f16_fallback == 4,
               "rows of 48 fall back to f16 (4 tensors), ffn_down's rows of 192 are q8_0");
        gguf_close(&f);
    }
    char *big = random_model("big", 64, 1e5f), *nan = random_model("nan", 64, NAN);
    bool r = gguf_export_model(big, NULL, GGML_TYPE_F16, out, NULL, &err);
    EXPECT(!r && err.status == 2 &&
               strstr(err.msg, "tensor 'wte.weight' (token_embd.weight): expected |values| <= 65504 for f16, found 100000 at index 0"),
           "a weight beyond half's range refused for f16: %s", err.msg);
    r = gguf_export_model(big, NULL, GGML_TYPE_Q8_0, out, NULL, &err);
    EXPECT(r, "but fine for q8_0 (scale 787): %s", err.msg);
    const bool nan_ok = gguf_export_model(nan, NULL, GGML_TYPE_F32, out, NULL, &err);
    EXPECT(!nan_ok && err.status == 2 && strstr(err.msg, "tensor 'wte.weight': element 0 is NaN"),
           "a NaN weight refused (by the model loader, before the export's own check): %s", err.msg);
    r = gguf_export_model("tests/ref/llama/llama_tied", NULL, GGML_TYPE_F32, out, NULL, &err);
    EXPECT(!r && err.status == 2 && strstr(err.msg, "llama_tied: no tokenizer: expected tokenizer.json, or vocab.json"),
           "a folder without a tokenizer is refused: %s", err.msg);
    free(d48);
    free(big);
    free(nan);
    free(out);
}

static void test_adapter(void) {
    char *out = tmp_path("lora.gguf");
    Error err = {0};
    GgufExportInfo info;
    GgufFile f;
    const bool ok = gguf_export_adapter(TINY, PEFT, GGML_TYPE_F32, out, &info, &err) && gguf_open(&f, out, &err);
    EXPECT(ok, "export the PEFT adapter alone: %s", err.msg);
    if (!ok) return;
    char *type = NULL, *atype = NULL, *arch = NULL;
    float alpha = 0;
    EXPECT(gguf_get_str(&f, "general.type", &type, &err) && strcmp(type, "adapter") == 0 &&
               gguf_get_str(&f, "adapter.type", &atype, &err) && strcmp(atype, "lora") == 0 &&
               gguf_get_str(&f, "general.architecture", &arch, &err) && strcmp(arch, "gpt2") == 0 &&
               gguf_get_f32(&f, "adapter.lora.alpha", &alpha, &err) && alpha == 8.0f && info.lora_alpha == 8.0f,
           "general.type adapter, adapter.type lora, gpt2, adapter.lora.alpha 8 (= scaling 2 x r 4)");
    EXPECT(f.n_tensors == 16 && info.n_lora_pairs == 8, "16 tensors: .lora_a and .lora_b of 8 linears");
    size_t n;
    float *A = st_floats(PEFT "/adapter_model.safetensors", "base_model.model.transformer.h.1.mlp.c_proj.lora_A.weight", &n);
    float *B = st_floats(PEFT "/adapter_model.safetensors", "base_model.model.transformer.h.1.mlp.c_proj.lora_B.weight", &n);
    float *a = gguf_floats(&f, "blk.1.ffn_down.weight.lora_a", 256, 4, GGML_TYPE_F32);
    float *b = gguf_floats(&f, "blk.1.ffn_down.weight.lora_b", 4, 64, GGML_TYPE_F32);
    EXPECT(A && a && memcmp(A, a, 4 * 256 * sizeof(float)) == 0 && B && b && memcmp(B, b, 64 * 4 * sizeof(float)) == 0,
           "lora_a = PEFT's lora_A [r, in] (ne {in, r}), lora_b = lora_B [out, r] (ne {r, out}), exactly");
    const bool q8 = gguf_export_adapter(TINY, PEFT, GGML_TYPE_Q8_0, out, NULL, &err);
    EXPECT(!q8 && strstr(err.msg, "f32 or f16, not q8_0"),
           "a q8_0 adapter file is refused: %s", err.msg);
    free(A), free(B), free(a), free(b), free(type), free(atype), free(arch);
    gguf_close(&f);
    free(out);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_merged_f32();
    test_types();
    test_fallback_and_refusals();
    test_adapter();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary("test_gguf_export");
}
