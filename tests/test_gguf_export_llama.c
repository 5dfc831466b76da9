// test_gguf_export_llama.c: `qlora export-gguf` for the LLaMA family (src/gguf_export.h,
// src/gguf_vocab.h), read back with src/gguf.h and held to the source files read here
// independently.
//   - The four fixture models of tests/ref/llama (written by transformers and PEFT): llama_tied
//     (grouped-query, tied), llama_untied (attention_bias, sharded, multi-query), qwen2 (q/k/v
//     biases), mistral (head_dim 24 != 64/4, sliding window 4, F16) merged with their PEFT
//     adapters: the keys llama.cpp reads, every tensor's name and shape, and its values against
//     W + (alpha/r) B A computed here from the safetensors files, with the q and k rows
//     reordered for llama (llama.cpp's converter: row h*hd + 2j + s <- row h*hd + s*hd/2 + j) and
//     as they are for qwen2; the adapter files (lora_b's rows reordered the same way).
//   - The tokenizer.json layouts: SmolLM2's and Qwen2's as llama.cpp's "gpt2" tokenizer with
//     their pre-tokenizers, Llama 2's as its SentencePiece-style "llama" tokenizer with scores;
//     token types, special ids, add_bos, the chat template; and the layouts refused.
// Whether llama.cpp computes and tokenizes alike: tests/test_gguf_llama.sh.
#include <stdlib.h>
#include <unistd.h>

#include "ds.h"
#include "gguf_export.h"
#include "json.h"
#include "model.h"
#include "path.h"
#include "safetensors.h"
#include "test.h"

#define REF "tests/ref/llama"
// Merged weights are float sums W + delta; the reference sums the rank-4 product in double.
#define TOL_MERGE_ATOL 1e-6
#define H 64    // the fixtures' hidden size
#define FF 96   // intermediate size
#define R 4     // the adapters' rank; lora_alpha 8: scaling 2
#define SCALING 2.0

static char tmpdir[] = "/tmp/qlora-test-gguf-llama-XXXXXX";

typedef struct {
    const char *name;
    const char *arch;  // general.architecture
    int nkv, hd;       // key/value heads, head size (4 query heads)
    bool tied, attn_bias, qkv_bias, shards;
    float theta, eps;
    int context;       // context_length the file must state
} Fixture;

static const Fixture FIXTURES[] = {
    {"llama_tied", "llama", 2, 16, true, false, false, false, 10000, 1e-5f, 64},
    {"llama_untied", "llama", 1, 16, false, true, true, true, 500000, 1e-6f, 64},
    {"qwen2", "qwen2", 2, 16, false, false, true, false, 1000000, 1e-6f, 64},
    {"mistral", "llama", 2, 24, false, false, false, false, 10000, 1e-5f, 4},  // the sliding window
};

// Tensor name of fixture folder dir (any of its .safetensors shards) as a new fp32 array, or NULL.
static float *fixture_floats(const char *dir, const char *name, size_t *n) {
    static const char *const FILES[] = {"model.safetensors", "model-00001-of-00003.safetensors",
                                        "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors",
                                        "adapter_model.safetensors"};
    for (size_t k = 0; k < sizeof FILES / sizeof FILES[0]; k++) {
        char *path = path_join(dir, FILES[k]);
        SafeTensors st;
        Error err = {0};
        float *out = NULL;
        if (access(path, F_OK) == 0 && st_open(&st, path, &err)) {
            const StTensor *t = st_find(&st, name);
            if (t) {
                out = xmalloc(t->n_elements * sizeof(float));
                *n = t->n_elements;
                if (!st_read_f32(&st, t, out, &err)) free(out), out = NULL;
            }
            st_close(&st);
        }
        free(path);
        if (out) return out;
    }
    EXPECT(0, "%s has tensor %s", dir, name);
    return NULL;
}

