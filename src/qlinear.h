// qlinear.h: a frozen linear layer y = x W^T + b whose weight W [out, in] is stored in one
// of the QuantType formats (fp32, NF4/FP4 with or without double quantization, INT8).
// The quantized weight is the only copy. With qlora's own sgemm (gemm.h), NF4/FP4 codes are
// dequantized straight into the product's packed panels (a few KiB in L2 at a time);
// otherwise a tile of rows at a time goes into a caller's scratch buffer
// (QLINEAR_TILE_FLOATS floats) and on to OpenBLAS. With bf16 set (and bf16 instructions
// present), the products round the weight and the input to bf16 and sum in fp32
// (bgemm.h), NF4/FP4 codes going straight into bf16 panels; products of at most
// GEMM_GEMV_ROWS rows stay fp32 (matrix-vector work, bound by reading the weight).
// Not here: LoRA (lora.c), choosing formats per layer (model.c).
#ifndef QLORA_QLINEAR_H
#define QLORA_QLINEAR_H

#include <stdbool.h>
#include <stddef.h>

#include "quant.h"

// Scratch a tile may use: 256 K floats (1 MiB) keeps the tile in L2 while sgemm reads it.
#define QLINEAR_TILE_FLOATS (256 * 1024)

typedef struct {
    size_t out, in;
    QuantType type;      // QUANT_NONE, QUANT_NF4, QUANT_FP4 or QUANT_INT8
    float *w;            // [out, in] when type == QUANT_NONE, owned
    Q4Tensor q4;         // NF4 / FP4
    QIntTensor qi;       // INT8
    float *bias;         // [out], owned, never quantized; NULL: the layer has no bias
    bool bf16;           // multiply in bf16 with fp32 sums (set by model_set_bf16)
} QLinear;

// Take W given as [out, in] (nn.Linear's layout; w_out_in is not kept) and store it in the
// chosen format; blocks run along the input dimension as transformers + bitsandbytes do.
// bias [out] is copied, or NULL for a layer without one. label names the tensor in errors.
bool qlinear_init_rows(QLinear *l, const float *w_out_in, const float *bias, size_t in, size_t out,
                       QuantType type, size_t blocksize, bool double_quant, const char *label,
                       Error *err);
// The same from W in HF Conv1D layout [in, out] (GPT-2's files), transposed first.
bool qlinear_init(QLinear *l, const float *w_in_out, const float *bias, size_t in, size_t out,
                  QuantType type, size_t blocksize, bool double_quant, const char *label,
                  Error *err);
void qlinear_free(QLinear *l);

// True when products of N rows with weights of this type dequantize inside the native
// sgemm's packing (panel sources), false when they go through a dequantized tile.
bool qlinear_dequant_in_products(QuantType type, size_t N);

// Rows [r0, r1) of W as fp32 into dst ((r1-r0) x in). Overwrites dst.
void qlinear_rows(const QLinear *l, size_t r0, size_t r1, float *dst);

// y (N,out) = x (N,in) W^T + b. Overwrites y. scratch: QLINEAR_TILE_FLOATS floats (unused
// for fp32 weights). If t_dequant is non-NULL, the seconds spent dequantizing are added.
void qlinear_forward(const QLinear *l, float *y, const float *x, size_t N, float *scratch,
                     double *t_dequant);
// dx (N,in) += dy (N,out) W. No gradient for W or b (frozen).
void qlinear_backward_input(const QLinear *l, float *dx, const float *dy, size_t N,
                            float *scratch, double *t_dequant);

// Bytes held for the weight (codes / values), its quantization constants, and the bias.
size_t qlinear_weight_bytes(const QLinear *l);
size_t qlinear_constant_bytes(const QLinear *l);

#endif
