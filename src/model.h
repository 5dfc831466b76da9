// model.h: the model layer's public interface. A GPT-2 (docs/formats.md, "GPT-2 layer math")
// or LLaMA-family model (docs/llama.md: llama, mistral, qwen2) loaded from a Hugging Face model
// folder, with the linears of every block (GPT-2's four, LLaMA's seven) frozen in a chosen
// format (qlinear.h) and embeddings, biases and norms in fp32. Forward pass over
// (B,T) token batches with optional LoRA adapters, chunked cross-entropy, the backward for
// training, and an incremental KV-cache path for generation.
// Shape letters: B batch, T time, C = n_embd, NH heads, F = n_inner (4C), V vocab,
// L layers, N = B*T.
// The layer is split by concept (docs/architecture.md, "Model layer"):
//   model_io.c  config.json, single/sharded checkpoints, loading, saving, presets, random init
//   acts.c      the activation plan (Acts)
//   model.c     the driver every architecture shares: embedding -> blocks -> final norm ->
//               loss head and back, the adapted linear (qlinear + LoRA + dropout), parameters
//   gpt2.c      the GPT-2 block: its parameter and activation tables, forward, backward, step
//   llama.c     the LLaMA-family block (RMSNorm, RoPE, grouped-query attention, SwiGLU)
//   decode.c    the KV cache and model_step
// arch.h is the seam between them: an architecture is an ArchOps of tables and per-block
// functions, chosen by GPT2Config.arch in one switch (the name GPT2Config is historical: it
// holds every architecture's config).
// Not here: training (train.c), optimizer (optim.c), tokenizer (tokenizer.c).
#ifndef QLORA_MODEL_H
#define QLORA_MODEL_H

#include <stdbool.h>
#include <stddef.h>

#include "lora.h"
#include "qlinear.h"
#include "quant.h"

// Architectures the model layer runs (arch.h); 0 is GPT-2, so a zeroed config is one. The
// LLaMA family (model_type llama, mistral, qwen2) differs only in which linears have biases.
typedef enum {
    ARCH_GPT2 = 0,
    ARCH_LLAMA,            // llama, mistral: no biases
    ARCH_QWEN2,            // biases on q, k, v
    ARCH_LLAMA_ATTN_BIAS,  // llama with attention_bias: biases on q, k, v, o
} Arch;

typedef struct {
    int n_layer, n_head, n_embd, n_positions, vocab_size, n_inner;
    int n_kv_head;     // key/value heads (grouped-query attention); n_head for GPT-2
    int head_dim;      // HS; n_embd / n_head for GPT-2
    float eps;         // layer_norm_epsilon / rms_norm_eps
    float rope_theta;  // LLaMA family: rotary base
    int window;        // Mistral's sliding_window: a query sees that many keys, itself
                       // included; 0 = every earlier key
    bool tied;         // lm_head shares wte (tie_word_embeddings, GPT-2's default)
    Arch arch;         // which block type runs it (config.json's model_type)
    int bos_id, eos_id;  // config.json's bos_token_id / eos_token_id (first of a list), -1: none
} GPT2Config;

typedef struct {
    float *ln1_w, *ln1_b, *ln2_w, *ln2_b;  // [C], owned (the LLaMA family: input_layernorm and
                                           // post_attention_layernorm weights, no biases)
    QLinear lin[LORA_N_TARGETS];           // the architecture's linears, all stored [out, in]:
                                           // GPT-2 c_attn [3C,C], attn.c_proj [C,C], c_fc [F,C],
                                           // mlp.c_proj [C,F]; LLaMA q, k, v, o, gate, up, down
} GPT2Block;

typedef struct {
    QuantType type;     // storage of the block linears
    size_t blocksize;   // quantization block (default 64)
    bool double_quant;  // NF4/FP4 only
} QuantConfig;

typedef struct {
    GPT2Config cfg;
    QuantConfig quant;
    float *wte, *wpe;      // [V, C], [P, C] (GPT-2 only), owned
    float *lnf_w, *lnf_b;  // [C] (lnf_b GPT-2 only)
    float *rope_cos, *rope_sin;  // LLaMA family: RoPE tables [P, head_dim/2], owned
    float *lm_head;        // == wte when tied, else owned [V, C]
    GPT2Block *blocks;     // [L]
    bool bf16;             // frozen weights (block linears, lm_head) multiply in bf16
} Model;