// The GGUF tensor name of f as fp32 (the caller frees), checking its ne (ne1 0: 1-D) and type F32.
static float *gguf_floats(const GgufFile *f, const char *name, uint64_t ne0, uint64_t ne1) {
    const GgufTensor *t = gguf_find_tensor(f, name);
    const bool ok = t && t->ne[0] == ne0 && t->n_dims == (ne1 ? 2 : 1) && (!ne1 || t->ne[1] == ne1) &&
                    t->type == GGML_TYPE_F32;
    EXPECT(ok, "%s: tensor %s has ne {%llu, %llu}, f32", f->name, name, (unsigned long long)ne0,
           (unsigned long long)ne1);
    if (!ok) return NULL;
    float *out = xmalloc(t->n_elements * sizeof(float));
    gguf_tensor_to_f32(t, out);
    return out;
}

// Row r of a [heads * hd, ...] tensor after llama.cpp's converter reordered it: the source row
// of result row r (written from the converter's reshape(heads, 2, hd/2, ...).swapaxes(1, 2)).
static size_t source_row(size_t r, size_t hd) {
    const size_t h = r / hd, i = r % hd;  // result row i = 2j + s of head h
    return h * hd + (i % 2) * (hd / 2) + i / 2;
}

// A copy of fixture fx's model folder in tmpdir (links to its weights) with a tokenizer:
// data/base-model's byte-level vocab.json + merges.txt (257 tokens: the fixtures have 320 rows).
static char *fixture_copy(const Fixture *fx) {
    char *dir = path_join(tmpdir, fx->name);
    const int rc = test_sh("mkdir -p %s && for f in %s/%s/*; do ln -sf \"$PWD/$f\" %s/; done && "
                           "cp data/base-model/vocab.json data/base-model/merges.txt %s/", dir, REF, fx->name, dir, dir);
    CHECK(rc == 0);
    return dir;
}

// "<arch>.<key>" of f as u32 (0 when absent or of another type).
static uint32_t arch_u32(const GgufFile *f, const char *arch, const char *key) {
    char k[128];
    uint32_t v = 0;
    Error err = {0};
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return gguf_get_u32(f, k, &v, &err) ? v : 0;
}

static float arch_f32(const GgufFile *f, const char *arch, const char *key) {
    char k[128];
    float v = 0;
    Error err = {0};
    snprintf(k, sizeof k, "%s.%s", arch, key);
    return gguf_get_f32(f, k, &v, &err) ? v : NAN;
}

static void check_hparams(const GgufFile *f, const Fixture *fx) {
    char *arch = NULL;
    Error err = {0};
    const bool llama = strcmp(fx->arch, "llama") == 0;
    EXPECT(gguf_get_str(f, "general.architecture", &arch, &err) && strcmp(arch, fx->arch) == 0, "%s: architecture %s",
           fx->name, fx->arch);
    EXPECT(arch_u32(f, fx->arch, "context_length") == (uint32_t)fx->context &&
               arch_u32(f, fx->arch, "embedding_length") == H && arch_u32(f, fx->arch, "feed_forward_length") == FF &&
               arch_u32(f, fx->arch, "block_count") == 2 && arch_u32(f, fx->arch, "attention.head_count") == 4 &&
               arch_u32(f, fx->arch, "attention.head_count_kv") == (uint32_t)fx->nkv,
           "%s: context %d, embedding 64, feed-forward 96, 2 blocks, 4 heads, %d kv heads", fx->name, fx->context,
           fx->nkv);
    EXPECT(arch_f32(f, fx->arch, "rope.freq_base") == fx->theta &&
               arch_f32(f, fx->arch, "attention.layer_norm_rms_epsilon") == fx->eps,
           "%s: rope.freq_base %g, rms epsilon %g", fx->name, (double)fx->theta, (double)fx->eps);
    const uint32_t kl = fx->hd != H / 4 ? (uint32_t)fx->hd : 0;
    EXPECT(arch_u32(f, fx->arch, "attention.key_length") == kl && arch_u32(f, fx->arch, "attention.value_length") == kl,
           "%s: key/value length %u (written only when head_dim != 64 / 4)", fx->name, kl);
    EXPECT(arch_u32(f, fx->arch, "rope.dimension_count") == (llama ? (uint32_t)fx->hd : 0) &&
               arch_u32(f, fx->arch, "vocab_size") == (llama ? 320u : 0),
           "%s: rope.dimension_count and vocab_size %s", fx->name, llama ? "written (llama)" : "absent (qwen2)");
    free(arch);
}

