// gguf_export.c: model folders and PEFT adapters as GGUF files for llama.cpp (gguf_export.h;
// the facts are in docs/gguf.md).
#include "gguf_export.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "json.h"
#include "lora_merge.h"
#include "model.h"
#include "gguf_vocab.h"
#include "path.h"

// How a tensor's GGUF shape follows from its model_params entry of n floats.
typedef enum {
    GT_VECTOR,     // 1-D: ne = {n}
    GT_ROWS_OF_C,  // rows of n_embd (embeddings, output layer): ne = {C, n / C}
    GT_LINEAR,     // a block linear's weight [out, in]: ne = {in, out}
} GgufShape;

typedef struct {
    const char *param;  // model_params' name: a global's, or in a block table what follows
                        // "<block prefix><layer>."
    const char *gguf;   // llama.cpp's name; in a block table what follows "blk.<layer>."
    GgufShape shape;
    int lin;            // GT_LINEAR: which of the block's linears (its LoRA target)
} GgufTensorName;

// One architecture as llama.cpp knows it. name == NULL: not exportable yet, for missing's reason.
typedef struct {
    Arch arch;
    const char *model_type;          // config.json's, for messages
    const char *name;                // general.architecture and the prefix of its keys
    const char *param_block_prefix;  // model_params' block names start with it, then the layer
    const GgufTensorName *globals, *block;
    size_t n_globals, n_block;
    const char *eps_key;             // the norm epsilon's key after "<name>."
    const char *missing;
} GgufArchSpec;

// GPT-2 as llama.cpp's converter writes it (the tensor names of its gpt2 architecture).
static const GgufTensorName GPT2_GLOBALS[] = {
    {"wte.weight", "token_embd.weight", GT_ROWS_OF_C, -1},
    {"wpe.weight", "position_embd.weight", GT_ROWS_OF_C, -1},
    {"ln_f.weight", "output_norm.weight", GT_VECTOR, -1},
    {"ln_f.bias", "output_norm.bias", GT_VECTOR, -1},
    {"lm_head.weight", "output.weight", GT_ROWS_OF_C, -1},  // only when untied
};
static const GgufTensorName GPT2_BLOCK[] = {
    {"ln_1.weight", "attn_norm.weight", GT_VECTOR, -1},
    {"ln_1.bias", "attn_norm.bias", GT_VECTOR, -1},
    {"ln_2.weight", "ffn_norm.weight", GT_VECTOR, -1},
    {"ln_2.bias", "ffn_norm.bias", GT_VECTOR, -1},
    {"attn.c_attn.weight", "attn_qkv.weight", GT_LINEAR, LORA_QKV},
    {"attn.c_proj.weight", "attn_output.weight", GT_LINEAR, LORA_ATTN_PROJ},
    {"mlp.c_fc.weight", "ffn_up.weight", GT_LINEAR, LORA_FC},
    {"mlp.c_proj.weight", "ffn_down.weight", GT_LINEAR, LORA_MLP_PROJ},
    {"attn.c_attn.bias", "attn_qkv.bias", GT_VECTOR, -1},
    {"attn.c_proj.bias", "attn_output.bias", GT_VECTOR, -1},
    {"mlp.c_fc.bias", "ffn_up.bias", GT_VECTOR, -1},
    {"mlp.c_proj.bias", "ffn_down.bias", GT_VECTOR, -1},
};
#define LEN(a) (sizeof(a) / sizeof((a)[0]))

// The LLaMA family still needs: q and k rows permuted for llama.cpp's rotary layout (llama
// only; qwen2 rotates as transformers does), the rope and grouped-query keys, and its vocabulary
// from tokenizer.json.
#define LLAMA_MISSING "its tensor table and keys (docs/gguf.md, \"Adding an architecture\")"
static const GgufArchSpec ARCHS[] = {
    {ARCH_GPT2, "gpt2", "gpt2", "h.", GPT2_GLOBALS, GPT2_BLOCK, LEN(GPT2_GLOBALS), LEN(GPT2_BLOCK),
     "attention.layer_norm_epsilon", NULL},
    {ARCH_LLAMA, "llama or mistral", .missing = LLAMA_MISSING},
    {ARCH_QWEN2, "qwen2", .missing = LLAMA_MISSING},
    {ARCH_LLAMA_ATTN_BIAS, "llama with attention_bias", .missing = LLAMA_MISSING},
};

