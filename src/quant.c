// quant.c: see quant.h. Every rule here is pinned by docs/formats.md (NF4, double quantization) and by
// tests/test_quant.c; the comments name the bnb behaviour being matched.
#include "quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bgemm.h"

#ifdef __AVX512F__
#include <immintrin.h>

#include "simd.h"
#endif

const float NF4_CODE[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f,
};

// bnb's FP4: sign bit (bit 3), 2 exponent bits, 1 mantissa bit, bias 2; raw values divided
// by the largest magnitude (12), each quotient rounded once to f32 as torch does.
const float FP4_CODE[16] = {
    0.0f,           0.0625f / 12.0f,  8.0f / 12.0f,  1.0f,
    4.0f / 12.0f,   6.0f / 12.0f,     2.0f / 12.0f,  3.0f / 12.0f,
    -0.0f,          -0.0625f / 12.0f, -8.0f / 12.0f, -1.0f,
    -4.0f / 12.0f,  -6.0f / 12.0f,    -2.0f / 12.0f, -3.0f / 12.0f,
};

// bnb create_dynamic_map(signed=True, 7, 8) as torch 1.13.1's CPU linspace yields it
// (docs/formats.md, "Double quantization"): index 127 = 0, 255 = +1, map[k] = -map[254 - k] for k < 127.
const float DQ_MAP[256] = {
    -0.992968738f, -0.978906214f, -0.96484375f, -0.950781226f, -0.936718702f, -0.922656238f,
    -0.908593774f, -0.89453125f, -0.880468726f, -0.866406202f, -0.852343738f, -0.838281214f,
    -0.82421875f, -0.810156226f, -0.796093702f, -0.782031238f, -0.767968774f, -0.75390625f,
    -0.739843786f, -0.725781262f, -0.711718798f, -0.697656274f, -0.68359375f, -0.669531286f,
    -0.655468762f, -0.641406238f, -0.627343774f, -0.61328125f, -0.599218726f, -0.585156262f,
    -0.571093798f, -0.557031274f, -0.54296875f, -0.528906226f, -0.514843762f, -0.500781238f,
    -0.486718774f, -0.47265625f, -0.458593726f, -0.444531262f, -0.430468738f, -0.416406214f,
    -0.40234375f, -0.388281226f, -0.374218762f, -0.360156238f, -0.346093714f, -0.33203125f,
    -0.317968726f, -0.303906262f, -0.289843738f, -0.275781274f, -0.26171875f, -0.247656256f,
    -0.233593762f, -0.219531253f, -0.205468744f, -0.19140625f, -0.177343741f, -0.163281247f,
    -0.149218753f, -0.135156244f, -0.12109375f, -0.107031256f, -0.0985937491f, -0.0957812443f,
    -0.0929687545f, -0.0901562497f, -0.0873437524f, -0.0845312476f, -0.0817187428f, -0.078906253f,
    -0.0760937482f, -0.0732812509f, -0.0704687461f, -0.0676562563f, -0.0648437515f, -0.0620312467f,
    -0.0592187531f, -0.0564062484f, -0.053593751f, -0.05078125f, -0.047968749f, -0.0451562516f,
    -0.0423437469f, -0.0395312496f, -0.0367187522f, -0.0339062475f, -0.0310937501f, -0.0282812472f,
    -0.0254687499f, -0.0226562507f, -0.0198437497f, -0.0170312505f, -0.0142187504f, -0.0114062503f,
    -0.00971874967f, -0.00915624946f, -0.00859375019f, -0.00803124998f, -0.00746874977f, -0.00690625003f,
    -0.00634374982f, -0.00578125007f, -0.00521875033f, -0.00465624966f, -0.00409374991f, -0.00353124971f,
    -0.00296874996f, -0.00240624999f, -0.00184375001f, -0.00128124992f, -0.000943750085f, -0.000831249985f,
    -0.00071875006f, -0.000606250076f, -0.000493750034f, -0.000381250022f, -0.000268750038f, -0.000156250011f,
    -8.87499991e-05f, -6.62500024e-05f, -4.37499984e-05f, -2.12499981e-05f, -7.7499999e-06f, -3.25000019e-06f,
    -5.50000038e-07f, 0.0f, 5.50000038e-07f, 3.25000019e-06f, 7.7499999e-06f, 2.12499981e-05f,
    4.37499984e-05f, 6.62500024e-05f, 8.87499991e-05f, 0.000156250011f, 0.000268750038f, 0.000381250022f,
    0.000493750034f, 0.000606250076f, 0.00071875006f, 0.000831249985f, 0.000943750085f, 0.00128124992f,
    0.00184375001f, 0.00240624999f, 0.00296874996f, 0.00353124971f, 0.00409374991f, 0.00465624966f,
    0.00521875033f, 0.00578125007f, 0.00634374982f, 0.00690625003f, 0.00746874977f, 0.00803124998f,
    0.00859375019f, 0.00915624946f, 0.00971874967f, 0.0114062503f, 0.0142187504f, 0.0170312505f,
    0.0198437497f, 0.0226562507f, 0.0254687499f, 0.0282812472f, 0.0310937501f, 0.0339062475f,
    0.0367187522f, 0.0395312496f, 0.0423437469f, 0.0451562516f, 0.047968749f, 0.05078125f,
    0.053593751f, 0.0564062484f, 0.0592187531f, 0.0620312467f, 0.0648437515f, 0.0676562563f,
    0.0704687461f, 0.0732812509f, 0.0760937482f, 0.078906253f, 0.0817187428f, 0.0845312476f,
    0.0873437524f, 0.0901562497f, 0.0929687545f, 0.0957812443f, 0.0985937491f, 0.107031256f,
    0.12109375f, 0.135156244f, 0.149218753f, 0.163281247f, 0.177343741f, 0.19140625f,
    0.205468744f, 0.219531253f, 0.233593762f, 0.247656256f, 0.26171875f, 0.275781274f,
    0.289843738f, 0.303906262f, 0.317968726f, 0.33203125f, 0.346093714f, 0.360156238f,
    0.374218762f, 0.388281226f, 0.40234375f, 0.416406214f, 0.430468738f, 0.444531262f,
    0.458593726f, 0.47265625f, 0.486718774f, 0.500781238f, 0.514843762f, 0.528906226f,
    0.54296875f, 0.557031274f, 0.571093798f, 0.585156262f, 0.599218726f, 0.61328125f,
    0.627343774f, 0.641406238f, 0.655468762f, 0.669531286f, 0.68359375f, 0.697656274f,
    0.711718798f, 0.725781262f, 0.739843786f, 0.75390625f, 0.767968774f, 0.782031238f,
    0.796093702f, 0.810156226f, 0.82421875f, 0.838281214f, 0.852343738f, 0.866406202f,
    0.880468726f, 0.89453125f, 0.908593774f, 0.922656238f, 0.936718702f, 0.950781226f,
    0.96484375f, 0.978906214f, 0.992968738f, 1.0f,
};

