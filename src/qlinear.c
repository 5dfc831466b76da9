// qlinear.c: see qlinear.h.
#include "qlinear.h"

#include <stdlib.h>
#include <string.h>

#include "bgemm.h"
#include "gemm.h"
#include "ops.h"
#include "sgemm.h"

bool qlinear_init_rows(QLinear *l, const float *w_out_in, const float *bias, size_t in, size_t out,
                       QuantType type, size_t blocksize, bool double_quant, const char *label,
                       Error *err) {
    memset(l, 0, sizeof *l);
    l->in = in;
    l->out = out;
    l->type = type;
    bool ok = true;
    switch (type) {
    case QUANT_NONE:
        l->w = xmalloc_aligned(in * out * sizeof(float));
        memcpy(l->w, w_out_in, in * out * sizeof(float));
        break;
    case QUANT_NF4:
    case QUANT_FP4:
        ok = q4_quantize(&l->q4, w_out_in, in * out, type, blocksize, double_quant, label, err);
        break;
    case QUANT_INT8:
        ok = qint_quantize(&l->qi, w_out_in, in * out, type, blocksize, label, err);
        break;
    default:
        ok = error_set(err, "%s: weights cannot be stored as %s (use none, nf4, fp4 or int8)",
                       label, quant_name(type));
    }
    if (!ok) return false;
    CHECK(type == QUANT_NONE || in % blocksize == 0);  // model.c rejects other sizes first
    if (bias) {
        l->bias = xmalloc(out * sizeof(float));
        memcpy(l->bias, bias, out * sizeof(float));
    }
    return true;
}

bool qlinear_init(QLinear *l, const float *w_in_out, const float *bias, size_t in, size_t out,
                  QuantType type, size_t blocksize, bool double_quant, const char *label,
                  Error *err) {
    float *wt = xmalloc_aligned(in * out * sizeof(float));
    #pragma omp parallel for schedule(static)
    for (size_t o = 0; o < out; o++)
        for (size_t i = 0; i < in; i++) wt[o * in + i] = w_in_out[i * out + o];
    bool ok = qlinear_init_rows(l, wt, bias, in, out, type, blocksize, double_quant, label, err);
    free(wt);
    return ok;
}

void qlinear_free(QLinear *l) {
    free(l->w);
    q4_free(&l->q4);
    qint_free(&l->qi);
    free(l->bias);
    memset(l, 0, sizeof *l);
}

void qlinear_rows(const QLinear *l, size_t r0, size_t r1, float *dst) {
    const size_t n = (r1 - r0) * l->in;
    switch (l->type) {
    case QUANT_NONE: memcpy(dst, l->w + r0 * l->in, n * sizeof(float)); break;
    case QUANT_NF4:
    case QUANT_FP4: q4_dequantize(&l->q4, r0 * l->in, n, dst); break;
    default: qint_dequantize(&l->qi, r0 * l->in, n, dst); break;
    }
}

// Rows per tile: as many as fit QLINEAR_TILE_FLOATS, at least one.
static size_t tile_rows(const QLinear *l) {
    size_t r = QLINEAR_TILE_FLOATS / l->in;
    return r ? r : 1;
}

// Dequantize rows [r0, r1) into scratch, adding the time taken to *t_dequant if given.
static void dequant_tile(const QLinear *l, size_t r0, size_t r1, float *scratch, double *t_dequant) {
    double t0 = t_dequant ? time_now() : 0;
    qlinear_rows(l, r0, r1, scratch);
    if (t_dequant) *t_dequant += time_now() - t0;
}

// Panel sources for the native sgemm: NF4/FP4 codes dequantized straight into the packed
// layout, in L2, a panel at a time; no tile of fp32 rows exists (sgemm.h).
// Forward, op(B) = W^T: op(B)[k][j] = W[j][k], rows j0.. of W dequantized then transposed.
static void fill_wt_panel(const void *ctx, size_t p0, size_t kc, size_t j0, size_t n, float *dst) {
    const QLinear *l = ctx;
    float rows[SGEMM_NR * SGEMM_KC] __attribute__((aligned(64)));
    for (size_t j = 0; j < n; j++) q4_dequantize_span(&l->q4, (j0 + j) * l->in + p0, kc, rows + j * kc);
    sgemm_pack_transposed(rows, kc, n, kc, dst);
}