// The table entry of cfg's architecture, or NULL (status 2) when it cannot be exported yet.
static const GgufArchSpec *arch_spec(const GPT2Config *cfg, const char *model_dir, Error *err) {
    for (size_t i = 0; i < LEN(ARCHS); i++) {
        if (ARCHS[i].arch != cfg->arch) continue;
        if (!ARCHS[i].name)
            error_set(err, "%s/config.json: model_type %s: export-gguf writes gpt2 so far; this one lacks %s",
                      model_dir, ARCHS[i].model_type, ARCHS[i].missing);
        return ARCHS[i].name ? &ARCHS[i] : NULL;
    }
    error_set(err, "%s/config.json: architecture %d: export-gguf has no table for it", model_dir, (int)cfg->arch);
    return NULL;
}

// The entry for model_params name param, its GGUF name into gguf and its layer into *layer (-1
// for globals); NULL when the table has none.
static const GgufTensorName *tensor_name(const GgufArchSpec *s, const char *param, char *gguf, size_t cap,
                                         int *layer) {
    *layer = -1;
    for (size_t i = 0; i < s->n_globals; i++)
        if (strcmp(s->globals[i].param, param) == 0) {
            snprintf(gguf, cap, "%s", s->globals[i].gguf);
            return &s->globals[i];
        }
    const size_t n = strlen(s->param_block_prefix);
    if (strncmp(param, s->param_block_prefix, n) != 0 || param[n] < '0' || param[n] > '9') return NULL;
    char *end;
    const long l = strtol(param + n, &end, 10);
    if (*end != '.' || l > 1 << 20) return NULL;
    for (size_t i = 0; i < s->n_block; i++)
        if (strcmp(s->block[i].param, end + 1) == 0) {
            *layer = (int)l;
            snprintf(gguf, cap, "blk.%d.%s", *layer, s->block[i].gguf);
            return &s->block[i];
        }
    return NULL;
}

// The block entry of linear lin (its weight), which every architecture's table has.
static const GgufTensorName *linear_name(const GgufArchSpec *s, int lin) {
    for (size_t i = 0; i < s->n_block; i++)
        if (s->block[i].shape == GT_LINEAR && s->block[i].lin == lin) return &s->block[i];
    CHECK(0);
}

// True when s ends with suffix.
static bool ends_with(const char *s, const char *suffix) {
    const size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

// The type tensor gguf (of n_dims dimensions, rows of ne0 values) is stored in when want is
// asked: F32 for 1-D tensors, norms, biases and the position embeddings (llama.cpp's converter
// keeps these in F32, and its kernels expect them so); F16 for a Q8_0 tensor whose rows are not
// whole blocks (the converter's fallback).
static GgmlType tensor_type(const char *gguf, int n_dims, uint64_t ne0, GgmlType want, GgufExportInfo *info) {
    if (want == GGML_TYPE_F32) return want;
    if (n_dims == 1 || ends_with(gguf, "_norm.weight") || !ends_with(gguf, ".weight") ||
        strncmp(gguf, "position_embd.", 14) == 0) {
        info->n_f32_kept++;
        return GGML_TYPE_F32;
    }
    if (want == GGML_TYPE_Q8_0 && ne0 % GGML_Q8_0_BLOCK) {
        info->n_f16_fallback++;
        return GGML_TYPE_F16;
    }
    return want;
}

// Refuse values type cannot hold (status 2): non-finite ones anywhere; in F16, magnitudes past
// 65504 (the largest half); in Q8_0, a block whose scale max/127 is past 65504. source names
// where the values came from, param and gguf the tensor.
static bool check_values(const float *x, size_t n, GgmlType type, const char *source, const char *param,
                         const char *gguf, Error *err) {
    const double limit = type == GGML_TYPE_F16 ? 65504.0 : type == GGML_TYPE_Q8_0 ? 65504.0 * 127 : INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(x[i]))
            return error_set(err, "%s: tensor '%s' (%s): expected finite values, found %g at index %zu", source, param,
                             gguf, (double)x[i], i);
        if (fabs((double)x[i]) > limit)
            return error_set(err, "%s: tensor '%s' (%s): expected |values| <= %g for %s, found %g at index %zu "
                                  "(use --type f32)", source, param, gguf, limit, ggml_type_name(type), (double)x[i], i);
    }
    return true;
}