bool quant_parse(const char *name, QuantType *out) {
    static const struct { const char *name; QuantType type; } names[] = {
        {"none", QUANT_NONE}, {"fp32", QUANT_NONE},   {"nf4", QUANT_NF4},
        {"fp4", QUANT_FP4},   {"int8", QUANT_INT8},   {"int8-asym", QUANT_INT8_ASYM},
        {"int4", QUANT_INT4},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].type;
            return true;
        }
    return false;
}

const char *quant_name(QuantType t) {
    switch (t) {
    case QUANT_NONE: return "none";
    case QUANT_NF4: return "nf4";
    case QUANT_FP4: return "fp4";
    case QUANT_INT8: return "int8";
    case QUANT_INT8_ASYM: return "int8-asym";
    case QUANT_INT4: return "int4";
    }
    return "?";
}

bool quant_blocksize_ok(size_t bs) {
    return bs >= QUANT_MIN_BLOCK && bs <= QUANT_MAX_BLOCK && (bs & (bs - 1)) == 0;
}

size_t quant_find_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return n;
}

float nf4_threshold(int k) {
    return (NF4_CODE[k] + NF4_CODE[k + 1]) * 0.5f;  // f32 midpoint, as bnb's literals round to
}

uint8_t nf4_encode(float s) {
    // Strict '>' so that a value exactly on a midpoint takes the lower code (bnb's CUDA
    // decision tree and torch.bucketize(right=False) agree on this).
    uint8_t code = 0;
    for (int k = 0; k < 15; k++) code += s > nf4_threshold(k);
    return code;
}