// Max |got - want| over linear `hub` of layer l (GGUF name gg, [out, in]): want = W + 2 B A from
// the fixture and its adapter, rows reordered when reorder.
static double merged_error(const GgufFile *f, const Fixture *fx, int l, const char *hub, const char *gg, size_t in,
                           size_t out, bool reorder) {
    char name[128], dir[128], key[200];
    size_t n;
    snprintf(dir, sizeof dir, REF "/%s", fx->name);
    snprintf(name, sizeof name, "model.layers.%d.%s.weight", l, hub);
    float *w = fixture_floats(dir, name, &n);
    snprintf(dir, sizeof dir, REF "/%s_lora", fx->name);
    snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.lora_A.weight", l, hub);
    float *A = fixture_floats(dir, key, &n);
    snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.lora_B.weight", l, hub);
    float *B = fixture_floats(dir, key, &n);
    snprintf(name, sizeof name, "blk.%d.%s.weight", l, gg);
    float *got = gguf_floats(f, name, in, out);
    double worst = got && w && A && B ? 0 : INFINITY;
    for (size_t o = 0; got && w && A && B && o < out; o++) {
        const size_t src = reorder ? source_row(o, (size_t)fx->hd) : o;
        for (size_t i = 0; i < in; i++) {
            double d = 0;
            for (size_t r = 0; r < R; r++) d += (double)B[src * R + r] * A[r * in + i];
            const double e = fabs(got[o * in + i] - (w[src * in + i] + SCALING * d));
            worst = e > worst ? e : worst;
        }
    }
    free(w), free(A), free(B), free(got);
    return worst;
}

// The seven linears of the fixtures' blocks: hub name, GGUF name, [out, in] as multiples of
// (head_dim, kv heads) or fixed sizes, and whether llama reorders the rows.
typedef struct {
    const char *hub, *gg;
    bool q, kv, o, reorder;  // out = 4 hd (q), out = nkv hd (k, v), in = 4 hd (o)
    size_t in, out;          // the others
} Linear;
static const Linear LINEARS[] = {
    {"self_attn.q_proj", "attn_q", true, false, false, true, H, 0},
    {"self_attn.k_proj", "attn_k", false, true, false, true, H, 0},
    {"self_attn.v_proj", "attn_v", false, true, false, false, H, 0},
    {"self_attn.o_proj", "attn_output", false, false, true, false, 0, H},
    {"mlp.gate_proj", "ffn_gate", false, false, false, false, H, FF},
    {"mlp.up_proj", "ffn_up", false, false, false, false, H, FF},
    {"mlp.down_proj", "ffn_down", false, false, false, false, FF, H},
};

static void linear_shape(const Linear *L, const Fixture *fx, size_t *in, size_t *out) {
    *in = L->o ? 4 * (size_t)fx->hd : L->in;
    *out = L->q ? 4 * (size_t)fx->hd : L->kv ? (size_t)fx->nkv * (size_t)fx->hd : L->out;
}

