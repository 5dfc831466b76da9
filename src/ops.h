// ops.h: fp32 layer kernels of GPT-2 as _forward/_backward pairs (docs/formats.md, "GPT-2 layer math").
// Shape letters: B batch, T time, C channels, NH heads, HS = C/NH head size, V vocabulary,
// N = B*T rows. All tensors row-major and contiguous unless a stride is given.
// Forwards overwrite their outputs. Backwards ACCUMULATE (+=) into every gradient they
// are given (the caller zeroes); a NULL gradient pointer means "not needed".
// Kernels never allocate and never call BLAS from inside their parallel regions, except
// attention, whose products go through gemm.h between parallel loops.
#ifndef QLORA_OPS_H
#define QLORA_OPS_H

#include <stdbool.h>
#include <stddef.h>

// out[b,t,:] = wte[tokens[b,t],:] + wpe[p,:], p = pos[b*T + t] (the token's position in its
// packed sequence) or t when pos is NULL. tokens and pos must be valid (checked upstream).
void embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                       size_t B, size_t T, size_t C, const int *pos);
// dwte/dwpe accumulate (method full); either may be NULL. pos as the forward's.
void embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                        size_t B, size_t T, size_t C, const int *pos);

// out (N,C) = (inp - mean) / sqrt(var + eps) * w + b, biased variance. mean/rstd (N) are
// written when non-NULL (backward needs them).
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                       const float *w, const float *b, size_t N, size_t C, float eps);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, size_t N, size_t C);

// gelu_new (tanh approximation) elementwise over n values; tests/test_ops.c holds both
// directions to a double-precision evaluation and the worked values in docs/formats.md.
void gelu_forward(float *out, const float *inp, size_t n);
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);

// out += a (n values): the residual add.
void add_inplace(float *out, const float *a, size_t n);
// x[0..n) = 0, split over the threads (a plain memset leaves the other cores idle).
void zero_floats(float *x, size_t n);
// out (N,OC) += bias (OC) broadcast over rows.
void bias_add(float *out, const float *bias, size_t N, size_t OC);
// dbias (OC) += column sums of dout (N,OC).
void bias_backward(float *dbias, const float *dout, size_t N, size_t OC);

// GPT-2's causal self-attention on the fused qkv (B,T,3C): q | k | v, head h uses columns
// [h*HS, (h+1)*HS) of each. att (B,NH,T,T) receives the softmax probabilities (zeros above
// the diagonal), out (B,T,C) the heads concatenated. With pos (packed sequences, see
// attention_gqa_forward) a token sees only the earlier tokens of its own sequence. The
// grouped-query kernels below with NKV == NH (bf16: their products in bf16, as there).
void attention_forward(float *out, float *att, const float *qkv, size_t B, size_t T, size_t C,
                       size_t NH, const int *pos, bool bf16);
// dqkv accumulates; datt is scratch of att's size (overwritten).
void attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                        const float *att, size_t B, size_t T, size_t C, size_t NH, bool bf16);

// Cross-entropy over rows of logits (n,V) with targets (n; negative = ignored).
// Returns the summed loss over non-ignored rows (in double) and adds their count to
// *n_valid. If dlogits_scale != 0, logits are overwritten with the gradient
// dlogits_scale * (softmax - onehot) (zero rows for ignored targets).
double softmax_xent(float *logits, const int *targets, size_t n, size_t V, float dlogits_scale,
                    size_t *n_valid);

// exp(x) in f32 without libm: Cody-Waite range reduction and Cephes' degree-7 polynomial,
// within 2 ulp of expf on [-87, 88] (clamped outside), written so that loops over it
// vectorise. tests/test_ops.c checks it against expf.
float ops_exp(float x);

// Plain scalar twins of the vectorised kernels, for tests.
void layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp,
                           const float *w, const float *b, size_t N, size_t C, float eps);

// ---- LLaMA-family kernels (docs/llama.md, section 3). NKV key/value heads, HS = head_dim.

// RMSNorm: out (N,C) = w * (x * rstd), rstd = 1/sqrt(mean(x^2) + eps) per row (the mean of
// squares in double, rstd rounded to fp32; eps inside the root; no mean, no bias). Overwrites
// out; rstd (N) is written when non-NULL (backward needs it). out may alias x.
void rmsnorm_forward(float *out, float *rstd, const float *x, const float *w, size_t N, size_t C,
                     float eps);
// With n = x * rstd and g = w * dout: dx (N,C) += rstd * (g - n * mean(g * n)),
// dw (C) += sum over rows of dout * n. Both ACCUMULATE; either may be NULL. rstd from forward.
void rmsnorm_backward(float *dx, float *dw, const float *dout, const float *x, const float *w,
                      const float *rstd, size_t N, size_t C);