uint8_t fp4_encode(float s) {
    // bnb dQuantizeFP4: the sign comes from s < 0 (so -0.0 gets sign 0), then a decision
    // tree on |s| whose thresholds are the midpoints between consecutive magnitudes;
    // ties go to the smaller magnitude.
    uint8_t sign = s < 0.0f ? 8 : 0;
    float a = fabsf(s);
    uint8_t mag;
    if (a > 0.29166667f) {
        if (a > 0.583333f) mag = a > 0.8333333f ? 3 : 2;   // 1.0 : 0.667
        else mag = a > 0.4166667f ? 5 : 4;                  // 0.5 : 0.333
    } else if (a > 0.0859375f) {
        mag = a > 0.20833333f ? 7 : 6;                      // 0.25 : 0.1667
    } else {
        mag = a > 0.00260417f ? 1 : 0;                      // 0.0052 : 0
    }
    return sign | mag;
}

uint8_t dq_encode(float s) {
    // Exact nearest entry, ties to the lower index: the number of f32 midpoints strictly
    // below s (bnb's default backend, docs/formats.md). Binary search over 255 midpoints.
    int lo = 0, hi = 255;  // answer in [lo, hi]
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        float m = (DQ_MAP[mid] + DQ_MAP[mid + 1]) * 0.5f;
        if (s > m) lo = mid + 1;
        else hi = mid;
    }
    return (uint8_t)lo;
}

// Scale one block of `len` values into s[] following bnb's default backend: multiply by
// the reciprocal for a full block; divide by max(absmax, 1e-38) for a final partial block
// and store that clamped value (docs/formats.md, "Nearest code"). Returns the absmax to store.
static float scale_block(const float *x, size_t len, bool partial, float *s) {
    float amax = 0.0f;
    for (size_t i = 0; i < len; i++) amax = fmaxf(amax, fabsf(x[i]));
    if (partial) {
        float d = fmaxf(amax, 1e-38f);
        for (size_t i = 0; i < len; i++) s[i] = fminf(1.0f, fmaxf(-1.0f, x[i] / d));
        return d;
    }
    float inv = 1.0f / fmaxf(amax, 1e-38f);  // a zero block scales to 0, never divides by 0
    for (size_t i = 0; i < len; i++) s[i] = fminf(1.0f, fmaxf(-1.0f, x[i] * inv));
    return amax;
}

// 4-bit formats follow bnb's block sizes; the integer schemes take any block size (a
// whole tensor as one block is the textbook per-tensor quantization `explain` shows).
static bool check_params(QuantType type, size_t blocksize, const char *label, Error *err) {
    bool four_bit = type == QUANT_NF4 || type == QUANT_FP4;
    if (four_bit ? !quant_blocksize_ok(blocksize) : blocksize < 2 || blocksize % 2)
        return error_set(err, "%s: blocksize %zu is not %s", label, blocksize,
                         four_bit ? "a power of two in [32, 4096]" : "an even number >= 2");
    return true;
}

static bool check_finite(const float *x, size_t n, const char *label, Error *err) {
    size_t bad = quant_find_nonfinite(x, n);
    if (bad < n)
        return error_set(err, "%s: element %zu is %s; NaN/Inf values cannot be quantized "
                              "(check the source file)", label, bad,
                         isnan(x[bad]) ? "NaN" : "Inf");
    return true;
}