// Backward, op(B) = W: op(B)[k][j] = W[k][j], a run of n values of row k per panel row.
static void fill_w_panel(const void *ctx, size_t p0, size_t kc, size_t j0, size_t n, float *dst) {
    const QLinear *l = ctx;
    for (size_t k = 0; k < kc; k++) {
        float *d = dst + k * SGEMM_NR;
        q4_dequantize_span(&l->q4, (p0 + k) * l->in + j0, n, d);
        for (size_t j = n; j < SGEMM_NR; j++) d[j] = 0.0f;
    }
}

// The same two panels in bf16 for the bf16 products (bgemm.h's pair-interleaved layout):
// codes decoded straight into bf16 (quant.h's fused panels) where that applies, else
// through an fp32 temp that bgemm's packing rounds (the same bits either way).
static void fill_wt_panel_bf16(const void *ctx, size_t p0, size_t kc, size_t j0, size_t n, uint16_t *dst) {
    const QLinear *l = ctx;
    if (q4_pack_bf16_rows_t(&l->q4, l->in, j0, n, p0, kc, dst)) return;
    float rows[BGEMM_NR * BGEMM_KC] __attribute__((aligned(64)));
    for (size_t j = 0; j < n; j++) q4_dequantize_span(&l->q4, (j0 + j) * l->in + p0, kc, rows + j * kc);
    bgemm_pack_transposed(rows, kc, n, kc, dst);
}

static void fill_w_panel_bf16(const void *ctx, size_t p0, size_t kc, size_t j0, size_t n, uint16_t *dst) {
    const QLinear *l = ctx;
    if (q4_pack_bf16_rows(&l->q4, l->in, p0, kc, j0, n, dst)) return;
    float rows[BGEMM_KC * BGEMM_NR] __attribute__((aligned(64)));
    for (size_t k = 0; k < kc; k++) q4_dequantize_span(&l->q4, (p0 + k) * l->in + j0, n, rows + k * BGEMM_NR);
    bgemm_pack_rows(rows, BGEMM_NR, n, kc, dst);
}

// True when this product runs in bf16: the layer asks for it and it has enough rows.
static bool use_bf16(const QLinear *l, size_t N) { return l->bf16 && N > GEMM_GEMV_ROWS; }

// y (N,out) = x W^T in bf16 (no bias). INT8 goes through a dequantized fp32 tile.
static void forward_bf16(const QLinear *l, float *y, const float *x, size_t N, float *scratch,
                         double *t_dequant) {
    if (l->type == QUANT_NF4 || l->type == QUANT_FP4) {
        const BgemmPanelSource src = {fill_wt_panel_bf16, l};
        matmul_bf16_panels(N, l->out, l->in, 1.0f, x, l->in, &src, 0.0f, y, l->out);
    } else if (l->type == QUANT_NONE) {
        matmul_bf16(true, y, x, l->w, N, l->out, l->in, 1.0f, 0.0f, l->in, l->in, l->out);
    } else {
        const size_t tr = tile_rows(l);
        for (size_t r0 = 0; r0 < l->out; r0 += tr) {
            const size_t r1 = r0 + tr < l->out ? r0 + tr : l->out;
            dequant_tile(l, r0, r1, scratch, t_dequant);
            matmul_bf16(true, y + r0, x, scratch, N, r1 - r0, l->in, 1.0f, 0.0f, l->in, l->in, l->out);
        }
    }
}