// Tensors copied as they are (norms, embeddings, biases), or with their rows reordered (llama's
// q and k biases): equal to the fixture's values exactly. Returns the number that differ.
static int check_copied(const GgufFile *f, const Fixture *fx) {
    const bool llama = strcmp(fx->arch, "llama") == 0;
    char dir[128], hub[128], gg[128];
    snprintf(dir, sizeof dir, REF "/%s", fx->name);
    int bad = 0;
    const struct { const char *hub, *gg; bool present; } globals[3] = {
        {"model.embed_tokens.weight", "token_embd.weight", true},
        {"model.norm.weight", "output_norm.weight", true},
        {"lm_head.weight", "output.weight", !fx->tied},
    };
    for (int l = 0; l < 2; l++) {
        static const char *const B[][2] = {{"input_layernorm.weight", "attn_norm.weight"},
                                           {"post_attention_layernorm.weight", "ffn_norm.weight"},
                                           {"self_attn.q_proj.bias", "attn_q.bias"}, {"self_attn.k_proj.bias", "attn_k.bias"},
                                           {"self_attn.v_proj.bias", "attn_v.bias"}, {"self_attn.o_proj.bias", "attn_output.bias"}};
        for (int k = 0; k < 6; k++) {
            snprintf(hub, sizeof hub, "model.layers.%d.%s", l, B[k][0]);
            snprintf(gg, sizeof gg, "blk.%d.%s", l, B[k][1]);
            const bool present = k < 2 || (k < 5 && fx->qkv_bias) || (k == 5 && fx->attn_bias);
            if (!present) {
                bad += gguf_find_tensor(f, gg) != NULL;
                continue;
            }
            size_t n;
            float *want = fixture_floats(dir, hub, &n), *got = gguf_floats(f, gg, n, 0);
            for (size_t i = 0; want && got && i < n; i++)
                bad += got[i] != want[llama && (k == 2 || k == 3) ? source_row(i, (size_t)fx->hd) : i];
            bad += !want || !got;
            free(want), free(got);
        }
    }
    for (size_t k = 0; k < 3; k++) {
        if (!globals[k].present) {
            bad += gguf_find_tensor(f, globals[k].gg) != NULL;
            continue;
        }
        size_t n;
        float *want = fixture_floats(dir, globals[k].hub, &n);
        float *got = gguf_floats(f, globals[k].gg, H, n > H ? n / H : 0);
        bad += !want || !got || memcmp(want, got, n * sizeof(float)) != 0;
        free(want), free(got);
    }
    return bad;
}

// Fixture fx merged with its adapter, as f32: keys, every tensor against the safetensors files.
static void test_merged(const Fixture *fx) {
    char *dir = fixture_copy(fx), *out = path_fmt("%s/%s.gguf", tmpdir, fx->name), adapter[128];
    snprintf(adapter, sizeof adapter, REF "/%s_lora", fx->name);
    Error err = {0};
    GgufExportInfo info;
    GgufFile f;
    const bool ok = gguf_export_model(dir, adapter, GGML_TYPE_F32, out, &info, &err) && gguf_open(&f, out, &err);
    EXPECT(ok, "%s: export merged with its PEFT adapter: %s", fx->name, err.msg);
    if (ok) {
        check_hparams(&f, fx);
        const bool llama = strcmp(fx->arch, "llama") == 0;
        double worst = 0;
        for (int l = 0; l < 2; l++)
            for (size_t k = 0; k < sizeof LINEARS / sizeof LINEARS[0]; k++) {
                size_t in, o;
                linear_shape(&LINEARS[k], fx, &in, &o);
                const double e = merged_error(&f, fx, l, LINEARS[k].hub, LINEARS[k].gg, in, o, llama && LINEARS[k].reorder);
                worst = e > worst ? e : worst;
            }
        EXPECT(worst <= TOL_MERGE_ATOL && info.n_lora_pairs == 14,
               "%s: 14 merged linears = W + (alpha/r) B A, ne {in, out}, %s within %g (max %.3g)", fx->name,
               llama ? "q and k rows reordered for llama's rope" : "rows as they are (qwen2's NEOX rope)",
               TOL_MERGE_ATOL, worst);
        const int bad = check_copied(&f, fx);
        const size_t n = 2 + !fx->tied + 2 * (9 + 3 * fx->qkv_bias + fx->attn_bias);
        EXPECT(bad == 0 && f.n_tensors == n && info.context_length == fx->context &&
                   info.context_is_window == (fx->context < 64),
               "%s: %zu tensors; embeddings, norms and biases exact (%d differ)%s%s", fx->name, n, bad,
               fx->tied ? "; tied: no output.weight" : "", fx->context < 64 ? "; context = the sliding window" : "");
        gguf_close(&f);
    }
    free(dir);
    free(out);
}

