// ops.h: fp32 layer kernels of GPT-2 as _forward/_backward pairs (docs/formats.md, "GPT-2 layer math").
// Shape letters: B batch, T time, C channels, NH heads, HS = C/NH head size, V vocabulary,
// N = B*T rows. All tensors row-major and contiguous unless a stride is given.
// Forwards overwrite their outputs. Backwards ACCUMULATE (+=) into every gradient they
// are given (the caller zeroes); a NULL gradient pointer means "not needed".
// Kernels never allocate and never call BLAS from inside their parallel regions, except
// attention, whose products go through gemm.h between parallel loops.
#ifndef QLORA_OPS_H
#define QLORA_OPS_H

#include <stddef.h>

// out[b,t,:] = wte[tokens[b,t],:] + wpe[t,:]. tokens must be valid ids (checked upstream).
void embedding_forward(float *out, const int *tokens, const float *wte, const float *wpe,
                       size_t B, size_t T, size_t C);
// dwte/dwpe accumulate (method full); either may be NULL.
void embedding_backward(float *dwte, float *dwpe, const float *dout, const int *tokens,
                        size_t B, size_t T, size_t C);

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

// Causal self-attention on the fused qkv (B,T,3C): q | k | v, head h uses columns
// [h*HS, (h+1)*HS) of each. att (B,NH,T,T) receives the softmax probabilities (zeros above
// the diagonal), out (B,T,C) the heads concatenated.
void attention_forward(float *out, float *att, const float *qkv, size_t B, size_t T, size_t C,
                       size_t NH);
// dqkv accumulates; datt is scratch of att's size (overwritten).
void attention_backward(float *dqkv, float *datt, const float *dout, const float *qkv,
                        const float *att, size_t B, size_t T, size_t C, size_t NH);

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

#endif
