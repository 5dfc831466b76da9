// gguf_export.c: model folders and PEFT adapters as GGUF files for llama.cpp (gguf_export.h;
// the facts are in docs/gguf.md).
#include "gguf_export.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "json.h"
#include "gguf_vocab.h"
#include "lora_merge.h"
#include "model.h"
#include "path.h"

// How a tensor's GGUF shape follows from its model_params entry of n floats.
typedef enum {
    GT_VECTOR,     // 1-D: ne = {n}
    GT_ROWS_OF_C,  // rows of n_embd (embeddings, output layer): ne = {C, n / C}
    GT_LINEAR,     // a block linear's weight [out, in]: ne = {in, out}
} GgufShape;

// Rows of a tensor that llama.cpp's `llama` rotary embedding wants in another order: the query
// or the key projection's (weight rows or bias values), in heads of head_dim rows.
typedef enum { PERM_NONE, PERM_Q, PERM_K } GgufRopeRows;

typedef struct {
    const char *param;  // model_params' name: a global's, or in a block table what follows
                        // "<block prefix><layer>."
    const char *gguf;   // llama.cpp's name; in a block table what follows "blk.<layer>."
    GgufShape shape;
    int lin;            // GT_LINEAR: which of the block's linears (its LoRA target)
    GgufRopeRows rope;  // rows to reorder where the architecture's rope_rows is set
} GgufTensorName;

// One architecture as llama.cpp knows it.
typedef struct {
    Arch arch;
    const char *model_type;          // config.json's, for messages
    const char *name;                // general.architecture and the prefix of its keys
    const char *param_block_prefix;  // model_params' block names start with it, then the layer
    const GgufTensorName *globals, *block;
    size_t n_globals, n_block;
    const char *eps_key;             // the norm epsilon's key after "<name>."
    bool llama_family;               // grouped-query heads and rotary positions: head_count_kv,
                                     // rope.freq_base, key/value lengths
    bool rope_rows;                  // q and k rows reordered from transformers' rotate-half
                                     // layout to llama.cpp's interleaved pairs; rope.dimension_count
                                     // and vocab_size written (llama.cpp's converter for `llama`)
} GgufArchSpec;

// GPT-2 as llama.cpp's converter writes it (the tensor names of its gpt2 architecture).
static const GgufTensorName GPT2_GLOBALS[] = {
    {"wte.weight", "token_embd.weight", GT_ROWS_OF_C, -1, PERM_NONE},
    {"wpe.weight", "position_embd.weight", GT_ROWS_OF_C, -1, PERM_NONE},
    {"ln_f.weight", "output_norm.weight", GT_VECTOR, -1, PERM_NONE},
    {"ln_f.bias", "output_norm.bias", GT_VECTOR, -1, PERM_NONE},
    {"lm_head.weight", "output.weight", GT_ROWS_OF_C, -1, PERM_NONE},  // only when untied
};
static const GgufTensorName GPT2_BLOCK[] = {
    {"ln_1.weight", "attn_norm.weight", GT_VECTOR, -1, PERM_NONE},
    {"ln_1.bias", "attn_norm.bias", GT_VECTOR, -1, PERM_NONE},
    {"ln_2.weight", "ffn_norm.weight", GT_VECTOR, -1, PERM_NONE},
    {"ln_2.bias", "ffn_norm.bias", GT_VECTOR, -1, PERM_NONE},
    {"attn.c_attn.weight", "attn_qkv.weight", GT_LINEAR, LORA_QKV, PERM_NONE},
    {"attn.c_proj.weight", "attn_output.weight", GT_LINEAR, LORA_ATTN_PROJ, PERM_NONE},
    {"mlp.c_fc.weight", "ffn_up.weight", GT_LINEAR, LORA_FC, PERM_NONE},
    {"mlp.c_proj.weight", "ffn_down.weight", GT_LINEAR, LORA_MLP_PROJ, PERM_NONE},
    {"attn.c_attn.bias", "attn_qkv.bias", GT_VECTOR, -1, PERM_NONE},
    {"attn.c_proj.bias", "attn_output.bias", GT_VECTOR, -1, PERM_NONE},
    {"mlp.c_fc.bias", "ffn_up.bias", GT_VECTOR, -1, PERM_NONE},
    {"mlp.c_proj.bias", "ffn_down.bias", GT_VECTOR, -1, PERM_NONE},
};
#define LEN(a) (sizeof(a) / sizeof((a)[0]))