// Fixture fx's adapter alone: lora_a = A, lora_b = B with llama's q and k rows reordered.
static void test_adapter(const Fixture *fx) {
    char *dir = fixture_copy(fx), *out = path_fmt("%s/%s-lora.gguf", tmpdir, fx->name), adapter[128], key[200], gg[128];
    snprintf(adapter, sizeof adapter, REF "/%s_lora", fx->name);
    Error err = {0};
    GgufExportInfo info;
    GgufFile f;
    const bool ok = gguf_export_adapter(dir, adapter, GGML_TYPE_F32, out, &info, &err) && gguf_open(&f, out, &err);
    EXPECT(ok, "%s: export the adapter alone: %s", fx->name, err.msg);
    if (!ok) return;
    const bool llama = strcmp(fx->arch, "llama") == 0;
    int bad = 0;
    for (int l = 0; l < 2; l++)
        for (size_t k = 0; k < sizeof LINEARS / sizeof LINEARS[0]; k++) {
            size_t in, o, n;
            linear_shape(&LINEARS[k], fx, &in, &o);
            snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.lora_A.weight", l, LINEARS[k].hub);
            float *A = fixture_floats(adapter, key, &n);
            snprintf(gg, sizeof gg, "blk.%d.%s.weight.lora_a", l, LINEARS[k].gg);
            float *a = gguf_floats(&f, gg, in, R);
            bad += !A || !a || memcmp(A, a, in * R * sizeof(float)) != 0;
            snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.lora_B.weight", l, LINEARS[k].hub);
            float *B = fixture_floats(adapter, key, &n);
            snprintf(gg, sizeof gg, "blk.%d.%s.weight.lora_b", l, LINEARS[k].gg);
            float *b = gguf_floats(&f, gg, R, o);
            for (size_t r = 0; B && b && r < o; r++)
                bad += memcmp(b + r * R, B + (llama && LINEARS[k].reorder ? source_row(r, (size_t)fx->hd) : r) * R,
                              R * sizeof(float)) != 0;
            bad += !B || !b;
            free(A), free(a), free(B), free(b);
        }
    char *arch = NULL;
    float alpha = 0;
    EXPECT(bad == 0 && f.n_tensors == 28 && gguf_get_str(&f, "general.architecture", &arch, &err) &&
               strcmp(arch, fx->arch) == 0 && gguf_get_f32(&f, "adapter.lora.alpha", &alpha, &err) && alpha == 8.0f,
           "%s: 28 tensors, lora_a = PEFT's A, lora_b = B%s (%d differ), %s, alpha 8", fx->name,
           llama ? " with q and k rows reordered" : "", bad, fx->arch);
    free(arch);
    gguf_close(&f);
    free(dir);
    free(out);
}

// ---- tokenizers --------------------------------------------------------------------------------

// A random LLaMA-family model folder tmpdir/name of 600 embedding rows with the tokenizer files
// of tok (a folder of tests/ref/llama), config.json naming no bos / eos.
static char *random_model(const char *name, const char *tok, Arch arch, int head_dim) {
    GPT2Config cfg = {.n_layer = 1, .n_head = 4, .n_kv_head = 2, .head_dim = head_dim, .n_embd = 64,
                      .n_positions = 32, .vocab_size = 600, .n_inner = 128, .eps = 1e-5f, .rope_theta = 10000,
                      .tied = true, .arch = arch, .bos_id = -1, .eos_id = -1};
    char *dir = path_join(tmpdir, name);
    Error err = {0};
    CHECK(path_mkdir_p(dir, &err) && model_write_random(&cfg, dir, 5, &err));
    CHECK(test_sh("cp %s/%s/* %s/", REF, tok, dir) == 0);
    return dir;
}

// The model file of dir written and opened into f (false after a failed EXPECT).
static bool export_open(const char *dir, GgufFile *f, GgufExportInfo *info) {
    char *out = path_fmt("%s.gguf", dir);
    Error err = {0};
    const bool ok = gguf_export_model(dir, NULL, GGML_TYPE_F32, out, info, &err) && gguf_open(f, out, &err);
    EXPECT(ok, "export %s: %s", dir, err.msg);
    free(out);
    return ok;
}