// Second level of double quantization (docs/formats.md, "Double quantization", steps 1-4): absmax[0..nb) becomes
// q->offset, q->absmax_q and q->absmax2.
static void double_quantize(Q4Tensor *q, const float *absmax) {
    const size_t nb = q->n_blocks, n2 = (nb + QUANT_DQ_BLOCK - 1) / QUANT_DQ_BLOCK;
    double sum = 0.0;  // torch sums in its own order; double then one rounding is closest
    for (size_t b = 0; b < nb; b++) sum += absmax[b];
    q->offset = (float)(sum / (double)nb);
    q->absmax_q = xmalloc(nb);
    q->absmax2 = xmalloc(n2 * sizeof(float));
    float centered[QUANT_DQ_BLOCK], s[QUANT_DQ_BLOCK];
    for (size_t j = 0; j < n2; j++) {
        size_t start = j * QUANT_DQ_BLOCK;
        size_t len = nb - start < QUANT_DQ_BLOCK ? nb - start : QUANT_DQ_BLOCK;
        for (size_t i = 0; i < len; i++) centered[i] = absmax[start + i] - q->offset;
        q->absmax2[j] = scale_block(centered, len, len < QUANT_DQ_BLOCK, s);
        for (size_t i = 0; i < len; i++) q->absmax_q[start + i] = dq_encode(s[i]);
    }
}

bool q4_quantize(Q4Tensor *q, const float *x, size_t n, QuantType type, size_t blocksize,
                 bool double_quant, const char *label, Error *err) {
    memset(q, 0, sizeof *q);
    if (type != QUANT_NF4 && type != QUANT_FP4)
        return error_set(err, "%s: 4-bit quantization needs nf4 or fp4, got %s", label,
                         quant_name(type));
    if (!check_params(type, blocksize, label, err) || !check_finite(x, n, label, err))
        return false;
    q->type = type;
    q->n = n;
    q->blocksize = blocksize;
    q->n_blocks = (n + blocksize - 1) / blocksize;
    q->double_quant = double_quant;
    memcpy(q->code, type == QUANT_NF4 ? NF4_CODE : FP4_CODE, sizeof q->code);
    memcpy(q->dq_map, DQ_MAP, sizeof q->dq_map);
    q->codes = xmalloc((n + 1) / 2);
    float *absmax = xmalloc((q->n_blocks ? q->n_blocks : 1) * sizeof(float));
    const uint8_t pad_code = type == QUANT_NF4 ? 7 : 0;  // code of the value 0.0
    const size_t nb = q->n_blocks;

    #pragma omp parallel
    {
        float *s = xmalloc(blocksize * sizeof(float));
        #pragma omp for schedule(static)
        for (size_t b = 0; b < nb; b++) {
            const size_t start = b * blocksize;
            const size_t len = n - start < blocksize ? n - start : blocksize;
            absmax[b] = scale_block(x + start, len, len < blocksize, s);
            uint8_t *dst = q->codes + start / 2;  // blocksize is even: blocks start on a byte
            for (size_t i = 0; i + 1 < len; i += 2) {
                uint8_t hi = type == QUANT_NF4 ? nf4_encode(s[i]) : fp4_encode(s[i]);
                uint8_t lo = type == QUANT_NF4 ? nf4_encode(s[i + 1]) : fp4_encode(s[i + 1]);
                dst[i / 2] = (uint8_t)(hi << 4 | lo);
            }
            if (len % 2) {  // odd total count: pad the low nibble with the code of 0.0
                uint8_t hi = type == QUANT_NF4 ? nf4_encode(s[len - 1]) : fp4_encode(s[len - 1]);
                dst[len / 2] = (uint8_t)(hi << 4 | pad_code);
            }
        }
        free(s);
    }

    if (double_quant) {
        double_quantize(q, absmax);
        free(absmax);
    } else {
        q->absmax = absmax;
    }
    return true;
}

void q4_free(Q4Tensor *q) {
    free(q->codes);
    free(q->absmax);
    free(q->absmax_q);
    free(q->absmax2);
    memset(q, 0, sizeof *q);
}

