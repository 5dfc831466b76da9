// arch.h: the seam between the model layer's shared code and its architectures (block types).
// Internal to the model layer (model.c, model_io.c, acts.c, decode.c, gpt2.c); every other file
// includes model.h only.
//
// An architecture is an ArchOps: two tables and the handful of functions that differ between
// architectures.
//   - ParamSpec tables: the model-wide parameters, then one block's, in model_params order. The
//     gradient indices of TrainCtx.full_grads, loading, saving, random initialisation, freeing and
//     model_bytes all walk them, so adding a tensor is one table row.
//   - an activation table (ActSpec): the block's per-layer buffers and its one-layer gradient
//     scratch; acts.c sizes and carves them, the block reads them back by the same indices.
//   - embedding, one block's forward / backward / KV-cache step, and the final norm.
// The shared code runs any architecture: model.c drives embedding -> blocks -> final norm ->
// chunked loss head and the backward through them (gradient checkpointing, profiling) and owns
// the adapted linear (frozen qlinear + LoRA + dropout) every block calls; acts.c plans the
// activations; decode.c keeps the KV cache; model_io.c maps the tables to files. gpt2.c and
// llama.c (RMSNorm, RoPE, SwiGLU, grouped-query attention) are the architectures, each an
// ArchOps over the same ops, qlinear, lora and trainer; arch_ops() is the only switch over them.
// Shape letters as model.h; R = LoRA rank.
#ifndef QLORA_ARCH_H
#define QLORA_ARCH_H

#include <stddef.h>

#include "model.h"
#include "util.h"

// ---- profiling -------------------------------------------------------------------------------

// Sum of every phase of p. PROF_PHASE relies on it listing each field of Profile.
static inline double prof_total(const Profile *p) {
    return p->dequant + p->matmul_fwd + p->attention_fwd + p->other_fwd + p->backward;
}

// Run the statement(s); when prof is non-NULL, add their wall time to prof->phase, less what
// phases nested inside them added meanwhile, so every second lands in exactly one phase. The
// only place the model layer reads the clock for a Profile.
#define PROF_PHASE(prof, phase, ...)                                                       \
    do {                                                                                   \
        Profile *const pp_ = (prof);                                                       \
        const double t0_ = pp_ ? time_now() : 0, nested0_ = pp_ ? prof_total(pp_) : 0;     \
        __VA_ARGS__;                                                                       \
        if (pp_) pp_->phase += time_now() - t0_ - (prof_total(pp_) - nested0_);            \
    } while (0)

// ---- parameters ------------------------------------------------------------------------------

typedef enum {
    PARAM_ARRAY,  // an fp32 array the model owns (embedding, norm weight or bias)
    PARAM_LIN_W,  // the weight of block linear `target` (a QLinear)
    PARAM_LIN_B,  // its bias
} ParamKind;

// A dimension named by the config: a table row's shape is resolved with param_dim.
typedef enum { DIM_NONE, DIM_C, DIM_V, DIM_P } ParamDim;

typedef struct {
    const char *name;     // hub name; a block parameter's is the part after the block prefix
    ParamKind kind;
    size_t field;         // PARAM_ARRAY: offsetof its float * in Model (model-wide parameters)
                          // or in GPT2Block (block parameters)
    int target;           // PARAM_LIN_*: which linear of the block (LoraTarget)
    ParamDim rows, cols;  // PARAM_ARRAY: shape [rows] (cols DIM_NONE) or [rows, cols]
    bool decay;           // AdamW weight decay applies
} ParamSpec;

// ---- activations -----------------------------------------------------------------------------

typedef enum {
    ACT_LAYER,  // written by block l's forward, read by its backward: one per layer with
                // ACTS_TRAIN, one shared by every layer otherwise
    ACT_GRAD,   // gradient scratch of the block being differentiated: one, only when training
} ActKind;

typedef struct {
    const char *name;
    ActKind kind;
    size_t floats;  // for the (B,T) the plan is made for
} ActSpec;

// Activations and scratch for batches of up to B x T (acts.c carves them from one allocation).
struct Acts {
    size_t B, T;
    ActsMode mode;
    int L;
    float *mem;
    size_t n_floats;
    float **resid;   // [L+1] (N,C): block l maps resid[l] to resid[l+1]; one buffer in ACTS_INFER
    int n_lin;       // linears per block (the architecture's)
    float **lora_h;  // [L * n_lin] (R,N) (lora.h), see acts_lora_h; the LoRA hiddens of one block's
                     // linears never share; unused without adapters
    float **blk;     // [n_blk * L]: the architecture's buffer s of layer l is blk[s * L + l]
                     // (ACT_GRAD buffers: the same pointer for every l)
    int n_blk;
    float *lnf, *lnf_mean, *lnf_rstd;  // final norm: output (N,C), statistics (N)
    float *tmp;                        // (N,C): a sublayer's output before its residual add
    float *tile;                       // QLINEAR_TILE_FLOATS: qlinear scratch
    float *logits;                     // (model_logit_rows(mode), V): one chunk of the loss head
    float *dresid, *dln;               // training: d resid (N,C), d of a norm's output (N,C)
    float *dh, *xd, *dxd;              // training with adapters: LoRA dh (R,N); dropout's input
                                       // and its gradient (N, widest linear input)
    Profile *prof;                     // optional phase timing
    const int *pos;                    // (B*T) positions of packed sequences, or NULL
                                       // (acts_set_positions; borrowed)
};