// tokenizer.ggml.<key> of f: a string equal to want / a u32 equal to want (-1: absent) / a bool.
static bool tok_str_is(const GgufFile *f, const char *key, const char *want) {
    char k[96], *v = NULL;
    Error err = {0};
    snprintf(k, sizeof k, "tokenizer.ggml.%s", key);
    const bool ok = gguf_get_str(f, k, &v, &err) && strcmp(v, want) == 0;
    free(v);
    return ok;
}
static bool tok_u32_is(const GgufFile *f, const char *key, long want) {
    char k[96];
    uint32_t v;
    Error err = {0};
    snprintf(k, sizeof k, "tokenizer.ggml.%s", key);
    return want < 0 ? gguf_find_kv(f, k) == NULL : gguf_get_u32(f, k, &v, &err) && v == (uint32_t)want;
}
static bool tok_bool_is(const GgufFile *f, const char *key, bool want) {
    char k[96];
    bool v;
    Error err = {0};
    snprintf(k, sizeof k, "tokenizer.ggml.%s", key);
    return gguf_get_bool(f, k, &v, &err) && v == want;
}

// Tokens and types of f against tok's tokenizer.json read here: every model.vocab token at its
// id, NORMAL (or, spm, BYTE for <0xXX>, UNKNOWN for <unk>); added tokens CONTROL if special
// (<unk>: UNKNOWN) else USER_DEFINED; "[PAD<id>]" UNUSED up to 600. Returns how many differ.
static int check_tokens(const GgufFile *f, const char *tok, bool spm) {
    char *path = path_fmt(REF "/%s/tokenizer.json", tok), **toks = NULL, pad[600][16];
    const char *want[600] = {0};
    int32_t *types = NULL, want_type[600];
    Error err = {0};
    cJSON *root = json_parse_file(path, &err);
    int bad = !root || !gguf_get_str_array(f, "tokenizer.ggml.tokens", &toks, &err) ||
              !gguf_get_i32_array(f, "tokenizer.ggml.token_type", &types, &err) || arrlenu(toks) != 600 ||
              arrlenu(types) != 600;
    for (const cJSON *kv = bad ? NULL : cJSON_GetObjectItem(cJSON_GetObjectItem(root, "model"), "vocab")->child; kv;
         kv = kv->next) {
        want[kv->valueint] = kv->string;
        want_type[kv->valueint] = !spm ? GGUF_TOKEN_NORMAL : strcmp(kv->string, "<unk>") == 0 ? GGUF_TOKEN_UNKNOWN
                                  : strncmp(kv->string, "<0x", 3) == 0 ? GGUF_TOKEN_BYTE : GGUF_TOKEN_NORMAL;
    }
    for (const cJSON *a = bad ? NULL : cJSON_GetObjectItem(root, "added_tokens")->child; a; a = a->next) {
        const int id = cJSON_GetObjectItem(a, "id")->valueint;
        want[id] = cJSON_GetObjectItem(a, "content")->valuestring;
        want_type[id] = !cJSON_IsTrue(cJSON_GetObjectItem(a, "special")) ? GGUF_TOKEN_USER_DEFINED
                        : spm && strcmp(want[id], "<unk>") == 0 ? GGUF_TOKEN_UNKNOWN : GGUF_TOKEN_CONTROL;
    }
    for (int id = 0; !bad && id < 600; id++) {
        if (!want[id]) {
            snprintf(pad[id], sizeof pad[id], "[PAD%d]", id);
            want[id] = pad[id];
            want_type[id] = GGUF_TOKEN_UNUSED;
        }
        bad += strcmp(toks[id], want[id]) != 0 || types[id] != want_type[id];
    }
    cJSON_Delete(root);
    gguf_free_strs(toks);
    arrfree(types);
    free(path);
    return bad;
}