float q4_block_scale(const Q4Tensor *q, size_t b) {
    if (!q->double_quant) return q->absmax[b];
    // Two f32 roundings, multiply then add, as bnb's dequantize_4bit does. The build
    // passes -ffp-contract=off so the compiler cannot fuse them into one FMA.
    float t = q->dq_map[q->absmax_q[b]] * q->absmax2[b / QUANT_DQ_BLOCK];
    return t + q->offset;
}

void q4_dequantize_ref(const Q4Tensor *q, size_t start, size_t count, float *out) {
    for (size_t i = start; i < start + count; i++) {
        uint8_t byte = q->codes[i / 2];
        uint8_t c = (i % 2 == 0) ? byte >> 4 : byte & 0x0F;
        out[i - start] = q->code[c] * q4_block_scale(q, i / q->blocksize);
    }
}

#ifdef __AVX512F__
// 32 values from 16 packed bytes: widen to 16-bit lanes, put the high nibble in the low
// byte and the low nibble in the high byte (so memory order is element 2j, 2j+1), widen
// to 32-bit indices and look the 16-entry table up with one permute per 16 values.
static inline void dequant32_avx512(const uint8_t *src, __m512 table, __m512 vs, float *out) {
    const __m256i low4 = _mm256_set1_epi16(0x0F);
    __m256i w = _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)src));
    __m256i idx = _mm256_or_si256(_mm256_srli_epi16(w, 4),
                                  _mm256_slli_epi16(_mm256_and_si256(w, low4), 8));
    __m512i i0 = _mm512_cvtepu8_epi32(_mm256_castsi256_si128(idx));
    __m512i i1 = _mm512_cvtepu8_epi32(_mm256_extracti128_si256(idx, 1));
    _mm512_storeu_ps(out, _mm512_mul_ps(_mm512_permutexvar_ps(i0, table), vs));
    _mm512_storeu_ps(out + 16, _mm512_mul_ps(_mm512_permutexvar_ps(i1, table), vs));
}
#endif

void q4_dequantize_span(const Q4Tensor *q, size_t start, size_t count, float *out) {
    CHECK(start + count <= q->n);
    const size_t bs = q->blocksize, end = start + count;
#ifdef __AVX512F__
    const __m512 table = _mm512_loadu_ps(q->code);
#endif
    for (size_t i = start; i < end;) {
        const size_t b = i / bs, bend = (b + 1) * bs < end ? (b + 1) * bs : end;
        const float scale = q4_block_scale(q, b);
#ifdef __AVX512F__
        if (i % 2 == 0) {
            const __m512 vs = _mm512_set1_ps(scale);
            for (; i + 32 <= bend; i += 32) dequant32_avx512(q->codes + i / 2, table, vs, out + (i - start));
        }
#endif
        for (; i < bend; i++) {
            const uint8_t byte = q->codes[i / 2];
            out[i - start] = q->code[i % 2 == 0 ? byte >> 4 : byte & 0x0F] * scale;
        }
    }
}

void q4_dequantize(const Q4Tensor *q, size_t start, size_t count, float *out) {
    CHECK(start % q->blocksize == 0 && start + count <= q->n);
    const size_t bs = q->blocksize, b0 = start / bs, b1 = (start + count + bs - 1) / bs;
    #pragma omp parallel for schedule(static)
    for (size_t b = b0; b < b1; b++) {  // a block per iteration, each on one thread
        const size_t i0 = b * bs, len = start + count - i0 < bs ? start + count - i0 : bs;
        q4_dequantize_span(q, i0, len, out + (i0 - start));
    }
}

// ---- fused bf16 panels ----------------------------------------------------------------------
// The codes go straight into bgemm's pair-interleaved panels. A value depends only on its
// code and its block, so each block's 16 possible values code[c] * scale are computed in
// fp32 and rounded to bf16 by the instruction bgemm's packing uses (VCVTNE2PS2BF16, ties
// to even), and the codes index that table (VPERMW): the same bits as q4_dequantize_span
// followed by bgemm_pack_*, which tests/test_quant.c checks.
#if defined(__AVX512F__) && defined(__x86_64__)
#define TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// True when the fused panels may run: bf16 instructions here, blocks of a power of two of
// at least 32 values (32 consecutive values then touch at most two blocks; block = i >> shift),
// and values starting on a byte.
static bool fused_ok(const Q4Tensor *q, size_t row_len, size_t col) {
    return bgemm_isa() != BGEMM_NONE && quant_blocksize_ok(q->blocksize) && row_len % 2 == 0 &&
           col % 2 == 0;
}