// RoPE tables, rotate-half layout: cos_tab/sin_tab (T, HS/2), only the half that
// transformers repeats: cos_tab[t*HS/2 + i] = cosf(t * inv_freq[i]), inv_freq[i] =
// 1 / powf(theta, 2i/HS), all in fp32 as transformers computes them (the angle's fp32
// rounding matters at long positions). HS even (checked). Overwrites both.
void rope_tables(float *cos_tab, float *sin_tab, size_t T, size_t HS, float theta);
// Rotates x in place: element (b, t, h, d) lives at x[(b*T + t)*row_stride + h*HS + d]
// (row_stride = NH*HS for a plain (B,T,NH,HS) q or k; 3C with x = qkv or qkv + C for the
// q or k columns of a fused (B,T,3C) qkv). Token (b, t) uses row p of the tables, p =
// pos[b*T + t] (its position in its packed sequence) or t when pos is NULL (pass cos_tab +
// p0*HS/2 to start at position p0, e.g. behind a KV cache). Dims d and d + HS/2 form a pair:
// x'[d] = x[d] cos - x[d+HS/2] sin, x'[d+HS/2] = x[d+HS/2] cos + x[d] sin.
void rope_forward(float *x, const float *cos_tab, const float *sin_tab, size_t B, size_t T,
                  size_t NH, size_t HS, size_t row_stride, const int *pos);
// The transposed (= inverse) rotation, IN PLACE on the gradient dx (same layout): a rotation
// is its own buffer's gradient map, so unlike the other backwards this overwrites; call it on
// dq/dk after everything downstream has accumulated into them.
void rope_backward(float *dx, const float *cos_tab, const float *sin_tab, size_t B, size_t T,
                   size_t NH, size_t HS, size_t row_stride, const int *pos);

// SwiGLU: out[i] = silu(gate[i]) * up[i], silu(z) = z / (1 + exp(-z)), n values. Overwrites.
void swiglu_forward(float *out, const float *gate, const float *up, size_t n);
// dgate += dout * up * silu'(gate), silu'(z) = s (1 + z (1 - s)), s = sigmoid(z);
// dup += dout * silu(gate). ACCUMULATE; either may be NULL.
void swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                     const float *up, size_t n);

// Grouped-query causal attention (docs/llama.md 3.4). Element (b, t, c) of q is at
// q[(b*T + t)*ldq + c], of k and v at [(b*T + t)*ldkv + c]: query head h at columns
// [h*HS, (h+1)*HS) of q, kv head g at [g*HS, (g+1)*HS) of k and v (separate (N, NH*HS) and
// (N, NKV*HS) buffers: ldq = NH*HS, ldkv = NKV*HS; a fused (N, (NH+2*NKV)*HS) qkv: k = q + NH*HS,
// v = k + NKV*HS, both strides the fused width). Query head h reads kv head h / (NH/NKV);
// scores scale HS^-0.5; with window W > 0 query t sees keys t-W+1..t only (Mistral's sliding
// window; 0: all earlier keys); with pos (B*T, or NULL) rows hold packed sequences and token
// (b, t), at position pos[b*T + t] of its sequence, sees keys from t - pos[b*T + t] on only
// (each sequence attends to itself). att (B,NH,T,T) receives the probabilities (zeros elsewhere),
// out (B,T,NH*HS) the heads concatenated; both overwritten. NH % NKV == 0 (checked). With
// NKV == NH on a fused qkv this is attention_forward with C = NH*HS, bit for bit.
// bf16 (the model's frozen products in bf16, Model.bf16): where bgemm_available(), the two
// products here and the four of the backward round their inputs to bf16 and sum in fp32, as
// PyTorch's bf16 autocast runs attention's matmuls (docs/bf16.md); the scale, the softmax and
// its backward stay fp32. false: every product fp32 (matmul_batch).
void attention_gqa_forward(float *out, float *att, const float *q, const float *k, const float *v,
                           size_t ldq, size_t ldkv, size_t B, size_t T, size_t NH, size_t NKV,
                           size_t HS, size_t window, const int *pos, bool bf16);
// dq, dk, dv (laid out as q, k, v) ACCUMULATE; a kv head's dk/dv sum over its NH/NKV query
// heads in a fixed order (one product per group slot, so no two threads write one element).
// datt is scratch of att's size (overwritten). The window and pos need no argument: the keys
// they hide have probability 0 in att, so they get no gradient.
void attention_gqa_backward(float *dq, float *dk, float *dv, float *datt, const float *dout,
                            const float *q, const float *k, const float *v, const float *att,
                            size_t ldq, size_t ldkv, size_t B, size_t T, size_t NH, size_t NKV,
                            size_t HS, bool bf16);

// Plain scalar twins of the two vectorised/parallel kernels above (double inside, libm expf),
// for tests. rope_forward is already a plain loop and has no twin.
void rmsnorm_forward_ref(float *out, float *rstd, const float *x, const float *w, size_t N,
                         size_t C, float eps);
void swiglu_forward_ref(float *out, const float *gate, const float *up, size_t n);

#endif