// f's merges ("A B" in rank order) or scores (spm: -(1 + the rank of a token's first merge), 0
// for tokens no merge makes) against tok's model.merges. Returns how many differ.
static int check_merges(const GgufFile *f, const char *tok, bool spm) {
    char *path = path_fmt(REF "/%s/tokenizer.json", tok), **merges = NULL, ab[256];
    float *scores = NULL, want[600] = {0};
    Error err = {0};
    cJSON *root = json_parse_file(path, &err);
    const cJSON *model = root ? cJSON_GetObjectItem(root, "model") : NULL, *list = cJSON_GetObjectItem(model, "merges");
    int bad = !root || (spm ? !gguf_get_f32_array(f, "tokenizer.ggml.scores", &scores, &err) || arrlenu(scores) != 600 ||
                                  gguf_find_kv(f, "tokenizer.ggml.merges")
                            : !gguf_get_str_array(f, "tokenizer.ggml.merges", &merges, &err) ||
                                  arrlenu(merges) != (size_t)cJSON_GetArraySize(list) ||
                                  gguf_find_kv(f, "tokenizer.ggml.scores"));
    int rank = 0;
    for (const cJSON *m = bad ? NULL : list->child; m; m = m->next, rank++) {
        const char *a = cJSON_IsArray(m) ? m->child->valuestring : NULL, *b = a ? m->child->next->valuestring : NULL;
        if (!spm) {
            if (a) snprintf(ab, sizeof ab, "%s %s", a, b);
            bad += strcmp(merges[rank], a ? ab : m->valuestring) != 0;
            continue;
        }
        snprintf(ab, sizeof ab, "%s%s", a, b);
        const int id = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItem(model, "vocab"), ab)->valueint;
        if (want[id] == 0) want[id] = -(float)(rank + 1);
    }
    for (int id = 0; spm && !bad && id < 600; id++) bad += scores[id] != want[id];
    cJSON_Delete(root);
    gguf_free_strs(merges);
    arrfree(scores);
    free(path);
    return bad;
}

static void test_tokenizers(void) {
    static const struct {
        const char *tok, *model, *pre;
        bool spm, add_bos;
        long bos, eos, unk;  // -1: no key
    } T[] = {
        {"tok_smollm2_gguf", "gpt2", "smollm", false, false, 0, 0, -1},
        {"tok_qwen2", "gpt2", "qwen2", false, false, -1, 500, -1},
        {"tok_llama2_spm", "llama", "default", true, true, 1, 2, 0},
    };
    for (size_t k = 0; k < sizeof T / sizeof T[0]; k++) {
        char *dir = random_model(T[k].tok, T[k].tok, ARCH_LLAMA, 16);
        GgufFile f;
        GgufExportInfo info;
        if (!export_open(dir, &f, &info)) continue;
        EXPECT(tok_str_is(&f, "model", T[k].model) && tok_str_is(&f, "pre", T[k].pre) &&
                   strcmp(info.vocab.model, T[k].model) == 0 && info.vocab.n_tokens == 600,
               "%s: tokenizer.ggml.model %s, pre %s, 600 tokens", T[k].tok, T[k].model, T[k].pre);
        EXPECT(check_tokens(&f, T[k].tok, T[k].spm) == 0, "%s: every token and its type, padded to 600", T[k].tok);
        EXPECT(check_merges(&f, T[k].tok, T[k].spm) == 0, "%s: %s", T[k].tok,
               T[k].spm ? "scores -(1 + first merge rank), no merges" : "merges in rank order, no scores");
        EXPECT(tok_u32_is(&f, "bos_token_id", T[k].bos) && tok_u32_is(&f, "eos_token_id", T[k].eos) &&
                   tok_u32_is(&f, "unknown_token_id", T[k].unk) && tok_bool_is(&f, "add_bos_token", T[k].add_bos) &&
                   tok_bool_is(&f, "add_eos_token", false) && info.vocab.add_bos == T[k].add_bos,
               "%s: bos %ld, eos %ld, unk %ld, add_bos %d, add_eos 0", T[k].tok, T[k].bos, T[k].eos, T[k].unk,
               T[k].add_bos);
        EXPECT(T[k].spm ? tok_bool_is(&f, "add_space_prefix", true) : !gguf_find_kv(&f, "tokenizer.ggml.add_space_prefix"),
               "%s: add_space_prefix %s", T[k].tok, T[k].spm ? "true (Llama 2's Prepend)" : "absent");
        EXPECT(!gguf_find_kv(&f, "tokenizer.chat_template") && !info.vocab.chat_template, "%s: no chat template",
               T[k].tok);
        gguf_close(&f);
        free(dir);
    }
}