// Block b's values as bf16: 16-bit lane c (and c + 16) = bf16(code[c] * scale(b)).
TARGET_BF16 static inline __m512i block_table(const Q4Tensor *q, __m512 code, size_t b) {
    const __m512 v = _mm512_mul_ps(code, _mm512_set1_ps(q4_block_scale(q, b)));
    return (__m512i)_mm512_cvtne2ps_pbh(v, v);
}

// Values [i, i + len) (i even, 1 <= len <= 32; blocksize 1 << shift) as bf16 in 16-bit lanes
// 0..len-1, +0 after: 32-bit lane t holds values 2t, 2t+1. Reads only the bytes holding
// them. VPERMW reads the low 5 bits of each index and the table repeats after 16 lanes,
// so the nibbles need no masking.
TARGET_BF16 static inline __m512i decode32(const Q4Tensor *q, int shift, __m512 code, size_t i,
                                           size_t len) {
    const uint8_t *src = q->codes + i / 2;
    const __mmask16 nbytes = (__mmask16)((1u << (len + 1) / 2) - 1);
    const __m128i bytes = len == 32 ? _mm_loadu_si128((const __m128i *)src)
                                    : _mm_maskz_loadu_epi8(nbytes, src);
    const __m128i hi = _mm_srli_epi16(bytes, 4);  // even elements: high nibble in bits 0-3
    const __m512i idx = _mm512_cvtepu8_epi16(
        _mm256_set_m128i(_mm_unpackhi_epi8(hi, bytes), _mm_unpacklo_epi8(hi, bytes)));
    const size_t b = i >> shift, last = (i + len - 1) >> shift;
    __m512i v = _mm512_permutexvar_epi16(idx, block_table(q, code, b));
    if (last != b)  // lanes from the block boundary on take the next block's values
        v = _mm512_mask_permutexvar_epi16(v, (__mmask32)(~0u << ((last << shift) - i)), idx,
                                          block_table(q, code, last));
    return len == 32 ? v : _mm512_maskz_mov_epi16((__mmask32)((1u << len) - 1), v);
}

// Forward panel (quant.h): per 32-deep step and 16 rows of W, each row's 32 values as 16
// bf16 pairs (one vector), then a 16 x 16 transpose makes them 16 pair-rows of the panel.
TARGET_BF16 bool q4_pack_bf16_rows_t(const Q4Tensor *q, size_t row_len, size_t r0, size_t n,
                                     size_t p0, size_t kc, uint16_t *dst) {
    if (!fused_ok(q, row_len, p0)) return false;
    CHECK(n <= BGEMM_NR && (n == 0 || kc == 0 || (r0 + n - 1) * row_len + p0 + kc <= q->n));
    const int shift = __builtin_ctzll(q->blocksize);
    const __m512 code = _mm512_loadu_ps(q->code);
    const size_t kcp = (kc + BGEMM_KSTEP - 1) / BGEMM_KSTEP * BGEMM_KSTEP;
    for (size_t k = 0; k < kcp; k += 32)
        for (size_t h = 0; h < BGEMM_NR; h += 16) {
            __m512i r[16];
            for (size_t j = 0; j < 16; j++) {
                const size_t i = (r0 + h + j) * row_len + p0 + k;
                r[j] = h + j < n && k < kc ? decode32(q, shift, code, i, kc - k < 32 ? kc - k : 32)
                                           : _mm512_setzero_si512();
            }
            if (h < n && k < kc) simd_transpose16x32(r);  // (all zero otherwise)
            for (size_t t = 0; t < 16; t++)
                _mm512_store_si512(dst + (k + 2 * t) * BGEMM_NR + 2 * h, r[t]);
        }
    return true;
}