// The LLaMA family as llama.cpp's converter writes it (LlamaModel, Qwen2Model; the names of its
// llama and qwen2 architectures). The block's linears in LoraTarget order (lora.h): q, k, v, o,
// gate, up, down; add_model_tensors checks each row against model_lora_shapes' module paths.
static const GgufTensorName LLAMA_GLOBALS[] = {
    {"model.embed_tokens.weight", "token_embd.weight", GT_ROWS_OF_C, -1, PERM_NONE},
    {"model.norm.weight", "output_norm.weight", GT_VECTOR, -1, PERM_NONE},
    {"lm_head.weight", "output.weight", GT_ROWS_OF_C, -1, PERM_NONE},  // only when untied
};
static const GgufTensorName LLAMA_BLOCK[] = {
    {"input_layernorm.weight", "attn_norm.weight", GT_VECTOR, -1, PERM_NONE},
    {"post_attention_layernorm.weight", "ffn_norm.weight", GT_VECTOR, -1, PERM_NONE},
    {"self_attn.q_proj.weight", "attn_q.weight", GT_LINEAR, 0, PERM_Q},
    {"self_attn.k_proj.weight", "attn_k.weight", GT_LINEAR, 1, PERM_K},
    {"self_attn.v_proj.weight", "attn_v.weight", GT_LINEAR, 2, PERM_NONE},
    {"self_attn.o_proj.weight", "attn_output.weight", GT_LINEAR, 3, PERM_NONE},
    {"mlp.gate_proj.weight", "ffn_gate.weight", GT_LINEAR, 4, PERM_NONE},
    {"mlp.up_proj.weight", "ffn_up.weight", GT_LINEAR, 5, PERM_NONE},
    {"mlp.down_proj.weight", "ffn_down.weight", GT_LINEAR, 6, PERM_NONE},
    // biases: qwen2's q, k, v; llama's four with attention_bias
    {"self_attn.q_proj.bias", "attn_q.bias", GT_VECTOR, -1, PERM_Q},
    {"self_attn.k_proj.bias", "attn_k.bias", GT_VECTOR, -1, PERM_K},
    {"self_attn.v_proj.bias", "attn_v.bias", GT_VECTOR, -1, PERM_NONE},
    {"self_attn.o_proj.bias", "attn_output.bias", GT_VECTOR, -1, PERM_NONE},
};

#define LLAMA_EPS "attention.layer_norm_rms_epsilon"
static const GgufArchSpec ARCHS[] = {
    {ARCH_GPT2, "gpt2", "gpt2", "h.", GPT2_GLOBALS, GPT2_BLOCK, LEN(GPT2_GLOBALS), LEN(GPT2_BLOCK),
     "attention.layer_norm_epsilon", false, false},
    {ARCH_LLAMA, "llama or mistral", "llama", "model.layers.", LLAMA_GLOBALS, LLAMA_BLOCK, LEN(LLAMA_GLOBALS),
     LEN(LLAMA_BLOCK), LLAMA_EPS, true, true},
    {ARCH_LLAMA_ATTN_BIAS, "llama with attention_bias", "llama", "model.layers.", LLAMA_GLOBALS, LLAMA_BLOCK,
     LEN(LLAMA_GLOBALS), LEN(LLAMA_BLOCK), LLAMA_EPS, true, true},
    // qwen2 rotates as transformers does (llama.cpp's NEOX rope): no reordering
    {ARCH_QWEN2, "qwen2", "qwen2", "model.layers.", LLAMA_GLOBALS, LLAMA_BLOCK, LEN(LLAMA_GLOBALS),
     LEN(LLAMA_BLOCK), LLAMA_EPS, true, false},
};

