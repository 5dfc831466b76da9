// quant.h: blockwise quantizers, exactly as bitsandbytes stores 4-bit weights (docs/formats.md),
// plus the 8-bit and plain 4-bit integer schemes the teaching part and
// `--quant int8` use.
//
// 4-bit (NF4, FP4), type Q4Tensor. A tensor of n values (flattened row-major) is cut into
// blocks of `blocksize` consecutive values (the last may be partial). Per block:
//   absmax  = max |x|;  s = x / absmax (as x * (1/absmax)), clamped to [-1, 1];
//   code    = index of the nearest value in the 16-entry table (ties to the lower code for
//             NF4; FP4 follows bnb's CUDA sign + magnitude tree);
//   codes   (n+1)/2 bytes; byte j = code[2j] << 4 | code[2j+1] (first element high nibble).
// Without double quantization `absmax` is kept as f32 per block. With it (bnb's
// compress_statistics / QLoRA's DQ), the per-block absmax values of one tensor are
//   offset   = mean(absmax) (f32, one per tensor);
//   absmax_q = 8-bit code of (absmax - offset) in the signed dynamic map (DQ_MAP), blockwise
//              with QUANT_DQ_BLOCK (256) blocks, each with an f32 absmax2;
// and a block's scale is rebuilt as (dq_map[absmax_q] * absmax2) + offset, two separate f32
// roundings (the build uses -ffp-contract=off so no FMA fuses them).
// weight = code_table[code] * scale.
//
// Integer schemes, type QIntTensor (per block of `blocksize`):
//   QUANT_INT8      symmetric absmax: q = round(x * 127 / absmax) in [-127, 127], x ~ q*absmax/127
//   QUANT_INT8_ASYM min/max with zero-point: scale = (max-min)/255, z = round(-min/scale)
//                   clamped to [0, 255], q = clamp(round(x/scale) + z, 0, 255), x ~ (q-z)*scale
//   QUANT_INT4      symmetric absmax: q in [-7, 7], packed two per byte as q+8, high nibble first
// Not here: matmuls (gemm.c), which layers are quantized (model.c), file formats (qstore.c, cmd/quant.c).
#ifndef QLORA_QUANT_H
#define QLORA_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef enum {
    QUANT_NONE = 0,   // fp32
    QUANT_NF4,
    QUANT_FP4,
    QUANT_INT8,       // symmetric absmax per block
    QUANT_INT8_ASYM,  // min/max with zero-point per block
    QUANT_INT4,       // symmetric absmax per block
} QuantType;

#define QUANT_DEFAULT_BLOCK 64
#define QUANT_MIN_BLOCK 32
#define QUANT_MAX_BLOCK 4096
#define QUANT_DQ_BLOCK 256  // nested blocksize of double quantization (bnb's fixed value)

extern const float NF4_CODE[16];   // docs/formats.md, "NF4 and FP4 code tables"
extern const float FP4_CODE[16];   // same section; by 4-bit code (not value order)
extern const float DQ_MAP[256];    // signed dynamic 8-bit map, docs/formats.md

// "nf4" -> QUANT_NF4 etc.; returns false for an unknown name.
bool quant_parse(const char *name, QuantType *out);
const char *quant_name(QuantType t);
// True for blocksize a power of two in [QUANT_MIN_BLOCK, QUANT_MAX_BLOCK].
bool quant_blocksize_ok(size_t blocksize);

// Index of the first NaN or Inf in x[0..n), or n if all are finite.
size_t quant_find_nonfinite(const float *x, size_t n);

// Nearest-code rules on an already scaled value s in [-1, 1].
uint8_t nf4_encode(float s);   // count of NF4 midpoints strictly below s
uint8_t fp4_encode(float s);   // bnb CUDA rule: sign bit (s < 0), then magnitude tree
uint8_t dq_encode(float s);    // count of DQ_MAP midpoints strictly below s
float nf4_threshold(int k);    // k = 0..14: f32 midpoint between NF4_CODE[k] and [k+1]

typedef struct {
    QuantType type;       // QUANT_NF4 or QUANT_FP4
    size_t n;             // number of values
    size_t blocksize;
    size_t n_blocks;      // ceil(n / blocksize)
    uint8_t *codes;       // (n + 1) / 2 bytes, owned
    float code[16];       // value of each 4-bit code (bnb's quant_map)
    bool double_quant;
    float *absmax;        // [n_blocks] f32, only when !double_quant, owned
    uint8_t *absmax_q;    // [n_blocks], only when double_quant, owned
    float *absmax2;       // [ceil(n_blocks / QUANT_DQ_BLOCK)], only when double_quant, owned
    float offset;         // mean of the first-level absmax, only when double_quant
    float dq_map[256];    // the 8-bit map absmax_q indexes (bnb's nested_quant_map)
} Q4Tensor;