// Backward panel (quant.h): rows k and k + 1 decoded (n values each) and interleaved into
// pair-row k / 2, columns 0-15 then 16-31.
TARGET_BF16 bool q4_pack_bf16_rows(const Q4Tensor *q, size_t row_len, size_t p0, size_t kc,
                                   size_t j0, size_t n, uint16_t *dst) {
    if (!fused_ok(q, row_len, j0)) return false;
    CHECK(n <= BGEMM_NR && (n == 0 || kc == 0 || (p0 + kc - 1) * row_len + j0 + n <= q->n));
    static const short lo[32] = {0, 32, 1, 33, 2, 34, 3, 35, 4, 36, 5, 37, 6, 38, 7, 39,
                                 8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
    const __m512i lo_idx = _mm512_loadu_si512(lo);
    const __m512i hi_idx = _mm512_add_epi16(lo_idx, _mm512_set1_epi16(16));
    const int shift = __builtin_ctzll(q->blocksize);
    const __m512 code = _mm512_loadu_ps(q->code);
    const size_t kcp = (kc + BGEMM_KSTEP - 1) / BGEMM_KSTEP * BGEMM_KSTEP;
    for (size_t k = 0; k < kcp; k += 2) {
        __m512i a = _mm512_setzero_si512(), b = a;
        if (n && k < kc) a = decode32(q, shift, code, (p0 + k) * row_len + j0, n);
        if (n && k + 1 < kc) b = decode32(q, shift, code, (p0 + k + 1) * row_len + j0, n);
        _mm512_store_si512(dst + k * BGEMM_NR, _mm512_permutex2var_epi16(a, lo_idx, b));
        _mm512_store_si512(dst + k * BGEMM_NR + 32, _mm512_permutex2var_epi16(a, hi_idx, b));
    }
    return true;
}
#else  // no AVX-512 in this build: callers take the two-step path
bool q4_pack_bf16_rows_t(const Q4Tensor *q, size_t row_len, size_t r0, size_t n, size_t p0,
                         size_t kc, uint16_t *dst) {
    (void)q, (void)row_len, (void)r0, (void)n, (void)p0, (void)kc, (void)dst;
    return false;
}

bool q4_pack_bf16_rows(const Q4Tensor *q, size_t row_len, size_t p0, size_t kc, size_t j0,
                       size_t n, uint16_t *dst) {
    (void)q, (void)row_len, (void)p0, (void)kc, (void)j0, (void)n, (void)dst;
    return false;
}
#endif

size_t q4_code_bytes(const Q4Tensor *q) { return (q->n + 1) / 2; }

size_t q4_constant_bytes(const Q4Tensor *q) {
    if (!q->double_quant) return q->n_blocks * sizeof(float);
    size_t n2 = (q->n_blocks + QUANT_DQ_BLOCK - 1) / QUANT_DQ_BLOCK;
    return q->n_blocks + n2 * sizeof(float) + sizeof(float);  // codes, absmax2, offset
}

double q4_bits_per_param(const Q4Tensor *q) {
    return q->n ? 8.0 * (double)(q4_code_bytes(q) + q4_constant_bytes(q)) / (double)q->n : 0.0;
}

bool qint_quantize(QIntTensor *q, const float *x, size_t n, QuantType type, size_t blocksize,
                   const char *label, Error *err) {
    memset(q, 0, sizeof *q);
    if (type != QUANT_INT8 && type != QUANT_INT8_ASYM && type != QUANT_INT4)
        return error_set(err, "%s: integer quantization needs int8, int8-asym or int4, got %s",
                         label, quant_name(type));
    if (!check_params(type, blocksize, label, err) || !check_finite(x, n, label, err))
        return false;
    q->type = type;
    q->n = n;
    q->blocksize = blocksize;
    q->n_blocks = (n + blocksize - 1) / blocksize;
    q->q = xcalloc(type == QUANT_INT4 ? (n + 1) / 2 : n, 1);
    q->scale = xmalloc((q->n_blocks ? q->n_blocks : 1) * sizeof(float));
    if (type == QUANT_INT8_ASYM) q->zero = xmalloc(q->n_blocks ? q->n_blocks : 1);
    const size_t nb = q->n_blocks;

    #pragma omp parallel for schedule(static)
    for (size_t b = 0; b < nb; b++) {
        const size_t start = b * blocksize;
        const size_t len = n - start < blocksize ? n - start : blocksize;
        const float *xb = x + start;
        if (type == QUANT_INT8_ASYM) {
            // The range always includes 0 so that 0.0 is exact and a constant block works.
            float mn = 0.0f, mx = 0.0f;
            for (size_t i = 0; i < len; i++) {
                mn = fminf(mn, xb[i]);
                mx = fmaxf(mx, xb[i]);
            }
            float scale = (mx - mn) / 255.0f;
            float z = scale > 0.0f ? fminf(255.0f, fmaxf(0.0f, nearbyintf(-mn / scale))) : 0.0f;
            q->scale[b] = scale;
            q->zero[b] = (uint8_t)z;
            for (size_t i = 0; i < len; i++) {
                float v = scale > 0.0f ? nearbyintf(xb[i] / scale) + z : z;
                q->q[start + i] = (uint8_t)fminf(255.0f, fmaxf(0.0f, v));
            }
            continue;
        }
        const float levels = type == QUANT_INT8 ? 127.0f : 7.0f;
        float amax = 0.0f;
        for (size_t i = 0; i < len; i++) amax = fmaxf(amax, fabsf(xb[i]));
        float inv = amax > 0.0f ? levels / amax : 0.0f;
        q->scale[b] = amax / levels;
        for (size_t i = 0; i < len; i++) {
            // nearbyintf rounds half to even, like torch.round
            int v = (int)fminf(levels, fmaxf(-levels, nearbyintf(xb[i] * inv)));
            size_t k = start + i;
            if (type == QUANT_INT8) {
                q->q[k] = (uint8_t)(int8_t)v;
            } else {
                uint8_t nib = (uint8_t)(v + 8);
                q->q[k / 2] |= (k % 2 == 0) ? (uint8_t)(nib << 4) : nib;
            }
        }
    }
    return true;
}

void qint_free(QIntTensor *q) {
    free(q->q);
    free(q->scale);
    free(q->zero);
    memset(q, 0, sizeof *q);
}

void qint_dequantize(const QIntTensor *q, size_t start, size_t count, float *out) {
    CHECK(start % q->blocksize == 0 && start + count <= q->n);
    const size_t bs = q->blocksize, b0 = start / bs, b1 = (start + count + bs - 1) / bs;
    #pragma omp parallel for schedule(static)
    for (size_t b = b0; b < b1; b++) {
        const size_t i0 = b * bs;
        const size_t len = start + count - i0 < bs ? start + count - i0 : bs;
        const float scale = q->scale[b];
        float *dst = out + (i0 - start);
        if (q->type == QUANT_INT8) {
            for (size_t i = 0; i < len; i++) dst[i] = (float)(int8_t)q->q[i0 + i] * scale;
        } else if (q->type == QUANT_INT8_ASYM) {
            const float z = (float)q->zero[b];
            for (size_t i = 0; i < len; i++) dst[i] = ((float)q->q[i0 + i] - z) * scale;
        } else {
            for (size_t i = 0; i < len; i++) {
                size_t k = i0 + i;
                uint8_t nib = (k % 2 == 0) ? q->q[k / 2] >> 4 : q->q[k / 2] & 0x0F;
                dst[i] = (float)((int)nib - 8) * scale;
            }
        }
    }
}

size_t qint_code_bytes(const QIntTensor *q) {
    return q->type == QUANT_INT4 ? (q->n + 1) / 2 : q->n;
}

size_t qint_constant_bytes(const QIntTensor *q) {
    return q->n_blocks * (sizeof(float) + (q->type == QUANT_INT8_ASYM ? 1 : 0));
}