// Buffer s (an index of the architecture's activation table) of layer l.
static inline float *acts_block(const Acts *a, int s, int l) {
    return a->blk[(size_t)s * (size_t)a->L + (size_t)l];
}

// The LoRA hidden (R,N) of linear t of layer l.
static inline float *acts_lora_h(const Acts *a, int l, int t) {
    return a->lora_h[(size_t)l * (size_t)a->n_lin + (size_t)t];
}

// ---- KV cache --------------------------------------------------------------------------------

// Decoding state of one sequence (decode.c). k and v are kept for every layer; the rest is
// scratch of one block step for up to P new rows, shared by every layer.
struct KVCache {
    int len, P, max_threads;
    float *k, *v;                   // [L, P, CKV] each: keys and values of positions [0, len),
                                    // CKV = n_kv_head * head_dim (C for GPT-2)
    float *x;                       // (P,C) the residual stream of the new rows
    float *ln, *tmp;                // (P,C) a norm's output, a sublayer's output
    float *atty;                    // (P, n_head * head_dim) attention output
    float *qkv;                     // (P, (n_head + 2 * n_kv_head) * head_dim)
    float *fch, *fch_gelu, *fch_up; // (P,F) each, as many as the architecture's kv_mlp_bufs
                                    // (fch_up NULL for GPT-2)
    float *lora_h;                  // (R,P), reused by every adapted linear
    float *tile;                    // QLINEAR_TILE_FLOATS
    float *scores;                  // (max_threads, P): one row of attention scores per thread
};

// out (N, NH*HS) = causal attention of the N new queries q (row stride q_stride, head h at
// columns [h*HS, (h+1)*HS)) at positions pos0.. over layer l's cached keys and values
// [0, pos0 + N) (NKV heads of HS; query head h reads kv head h / (NH/NKV); with window W > 0
// only the last W positions), which must already hold the new rows. Overwrites out. Uses
// kv->scores.
void kv_attend(KVCache *kv, int l, float *out, const float *q, size_t q_stride, size_t N,
               size_t pos0, size_t NH, size_t NKV, size_t HS, size_t window);

// ---- architectures ---------------------------------------------------------------------------

typedef struct {
    const char *name;          // "gpt2", "llama": for messages
    const char *model_type;    // config.json's model_type written for it
    const char *block_prefix;  // block l's parameter names are block_prefix, l, '.', the row's
    const char *saved_prefix;  // save_pretrained's prefix of every name but lm_head's, or ""
    // the block's linears (LoraTarget order): their number, PEFT module paths and the
    // config.json fields their [in, out] sizes come from (for messages); file layout
    int n_lin;
    const char *const *lin_paths;
    const char *const *lin_fields;
    bool conv1d;                // weights stored [in, out] (GPT-2's Conv1D), else [out, in]
    const char *peft_prefix;    // PEFT's block prefix ("transformer.h.") and an alternative
    const char *peft_alt_prefix;  // it accepts ("h."), or NULL
    // in[t], out[t] of linear t under c
    void (*lin_shapes)(const GPT2Config *c, size_t *in, size_t *out);
    // buffers the KV cache keeps per new row for the MLP: n_inner floats each
    int kv_mlp_bufs;
    const ParamSpec *globals;  // model-wide parameters, first in model_params order,
    int n_globals;
    const ParamSpec *params;   // then one block's, layer after layer
    int n_params;
    int head_param;            // the model-wide parameter the output layer is tied to
    int n_acts;                // activation table entries
    // Fill out[0..n_acts) for batches of B x T.
    void (*act_plan)(const GPT2Config *c, size_t B, size_t T, ActSpec *out);
    // Fill what m derives from its parameters and config after loading (RoPE tables), or NULL.
    void (*derive)(Model *m);
    // Write c as dir/config.json in the hub's form for this architecture.
    bool (*write_config)(const GPT2Config *c, const char *dir, Error *err);
    // x (B*T, C) = embedding of tokens (B,T) at positions pos0 + t, or at pos[b*T + t] when
    // pos is non-NULL (packed sequences, see acts_set_positions). Overwrites x.
    void (*embed_forward)(const Model *m, float *x, const int *tokens, size_t B, size_t T,
                          size_t pos0, const int *pos);
    // Accumulate the embedding gradients (tc->full_grads) from dx (B*T, C).
    void (*embed_backward)(const Model *m, const TrainCtx *tc, const float *dx,
                           const int *tokens, size_t B, size_t T, const int *pos);
    // Block l: a->resid[l] -> a->resid[l+1], filling the layer's activations.
    void (*block_forward)(const Model *m, const LoraSet *lora, Acts *a, int l, size_t B,
                          size_t T, const TrainCtx *tc);
    // Block l backward: a->dresid holds d resid[l+1] on entry, d resid[l] on exit (only
    // needed when need_dinput); LoRA and (tc->full_grads) parameter gradients accumulate.
    void (*block_backward)(const Model *m, LoraSet *lora, Acts *a, int l, size_t B, size_t T,
                           const TrainCtx *tc, bool need_dinput);
    // Block l on kv->x's N new rows at positions pos0..: appends them to the cache of layer l.
    void (*block_step)(const Model *m, const LoraSet *lora, KVCache *kv, int l, size_t N,
                       size_t pos0);
    // out (N,C) = final norm of x; mean and rstd (N) are written when non-NULL.
    void (*norm_forward)(const Model *m, float *out, float *mean, float *rstd, const float *x,
                         size_t N);
    // dx (N,C) += d final norm given dout; its parameters' gradients accumulate (full).
    void (*norm_backward)(const Model *m, const TrainCtx *tc, float *dx, const float *dout,
                          const float *x, const float *mean, const float *rstd, size_t N);
} ArchOps;