// general.*: the architecture, a name (the folder's), the file type (and the quantization
// version once anything is quantized).
static void add_general(GgufWriter *w, const GgufArchSpec *s, const char *dir, GgmlType type) {
    gguf_set_str(w, "general.architecture", s->name);
    char *copy = xstrdup(dir);
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/') copy[--n] = '\0';
    const char *base = strrchr(copy, '/') ? strrchr(copy, '/') + 1 : copy;
    gguf_set_str(w, "general.name", base);
    free(copy);
    gguf_set_u32(w, "general.file_type", type == GGML_TYPE_F32   ? GGUF_FILE_ALL_F32
                                         : type == GGML_TYPE_F16 ? GGUF_FILE_MOSTLY_F16
                                                                 : GGUF_FILE_MOSTLY_Q8_0);
    if (type == GGML_TYPE_Q8_0) gguf_set_u32(w, "general.quantization_version", GGUF_QUANTIZATION_VERSION);
}

// "<arch>.<key>" = v (u32).
static void set_arch_u32(GgufWriter *w, const GgufArchSpec *s, const char *key, int v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", s->name, key);
    gguf_set_u32(w, k, (uint32_t)v);
}

// The hyperparameters llama.cpp reads for every architecture, and the norm epsilon.
static void add_hparams(GgufWriter *w, const GgufArchSpec *s, const GPT2Config *c) {
    set_arch_u32(w, s, "context_length", c->n_positions);
    set_arch_u32(w, s, "embedding_length", c->n_embd);
    set_arch_u32(w, s, "feed_forward_length", c->n_inner);
    set_arch_u32(w, s, "block_count", c->n_layer);
    set_arch_u32(w, s, "attention.head_count", c->n_head);
    char k[128];
    snprintf(k, sizeof k, "%s.%s", s->name, s->eps_key);
    gguf_set_f32(w, k, c->eps);
}

// GGUF shape of entry tn for a parameter of n floats into ne; returns the number of dimensions.
static int tensor_ne(const GgufTensorName *tn, size_t n, const GPT2Config *c, const LoraShapes *sh, uint64_t ne[2]) {
    switch (tn->shape) {
    case GT_VECTOR:
        ne[0] = n;
        return 1;
    case GT_ROWS_OF_C:
        CHECK(n % (size_t)c->n_embd == 0);
        ne[0] = (uint64_t)c->n_embd;
        ne[1] = n / (size_t)c->n_embd;
        return 2;
    case GT_LINEAR:
        CHECK(sh->in[tn->lin] * sh->out[tn->lin] == n);
        ne[0] = sh->in[tn->lin];
        ne[1] = sh->out[tn->lin];
        return 2;
    }
    CHECK(0);
}

// Every model parameter as a tensor of w (borrowing m's arrays), each linear weight merged
// with lora's adapter first when lora is non-NULL (in place: m is the caller's to discard).
static bool add_model_tensors(GgufWriter *w, const Model *m, const LoraSet *lora, const GgufArchSpec *s,
                              GgmlType want, const char *model_dir, GgufExportInfo *info, Error *err) {
    ModelParam *params = NULL;
    model_params(m, &params);
    const LoraShapes sh = model_lora_shapes(&m->cfg);
    bool ok = true;
    for (size_t i = 0; ok && i < arrlenu(params); i++) {
        const ModelParam *p = &params[i];
        char name[2 * GGUF_MAX_NAME];  // gguf_add_tensor checks the length
        int layer;
        const GgufTensorName *tn = tensor_name(s, p->name, name, sizeof name, &layer);
        if (!tn) {
            ok = error_runtime(err, "%s: parameter '%s' has no GGUF name in gguf_export.c's %s table", model_dir,
                               p->name, s->name);
            break;
        }
        if (lora && tn->shape == GT_LINEAR && lora_get(lora, layer, tn->lin)) {
            lora_merge_into(lora, layer, tn->lin, p->p, NULL, NULL);
            info->n_lora_pairs++;
        }
        uint64_t ne[2];
        const int nd = tensor_ne(tn, p->n, &m->cfg, &sh, ne);
        const GgmlType t = tensor_type(name, nd, ne[0], want, info);
        ok = check_values(p->p, p->n, t, lora && tn->shape == GT_LINEAR ? "the merged model" : model_dir, p->name,
                          name, err);
        if (ok) gguf_add_tensor(w, name, t, nd, ne, p->p);
    }
    arrfree(params);
    return ok;
}

// Fill info's totals from w and write it to out.
static bool finish(GgufWriter *w, const char *out, const GgufArchSpec *s, GgufExportInfo *inf, GgufExportInfo *info,
                   Error *err) {
    inf->arch = s->name;
    inf->n_tensors = gguf_writer_n_tensors(w);
    inf->data_bytes = gguf_writer_data_bytes(w);
    const bool ok = gguf_write(w, out, err);
    if (ok && info) *info = *inf;
    return ok;
}