// Quantize x[0..n) into q (allocating its buffers). type QUANT_NF4 or QUANT_FP4, blocksize
// valid per quant_blocksize_ok. Rejects NaN/Inf with an error naming `label` and the index.
bool q4_quantize(Q4Tensor *q, const float *x, size_t n, QuantType type, size_t blocksize,
                 bool double_quant, const char *label, Error *err);
void q4_free(Q4Tensor *q);

// Scale of block b (the rebuilt absmax with double quantization).
float q4_block_scale(const Q4Tensor *q, size_t b);

// Dequantize values [start, start + count) into out (count floats). Overwrites out.
// start must be a multiple of q->blocksize. OpenMP-parallel over blocks; call it outside
// any parallel region. Vectorised with AVX-512 when built for it.
void q4_dequantize(const Q4Tensor *q, size_t start, size_t count, float *out);
// The same for any start and count, on the calling thread only (no OpenMP): for code that
// is already inside a parallel region, such as the packing of sgemm_native_b panels.
void q4_dequantize_span(const Q4Tensor *q, size_t start, size_t count, float *out);
// Plain scalar reference of the same (tests compare the two); any start.
void q4_dequantize_ref(const Q4Tensor *q, size_t start, size_t count, float *out);

// Fused bf16 panels for bgemm.h's panel sources: q viewed as a matrix W with rows of
// row_len values (W[r][c] = value r * row_len + c), decoded straight into bgemm's
// pair-interleaved layout (32 columns, dst[((k / 2) * 32 + j) * 2 + k % 2] = bf16 bits of
// op(B)[k][j] for k < kc, j < n <= 32; zeros for j >= n and kc <= k < round_up(kc, 32)),
// each value code * block scale in fp32 then rounded to nearest even bf16: bit for bit
// what q4_dequantize_span followed by bgemm_pack_transposed / bgemm_pack_rows gives.
// Calling-thread only (no OpenMP). They return false and leave dst untouched when this
// build or CPU lacks AVX512-BF16, or when row_len or the column offset is odd (values
// not starting on a byte); the caller then takes the two-step path.
// Forward panel, op(B)[k][j] = W[r0 + j][p0 + k]: rows r0.. of W, transposed.
bool q4_pack_bf16_rows_t(const Q4Tensor *q, size_t row_len, size_t r0, size_t n, size_t p0,
                         size_t kc, uint16_t *dst);
// Backward panel, op(B)[k][j] = W[p0 + k][j0 + j]: n values of each of rows p0..p0+kc.
bool q4_pack_bf16_rows(const Q4Tensor *q, size_t row_len, size_t p0, size_t kc, size_t j0,
                       size_t n, uint16_t *dst);

// Bytes of storage: codes, first-level constants (absmax or absmax_q) and, with double
// quantization, absmax2 plus the f32 offset. Shared code tables are not counted.
size_t q4_code_bytes(const Q4Tensor *q);
size_t q4_constant_bytes(const Q4Tensor *q);
double q4_bits_per_param(const Q4Tensor *q);

typedef struct {
    QuantType type;       // QUANT_INT8, QUANT_INT8_ASYM or QUANT_INT4
    size_t n;
    size_t blocksize;
    size_t n_blocks;
    uint8_t *q;           // n bytes (int8 kinds; INT8 stores int8_t bits) or (n+1)/2 (INT4)
    float *scale;         // [n_blocks]
    uint8_t *zero;        // [n_blocks] zero-points, only for QUANT_INT8_ASYM
} QIntTensor;

// blocksize: any even number (n or more = one scale for the whole tensor).
bool qint_quantize(QIntTensor *q, const float *x, size_t n, QuantType type, size_t blocksize,
                   const char *label, Error *err);
void qint_free(QIntTensor *q);
// Dequantize values [start, start + count), start a multiple of blocksize. Overwrites out.
void qint_dequantize(const QIntTensor *q, size_t start, size_t count, float *out);
size_t qint_code_bytes(const QIntTensor *q);
size_t qint_constant_bytes(const QIntTensor *q);

#endif