// The chat template: tokenizer_config.json's, else chat_template.jinja's.
static void test_chat_template(void) {
    char *dir = random_model("chat", "tok_qwen2", ARCH_QWEN2, 16);
    GgufFile f;
    GgufExportInfo info;
    char *t = NULL;
    Error err = {0};
    CHECK(test_sh("printf '{%%%% for m in messages %%%%}{{ m.content }}{%%%% endfor %%%%}' > %s/chat_template.jinja", dir) == 0);
    if (export_open(dir, &f, &info)) {
        EXPECT(gguf_get_str(&f, "tokenizer.chat_template", &t, &err) &&
                   strcmp(t, "{% for m in messages %}{{ m.content }}{% endfor %}") == 0 && info.vocab.chat_template,
               "chat_template.jinja as tokenizer.chat_template");
        free(t);
        gguf_close(&f);
    }
    CHECK(test_sh("sed -i 's/^{/{\"chat_template\": \"<|im_start|>{{ x }}\",/' %s/tokenizer_config.json", dir) == 0);
    if (export_open(dir, &f, &info)) {
        EXPECT(gguf_get_str(&f, "tokenizer.chat_template", &t, &err) && strcmp(t, "<|im_start|>{{ x }}") == 0,
               "tokenizer_config.json's chat_template first");
        free(t);
        gguf_close(&f);
    }
    free(dir);
}

// Inputs llama.cpp would tokenize or run differently: status 2, the reason, no file.
static void test_refusals(void) {
    static const struct {
        const char *name, *tok, *file, *edit, *phrase;  // edit: a sed script run on the folder's file
        Arch arch;
        int head_dim;
    } C[] = {
        {"r-xyzzy", "tok_smollm2", NULL, NULL, "added_tokens[6]: 'xyzzy' has single_word, lstrip or rstrip", ARCH_LLAMA, 16},
        {"r-bpe", "tok_llama2", NULL, NULL, "which is not a merge: llama.cpp's SentencePiece-style tokenizer would join them",
         ARCH_LLAMA, 16},
        {"r-meta", "tok_llama2_metaspace", NULL, NULL, "pre_tokenizer: Metaspace prepends", ARCH_LLAMA, 16},
        {"r-rows", "tok_qwen2", "config.json", "s/\"vocab_size\":[[:space:]]*600/\"vocab_size\": 400/",
         "expected at most config.json's vocab_size 400 tokens (one embedding row each), found 505", ARCH_QWEN2, 16},
        {"r-named", "tok_qwen2", "tokenizer_config.json", "s/^{/{\"chat_template\": [{\"name\": \"default\", \"template\": \"x\"}],/",
         "tokenizer_config.json: chat_template: expected a string", ARCH_QWEN2, 16},
        {"r-fallback", "tok_qwen2", "tokenizer.json", "s/\"byte_fallback\": false/\"byte_fallback\": true/",
         "model.byte_fallback: expected false with this pre-tokenizer", ARCH_QWEN2, 16},
        {"r-regex", "tok_qwen2", "tokenizer.json", "s/p{N}|/p{N}+|/", "a layout llama.cpp has no pre-tokenizer for", ARCH_QWEN2, 16},
        {"r-hd", "tok_qwen2", NULL, NULL, "config.json: head_dim: expected hidden_size / num_attention_heads = 64 / 4 for "
         "llama.cpp's qwen2 architecture", ARCH_QWEN2, 24},
    };
    for (size_t k = 0; k < sizeof C / sizeof C[0]; k++) {
        char *dir = random_model(C[k].name, C[k].tok, C[k].arch, C[k].head_dim), *out = path_fmt("%s.gguf", dir);
        if (C[k].edit) CHECK(test_sh("sed -i '%s' %s/%s", C[k].edit, dir, C[k].file) == 0);
        Error err = {0};
        const bool ok = gguf_export_model(dir, NULL, GGML_TYPE_F32, out, NULL, &err);
        EXPECT(!ok && err.status == 2 && strstr(err.msg, C[k].phrase) && access(out, F_OK) != 0,
               "%s refused (status 2, no file): %s", C[k].name, err.msg);
        free(dir);
        free(out);
    }
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    for (size_t k = 0; k < sizeof FIXTURES / sizeof FIXTURES[0]; k++) {
        test_merged(&FIXTURES[k]);
        test_adapter(&FIXTURES[k]);
    }
    test_tokenizers();
    test_chat_template();
    test_refusals();
    if (test_sh("rm -rf %s", tmpdir) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary("test_gguf_export_llama");
}