// dx (N,in) += dy (N,out) W in bf16.
static void backward_input_bf16(const QLinear *l, float *dx, const float *dy, size_t N,
                                float *scratch, double *t_dequant) {
    if (l->type == QUANT_NF4 || l->type == QUANT_FP4) {
        const BgemmPanelSource src = {fill_w_panel_bf16, l};
        matmul_bf16_panels(N, l->in, l->out, 1.0f, dy, l->out, &src, 1.0f, dx, l->in);
    } else if (l->type == QUANT_NONE) {
        matmul_bf16(false, dx, dy, l->w, N, l->in, l->out, 1.0f, 1.0f, l->out, l->in, l->in);
    } else {
        const size_t tr = tile_rows(l);
        for (size_t r0 = 0; r0 < l->out; r0 += tr) {
            const size_t r1 = r0 + tr < l->out ? r0 + tr : l->out;
            dequant_tile(l, r0, r1, scratch, t_dequant);
            matmul_bf16(false, dx, dy + r0, scratch, N, l->in, r1 - r0, 1.0f, 1.0f, l->out, l->in, l->in);
        }
    }
}

bool qlinear_dequant_in_products(QuantType type, size_t N) {
    return (type == QUANT_NF4 || type == QUANT_FP4) && gemm_native_for_rows(N);
}

void qlinear_forward(const QLinear *l, float *y, const float *x, size_t N, float *scratch,
                     double *t_dequant) {
    if (use_bf16(l, N)) {
        forward_bf16(l, y, x, N, scratch, t_dequant);
    } else if (qlinear_dequant_in_products(l->type, N)) {
        const SgemmPanelSource src = {fill_wt_panel, l};
        matmul_panels(N, l->out, l->in, 1.0f, x, l->in, &src, 0.0f, y, l->out);
    } else if (l->type == QUANT_NONE) {
        matmul_nt(y, x, l->w, N, l->out, l->in, 1.0f, 0.0f, l->in, l->in, l->out);
    } else {
        const size_t tr = tile_rows(l);
        for (size_t r0 = 0; r0 < l->out; r0 += tr) {
            const size_t r1 = r0 + tr < l->out ? r0 + tr : l->out;
            dequant_tile(l, r0, r1, scratch, t_dequant);
            matmul_nt(y + r0, x, scratch, N, r1 - r0, l->in, 1.0f, 0.0f, l->in, l->in, l->out);
        }
    }
    if (l->bias) bias_add(y, l->bias, N, l->out);
}

void qlinear_backward_input(const QLinear *l, float *dx, const float *dy, size_t N,
                            float *scratch, double *t_dequant) {
    if (use_bf16(l, N)) {
        backward_input_bf16(l, dx, dy, N, scratch, t_dequant);
        return;
    }
    if (qlinear_dequant_in_products(l->type, N)) {
        const SgemmPanelSource src = {fill_w_panel, l};
        matmul_panels(N, l->in, l->out, 1.0f, dy, l->out, &src, 1.0f, dx, l->in);
        return;
    }
    if (l->type == QUANT_NONE) {
        matmul_nn(dx, dy, l->w, N, l->in, l->out, 1.0f, 1.0f, l->out, l->in, l->in);
        return;
    }
    const size_t tr = tile_rows(l);
    for (size_t r0 = 0; r0 < l->out; r0 += tr) {
        const size_t r1 = r0 + tr < l->out ? r0 + tr : l->out;
        dequant_tile(l, r0, r1, scratch, t_dequant);
        // dx += dy[:, r0:r1] W[r0:r1, :]
        matmul_nn(dx, dy + r0, scratch, N, l->in, r1 - r0, 1.0f, 1.0f, l->out, l->in, l->in);
    }
}

size_t qlinear_weight_bytes(const QLinear *l) {
    switch (l->type) {
    case QUANT_NONE: return l->in * l->out * sizeof(float);
    case QUANT_NF4:
    case QUANT_FP4: return q4_code_bytes(&l->q4);
    default: return qint_code_bytes(&l->qi);
    }
}

size_t qlinear_constant_bytes(const QLinear *l) {
    switch (l->type) {
    case QUANT_NONE: return 0;
    case QUANT_NF4:
    case QUANT_FP4: return q4_constant_bytes(&l->q4);
    default: return qint_constant_bytes(&l->qi);
    }
}