// Read DIR/config.json (error for anything that is not a supported GPT-2 config).
bool model_read_config(GPT2Config *cfg, const char *dir, Error *err);
// Check, without loading or allocating, that dir's weights have the shapes cfg's sizes
// imply (embeddings, positions, layer 0's linears): status 2 naming the tensor, the shape
// found and the one config.json implies. For callers that size memory from cfg first.
bool model_check_sizes(const char *dir, const GPT2Config *cfg, Error *err);
// The same from text[0..len); path names it in messages.
bool model_parse_config(GPT2Config *cfg, const char *text, size_t len, const char *path, Error *err);
// Load DIR (config.json + model.safetensors, or a sharded model.safetensors.index.json).
// Accepts the hub's names (h.0...) and save_pretrained's (transformer.h.0...), F32/F16/BF16.
// On failure m holds nothing (already freed) and err says which file and tensor.
bool model_load(Model *m, const char *dir, const QuantConfig *q, Error *err);
// Free everything m owns (model_load / model_init_random); m is zeroed. Safe on a zeroed m.
void model_free(Model *m);
// Compute the frozen weights' products in bf16 (bgemm.h) or fp32: the block linears and
// the output layer. Only for weights that are not trained (not with method full); the
// caller checks bgemm_available() before turning it on.
void model_set_bf16(Model *m, bool on);

// Shapes and PEFT names of the block linears ([out, in] = [shapes.out[t], shapes.in[t]]), for
// lora.c.
LoraShapes model_lora_shapes(const GPT2Config *cfg);
// True when a target_modules entry names a linear of some architecture (checked again against
// the model's own once it is known); else false + err listing the names.
bool model_lora_target_known(const char *name, Error *err);

// Parameters of a model of config c (embeddings, an untied head, norms, linears, biases).
double model_param_count(const GPT2Config *c);

// Bytes resident for the model, by kind (from the parameter table: 2-D model-wide arrays are
// embeddings, the rest of the fp32 arrays and the linears' biases are norms_and_biases).
typedef struct {
    size_t linear_weights, quant_constants, embeddings, norms_and_biases;
} ModelBytes;
ModelBytes model_bytes(const Model *m);


// Activations and scratch for batches of up to B x T.
//   ACTS_INFER       one layer's worth of buffers, reused by every layer (eval);
//   ACTS_TRAIN       every layer keeps its activations for the backward, plus gradients;
//   ACTS_CHECKPOINT  gradient checkpointing: only each block's input is kept, the rest is
//                    recomputed one block at a time during the backward.
typedef enum { ACTS_INFER, ACTS_TRAIN, ACTS_CHECKPOINT } ActsMode;
typedef struct Acts Acts;

// Rows of logits the loss head materialises at once (never B*T*V). More rows re-read the
// output matrix (154 MB for GPT-2) fewer times: on the 2-core machine GPT-2's head runs
// 1.16x faster with 512 rows than with 256 (and 1.25x faster than with 128), for 98 MiB of
// logits instead of 49. Training without checkpointing, which has already traded memory for
// speed, takes 512; checkpointing and inference, which are about memory, take 256.
// memory.c predicts with the same function.
size_t model_logit_rows(ActsMode mode);

// Seconds spent per phase, accumulated while a profile is attached (qlora bench).
typedef struct {
    double dequant, matmul_fwd, attention_fwd, other_fwd, backward;
} Profile;
// Attach (or with NULL detach) a profile that forward/backward passes add their times to.
void acts_set_profile(Acts *a, Profile *p);
// Sample packing: pos (B*T, borrowed until detached with NULL) gives every token of the next
// forward/backward passes its position in its own sequence, so a row may hold several
// sequences, each starting at position 0 and attending only to itself (block-diagonal causal
// attention; position embeddings / RoPE at pos). pos[b*T + t] must be 0 or
// pos[b*T + t - 1] + 1, and below n_positions (checked). NULL: position t, one sequence a row.
void acts_set_positions(Acts *a, const int *pos);
// Every buffer m's forward (and, unless ACTS_INFER, backward) needs for batches of up to
// B x T, with the LoRA hiddens of lora's rank (lora may be NULL), in one allocation the caller
// frees with acts_free (NULL is a no-op).
Acts *acts_create(const Model *m, const LoraSet *lora, size_t B, size_t T, ActsMode mode);
void acts_free(Acts *a);
// Bytes of that allocation (what memory.c predicts).
size_t acts_bytes(const Acts *a);