extern const ArchOps GPT2_OPS;  // gpt2.c
// llama.c: the LLaMA-family block without biases (llama, mistral), with q/k/v biases (qwen2) and
// with biases on all four attention projections (llama with attention_bias)
extern const ArchOps LLAMA_OPS, QWEN2_OPS, LLAMA_ATTN_BIAS_OPS;

// ---- config.json (model_io.c, llama.c) --------------------------------------------------------

struct cJSON;
// Integer field `key` (or its alias) of js in [lo, hi]; absent or null -> *out = dflt (or an
// error naming path and key if dflt < 0, meaning required).
bool config_int(const struct cJSON *js, const char *key, const char *alias, long dflt, long lo,
                long hi, int *out, const char *path, Error *err);
// Write js as dir/config.json (atomically) and free js.
bool config_write(struct cJSON *js, const char *dir, Error *err);
// Fill cfg from a config.json object js (path names it in messages) whose model_type is
// "gpt2" (model_io.c), or "llama", "mistral" or "qwen2" (llama.c). cfg is zeroed on entry.
bool gpt2_parse_config(GPT2Config *cfg, const struct cJSON *js, const char *path, Error *err);
bool llama_parse_config(GPT2Config *cfg, const struct cJSON *js, const char *path, Error *err);

// The architecture of a config: the one switch over Arch values (model.c).
const ArchOps *arch_ops(const GPT2Config *c);

// Size of dimension d under c (0 for DIM_NONE).
size_t param_dim(const GPT2Config *c, ParamDim d);
// Floats of table row ps (a PARAM_ARRAY).
size_t param_floats(const GPT2Config *c, const ParamSpec *ps);
// Address of row ps's array pointer: in m itself for layer < 0 (a model-wide row), else in
// block `layer`. Borrowed.
float **param_slot(const Model *m, int layer, const ParamSpec *ps);
// buf = the full name of block l's row `suffix` ("h.3." "ln_1.weight"), truncated to size.
void param_block_name(char *buf, size_t size, const ArchOps *ops, int l, const char *suffix);
// If name is a block parameter's full name, set *layer and return the row's part of it; else
// NULL.
const char *param_parse_block(const ArchOps *ops, const char *name, int *layer);
// Index in ops->params of the block row of kind k (PARAM_LIN_W or _B) for linear t; -1 when
// the block has none (a linear without bias).
int param_lin_index(const ArchOps *ops, ParamKind k, int t);
// Gradient array of parameter row k (model-wide when layer < 0, else of block `layer`) in
// tc->full_grads, which is indexed in model_params order; NULL without full gradients.
float *model_grad(const Model *m, const TrainCtx *tc, int layer, int k);

// ---- what every block calls (model.c) --------------------------------------------------------

// y (N,out) = linear t of block `layer` (x) [+ LoRA(dropout(x))]; h receives the LoRA hidden
// (R,N) when adapted. Overwrites y. tile: QLINEAR_TILE_FLOATS scratch; xd: (N,in) scratch,
// needed only with dropout (tc). Times go to prof (may be NULL).
void block_linear_forward(const Model *m, const LoraSet *lora, int layer, LoraTarget t, float *y,
                          const float *x, size_t N, float *h, float *tile, float *xd,
                          const TrainCtx *tc, Profile *prof);
// Its backward given dy (N,out) and the forward's input x: dx (N,in) += dy W + LoRA's input
// gradient (dx may be NULL when nothing upstream needs it); the LoRA gradients and, with full
// gradients, W's and b's accumulate. Uses a's tile, dh, xd, dxd and lora_h.
void block_linear_backward(const Model *m, LoraSet *lora, Acts *a, int layer, LoraTarget t,
                           float *dx, const float *dy, const float *x, size_t N,
                           const TrainCtx *tc);
// logits (n,V) = x (n,C) lm_head^T: bf16 when the model multiplies its frozen weights so and
// n > GEMM_GEMV_ROWS, else fp32. Overwrites logits.
void head_forward(const Model *m, float *logits, const float *x, size_t n);

#endif