// The table entry of cfg's architecture, or NULL (status 2) when llama.cpp cannot run it as it
// is: its qwen2 architecture sizes the query and output projections from embedding_length.
static const GgufArchSpec *arch_spec(const GPT2Config *cfg, const char *model_dir, Error *err) {
    for (size_t i = 0; i < LEN(ARCHS); i++) {
        if (ARCHS[i].arch != cfg->arch) continue;
        if (cfg->arch == ARCH_QWEN2 && cfg->n_head * cfg->head_dim != cfg->n_embd) {
            error_set(err, "%s/config.json: head_dim: expected hidden_size / num_attention_heads = %d / %d for "
                           "llama.cpp's qwen2 architecture (it sizes q and o from the width), found %d", model_dir,
                      cfg->n_embd, cfg->n_head, cfg->head_dim);
            return NULL;
        }
        return &ARCHS[i];
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

// "<arch>.<key>" = v (f32).
static void set_arch_f32(GgufWriter *w, const GgufArchSpec *s, const char *key, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", s->name, key);
    gguf_set_f32(w, k, v);
}

// The context length the file states: the positions the model was trained for, or Mistral's
// sliding window when narrower. llama.cpp's llama architecture reads no window and attends to
// every earlier position, which gives the model's own results as long as the context is no
// longer than the window.
static int context_length(const GPT2Config *c) {
    return c->window > 0 && c->window < c->n_positions ? c->window : c->n_positions;
}

// The hyperparameters llama.cpp reads (docs/gguf.md): every architecture's, the LLaMA family's
// grouped-query and rotary ones, and the norm epsilon.
static void add_hparams(GgufWriter *w, const GgufArchSpec *s, const GPT2Config *c) {
    set_arch_u32(w, s, "context_length", context_length(c));
    set_arch_u32(w, s, "embedding_length", c->n_embd);
    set_arch_u32(w, s, "feed_forward_length", c->n_inner);
    set_arch_u32(w, s, "block_count", c->n_layer);
    set_arch_u32(w, s, "attention.head_count", c->n_head);
    if (s->llama_family) {
        set_arch_u32(w, s, "attention.head_count_kv", c->n_kv_head);
        set_arch_f32(w, s, "rope.freq_base", c->rope_theta);
        if (c->head_dim != c->n_embd / c->n_head) {  // llama.cpp's default head size
            set_arch_u32(w, s, "attention.key_length", c->head_dim);
            set_arch_u32(w, s, "attention.value_length", c->head_dim);
        }
    }
    if (s->rope_rows) {
        set_arch_u32(w, s, "rope.dimension_count", c->head_dim);
        set_arch_u32(w, s, "vocab_size", c->vocab_size);
    }
    set_arch_f32(w, s, s->eps_key, c->eps);
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

// x [heads * hd, row] (row floats a row) with its rows reordered from transformers'
// rotate-half layout, where dims j and j + hd/2 of a head rotate together, to the interleaved
// pairs (2j, 2j + 1) of llama.cpp's `llama` rotary embedding, as llama.cpp's converter does
// (LlamaModel.permute): row h*hd + 2j + s of the result is row h*hd + s*hd/2 + j of x, s = 0, 1.
// Dot products of reordered queries and keys are unchanged. A new malloc'ed array.
static float *rope_rows(const float *x, size_t heads, size_t hd, size_t row) {
    float *out = xmalloc(heads * hd * row * sizeof(float));
    for (size_t h = 0; h < heads; h++)
        for (size_t j = 0; j < hd / 2; j++)
            for (size_t k = 0; k < 2; k++)
                memcpy(out + (h * hd + 2 * j + k) * row, x + (h * hd + k * hd / 2 + j) * row, row * sizeof(float));
    return out;
}

// x (n floats of entry tn) added to w as tensor name, its q or k rows reordered first where s
// wants (into a copy the writer owns; else x is borrowed).
static void add_rope_tensor(GgufWriter *w, const GgufArchSpec *s, const GgufTensorName *tn, const GPT2Config *c,
                            const char *name, GgmlType t, int nd, const uint64_t *ne, const float *x, size_t n) {
    if (!s->rope_rows || tn->rope == PERM_NONE) {
        gguf_add_tensor(w, name, t, nd, ne, x);
        return;
    }
    const size_t heads = (size_t)(tn->rope == PERM_Q ? c->n_head : c->n_kv_head), hd = (size_t)c->head_dim;
    CHECK(n % (heads * hd) == 0);
    gguf_add_tensor_owned(w, name, t, nd, ne, rope_rows(x, heads, hd, n / (heads * hd)));
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
        // the table's linear numbers are the architecture's LoRA targets
        CHECK(tn->shape != GT_LINEAR || strncmp(tn->param, sh.path[tn->lin], strlen(sh.path[tn->lin])) == 0);
        if (lora && tn->shape == GT_LINEAR && lora_get(lora, layer, tn->lin)) {
            lora_merge_into(lora, layer, tn->lin, p->p, NULL, NULL);
            info->n_lora_pairs++;
        }
        uint64_t ne[2];
        const int nd = tensor_ne(tn, p->n, &m->cfg, &sh, ne);
        const GgmlType t = tensor_type(name, nd, ne[0], want, info);
        ok = check_values(p->p, p->n, t, lora && tn->shape == GT_LINEAR ? "the merged model" : model_dir, p->name,
                          name, err);
        if (ok) add_rope_tensor(w, s, tn, &m->cfg, name, t, nd, ne, p->p, p->n);
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
    inf.context_length = context_length(&cfg);
    inf.context_is_window = inf.context_length < cfg.n_positions;
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
// (B [out, r]: ne {r, out}), borrowing lora's arrays; B's rows reordered as its weight's are
// (llama's q and k), since they are the rows of the update B A.
static bool add_lora_tensors(GgufWriter *w, const LoraSet *lora, const GgufArchSpec *s, const GPT2Config *c,
                             GgmlType type, const char *adapter_dir, GgufExportInfo *info, Error *err) {
    for (int l = 0; l < lora->n_layer; l++)
        for (int t = 0; t < lora->shapes.n; t++) {
            const LoraLinear *lin = lora_get(lora, l, t);
            if (!lin) continue;
            const GgufTensorName *tn = linear_name(s, t);
            char a[2 * GGUF_MAX_NAME], b[2 * GGUF_MAX_NAME];  // gguf_add_tensor checks the length
            snprintf(a, sizeof a, "blk.%d.%s.lora_a", l, tn->gguf);
            snprintf(b, sizeof b, "blk.%d.%s.lora_b", l, tn->gguf);
            const uint64_t ne_a[2] = {lin->in, (uint64_t)lora->r}, ne_b[2] = {(uint64_t)lora->r, lin->out};
            if (!check_values(lin->A, lin->in * (size_t)lora->r, type, adapter_dir, "lora_A", a, err) ||
                !check_values(lin->B, lin->out * (size_t)lora->r, type, adapter_dir, "lora_B", b, err))
                return false;
            gguf_add_tensor(w, a, type, 2, ne_a, lin->A);
            add_rope_tensor(w, s, tn, c, b, type, 2, ne_b, lin->B, lin->out * (size_t)lora->r);
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
    const bool ok = add_lora_tensors(w, &lora, s, &cfg, type, adapter_dir, &inf, err) && finish(w, out, s, &inf, info, err);
    gguf_writer_free(w);
    lora_free(&lora);
    return ok;
}