// Forward tokens (B,T) through the model (and lora, may be NULL), no dropout. With targets
// (B,T; negative = ignored) returns the summed cross-entropy over predicted tokens and adds
// their count to *n_valid; without, returns 0. B <= a's B, T <= a's T and <= n_positions.
// If logits_out is non-NULL it receives the (B*T, V) logits (tests; memory-hungry).
double model_forward(const Model *m, const LoraSet *lora, Acts *a, const int *tokens,
                     const int *targets, size_t B, size_t T, size_t *n_valid, float *logits_out);

// Trainable fp32 parameters of the whole model (method full), in a fixed order: the
// architecture's table (GPT-2: wte, wpe, ln_f.weight, ln_f.bias, then per block ln_1.w,
// ln_1.b, ln_2.w, ln_2.b, the four linear weights ([out, in]) and the four biases), then
// lm_head.weight when the head is untied. Names are the hub's (h.0.ln_1.weight...).
typedef struct {
    char name[64];
    float *p;     // the model's own array
    size_t n;
    bool decay;   // weight decay applies (not to biases and LayerNorm weights, as HF)
} ModelParam;
// Fill params (stb_ds array); the model must be stored with QUANT_NONE.
void model_params(const Model *m, ModelParam **params);

typedef struct {
    float lora_dropout;     // p on the LoRA branch input; 0 = off
    uint64_t dropout_seed;  // masks are a pure function of (seed, layer, module, element)
    float **full_grads;     // method full: one gradient array per model_params entry
                            // (accumulated); NULL for LoRA-only training
} TrainCtx;

// Forward and backward of one micro-batch: returns the summed loss (as model_forward) and
// accumulates d(loss_scale * summed loss) into the LoRA gradients (lora->grads, allocated)
// and, with tc->full_grads, into every model parameter's gradient. a must be ACTS_TRAIN or
// ACTS_CHECKPOINT. Gradients flow through the frozen (dequantized) weights into earlier
// layers; biases, norms and embeddings get gradients only with full_grads.
double model_forward_backward(const Model *m, LoraSet *lora, Acts *a, const int *tokens,
                              const int *targets, size_t B, size_t T, float loss_scale,
                              const TrainCtx *tc, size_t *n_valid);

// Incremental decoding with a KV cache (batch 1).
typedef struct KVCache KVCache;
// An empty cache for up to max_len tokens of m (n_positions when max_len <= 0 or larger; its
// buffers grow with it: ~3 GB at Qwen2.5's 32768), with lora's rank (lora may be NULL), freed
// by the caller with kv_free (NULL is a no-op).
KVCache *kv_create(const Model *m, const LoraSet *lora, int max_len);
void kv_free(KVCache *kv);
// Tokens the cache holds, and the most it can hold.
int kv_len(const KVCache *kv);
int kv_capacity(const KVCache *kv);
// Append tokens[0..n) at positions len..len+n-1 (len + n <= the cache's max_len) and write the
// logits of the last one into logits (V floats).
void model_step(const Model *m, const LoraSet *lora, KVCache *kv, const int *tokens, int n,
                float *logits);

// Write the model as a Hugging Face folder: model.safetensors (F32, the hub's names and
// layouts: GPT-2's linears Conv1D [in, out], the LLaMA family's [out, in]; quantized linears
// are written dequantized) plus config.json (required) and whichever of vocab.json,
// merges.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json,
// generation_config.json and chat_template.jinja src_dir has, copied. delta, if non-NULL, is added to each
// linear weight first: delta(ctx, layer, target, w) may modify w ([out, in]) in place.
typedef void (*WeightDelta)(void *ctx, int layer, int target, float *w_out_in);
bool model_save_hf(const Model *m, const char *src_dir, const char *out_dir, WeightDelta delta,
                   void *ctx, Error *err);

// Presets for `qlora init` and benchmarks: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl",
// "tiny", "bench-tiny", and the LLaMA-family shapes "smollm2-135m", "smollm2-360m",
// "qwen2.5-0.5b", "tinyllama-1.1b", "llama-tiny". false if the name is unknown.
bool model_preset(const char *name, GPT2Config *cfg);
// Build a randomly initialised model in memory (same weights as model_write_random with
// the same seed), stored per q. For benchmarks of every size without files.
bool model_init_random(Model *m, const GPT2Config *cfg, const QuantConfig *q, uint64_t seed,
                       Error *err);
// Write a randomly initialised model folder (config.json, model.safetensors in the hub's
// layout; tokenizer files are the caller's business). Init: N(0, 0.02), GPT-2's residual
// projections N(0, 0.02/sqrt(2L)), biases 0, norm weights 1, LayerNorm biases 0.
bool model_write_random(const GPT2Config *cfg, const char *dir, uint64_t seed, Error *err);

#endif
