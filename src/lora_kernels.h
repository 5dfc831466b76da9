// lora_kernels.h: the rank-r products of a LoRA branch, fused per token.
//
// LoRA's products have one tiny dimension (the rank r, 8 or 16) and are bound by reading the
// activations once, not by arithmetic: as general matrix products (lora.c's _ref versions)
// each of the six is its own threaded call with its own packing, and together they took
// about a tenth of a GPT-2 training step. Here one parallel pass over the tokens does the
// forward (h and y), and one the backward (dh, dx, and per-block partial sums of dA and dB
// reduced in a fixed order), so results do not depend on the thread count.
//
// Shapes as lora.h: A [r, in], B [out, r], x/xd (N, in), y/dy (N, out), h/dh stored (r, N).
// Never call these inside a parallel region.
#ifndef QLORA_LORA_KERNELS_H
#define QLORA_LORA_KERNELS_H

#include <stddef.h>

// h (r,N) = A x^T (overwritten); y (N,out) += scaling * h^T B^T.
void lora_kernel_forward(const float *A, const float *B, size_t r, size_t in, size_t out,
                         float scaling, const float *x, size_t N, float *h, float *y);

// dh (r,N) = scaling * B^T dy^T (overwritten); dx (N,in) += dh^T A when dx != NULL;
// dA += dh x; dB += scaling * dy^T h^T.
void lora_kernel_backward(const float *A, const float *B, size_t r, size_t in, size_t out,
                          float scaling, const float *x, const float *dy, const float *h,
                          size_t N, float *dh, float *dx, float *dA, float *dB);

#endif