bool gguf_export_model(const char *model_dir, const char *adapter_dir, GgmlType type, const char *out,
                       GgufExportInfo *info, Error *err) {
    GPT2Config cfg;
    if (!model_read_config(&cfg, model_dir, err)) return false;
    const GgufArchSpec *s = arch_spec(&cfg, model_dir, err);
    if (!s) return false;
    GgufExportInfo inf = {0};
    GgufWriter *w = gguf_writer_new();
    add_general(w, s, model_dir, type);
    add_hparams(w, s, &cfg);
    bool ok = gguf_vocab_add(w, model_dir, &cfg, &inf.vocab, err);  // cheap checks before the weights
    Model m = {0};
    LoraSet lora = {0};
    const QuantConfig q = {QUANT_NONE, 64, false};
    const bool loaded = ok && model_load(&m, model_dir, &q, err);
    const LoraShapes sh = model_lora_shapes(&cfg);
    const bool has_lora = loaded && adapter_dir && lora_load_peft(&lora, adapter_dir, cfg.n_layer, &sh, err);
    ok = loaded && (!adapter_dir || has_lora) &&
         add_model_tensors(w, &m, has_lora ? &lora : NULL, s, type, model_dir, &inf, err) &&
         finish(w, out, s, &inf, info, err);
    gguf_writer_free(w);
    if (has_lora) lora_free(&lora);
    if (loaded) model_free(&m);
    return ok;
}

// Each adapted linear of lora as "<weight name>.lora_a" (A [r, in]: ne {in, r}) and ".lora_b"
// (B [out, r]: ne {r, out}), borrowing lora's arrays.
static bool add_lora_tensors(GgufWriter *w, const LoraSet *lora, const GgufArchSpec *s, GgmlType type,
                             const char *adapter_dir, GgufExportInfo *info, Error *err) {
    for (int l = 0; l < lora->n_layer; l++)
        for (int t = 0; t < lora->shapes.n; t++) {
            const LoraLinear *lin = lora_get(lora, l, t);
            if (!lin) continue;
            char a[2 * GGUF_MAX_NAME], b[2 * GGUF_MAX_NAME];  // gguf_add_tensor checks the length
            snprintf(a, sizeof a, "blk.%d.%s.lora_a", l, linear_name(s, t)->gguf);
            snprintf(b, sizeof b, "blk.%d.%s.lora_b", l, linear_name(s, t)->gguf);
            const uint64_t ne_a[2] = {lin->in, (uint64_t)lora->r}, ne_b[2] = {(uint64_t)lora->r, lin->out};
            if (!check_values(lin->A, lin->in * (size_t)lora->r, type, adapter_dir, "lora_A", a, err) ||
                !check_values(lin->B, lin->out * (size_t)lora->r, type, adapter_dir, "lora_B", b, err))
                return false;
            gguf_add_tensor(w, a, type, 2, ne_a, lin->A);
            gguf_add_tensor(w, b, type, 2, ne_b, lin->B);
            info->n_lora_pairs++;
        }
    return true;
}

bool gguf_export_adapter(const char *model_dir, const char *adapter_dir, GgmlType type, const char *out,
                         GgufExportInfo *info, Error *err) {
    if (type == GGML_TYPE_Q8_0)
        return error_set(err, "%s: an adapter file is written as f32 or f16, not q8_0", adapter_dir);
    GPT2Config cfg;
    if (!model_read_config(&cfg, model_dir, err)) return false;
    const GgufArchSpec *s = arch_spec(&cfg, model_dir, err);
    if (!s) return false;
    const LoraShapes sh = model_lora_shapes(&cfg);
    LoraSet lora;
    if (!lora_load_peft(&lora, adapter_dir, cfg.n_layer, &sh, err)) return false;
    GgufExportInfo inf = {0};
    GgufWriter *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", s->name);
    gguf_set_str(w, "general.type", "adapter");
    gguf_set_str(w, "adapter.type", "lora");
    // llama.cpp scales by alpha / r (r from lora_b's shape): alpha = scaling * r gives PEFT's
    // scaling exactly, rsLoRA's alpha / sqrt(r) included
    inf.lora_alpha = lora.scaling * (float)lora.r;
    gguf_set_f32(w, "adapter.lora.alpha", inf.lora_alpha);
    const bool ok = add_lora_tensors(w, &lora, s, type, adapter_dir, &inf, err) && finish(w, out, s, &inf, info, err);
    gguf_writer_free(w);
    lora_free(&lora);
    return ok;
}
