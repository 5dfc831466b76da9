// cmd/quant.c: `qlora quantize` and `qlora dequantize` (file-level quantization with the
// bitsandbytes serialization of qstore.h).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/model_args.h"
#include "ds.h"
#include "path.h"
#include "qstore.h"

// The dtypes quantize turns into 4-bit codes (the others are copied).
static bool is_float(StDtype dt) {
    return dt == ST_F32 || dt == ST_F16 || dt == ST_BF16 || dt == ST_F64;
}

// The torch dtype name the quant state records for a tensor stored as dt.
static const char *torch_dtype(StDtype dt) {
    switch (dt) {
    case ST_F16: return "float16";
    case ST_BF16: return "bfloat16";
    case ST_F64: return "float64";
    default: return "float32";
    }
}

typedef struct {
    const char *in, *out, *type;
    size_t blocksize;
    bool no_double_quant;
} QuantizeArgs;

static const char *const TYPE_CHOICES[] = {"nf4", "fp4", NULL};

static const CliOption QUANTIZE_OPTIONS[] = {
    {"IN.safetensors", CLI_STR(QuantizeArgs, in), NULL, "the file to quantize", .flags = CLI_REQUIRED},
    {"OUT.safetensors", CLI_STR(QuantizeArgs, out), NULL, "the file to write", .flags = CLI_REQUIRED},
    {"--type", CLI_CHOICE(QuantizeArgs, type), NULL, "the 4-bit code book", .choices = TYPE_CHOICES},
    {"--blocksize", CLI_CALL(QuantizeArgs, blocksize), "N",
     "values per block, a power of two in [32, 4096] (default 64)", .call = cli_parse_blocksize},
    {"--no-double-quant", CLI_FLAG(QuantizeArgs, no_double_quant), NULL, "keep the block scales in fp32"},
    CLI_END};

static const CliCommand QUANTIZE = {
    .name = "quantize",
    .about =
    "Quantizes every floating tensor of IN (flattened row-major, as stored) to 4 bits with\n"
    "one scale per block (default nf4, blocksize 64, double-quantized scales) and writes the\n"
    "bitsandbytes/transformers serialization. Other tensors are copied unchanged.\n"
    "Prints one line per tensor: elements, bytes before and after, bits per parameter, mean\n"
    "absolute and RMS error of the round trip.\n",
    .options = QUANTIZE_OPTIONS};

// Totals over the quantized tensors, for the last line.
typedef struct {
    size_t before, after, n;
} QuantTotals;

// Quantize tensor t (floating point, n > 0) into q, add it to w and print its line.
static bool quantize_tensor(const QuantizeArgs *a, const SafeTensors *st, const StTensor *t, Q4Tensor *q,
                            StWriter *w, QuantTotals *tot, Error *err) {
    QuantType type;
    CHECK(quant_parse(a->type, &type));  // one of TYPE_CHOICES
    const size_t n = t->n_elements;
    float *x = xmalloc_aligned(n * sizeof(float));
    float *y = xmalloc_aligned(n * sizeof(float));
    char *label = path_fmt("%s: tensor '%s'", a->in, t->name);
    bool ok = st_read_f32(st, t, x, err) && q4_quantize(q, x, n, type, a->blocksize, !a->no_double_quant, label, err);
    if (ok) {
        q4_dequantize(q, 0, n, y);
        double abs_sum = 0.0, sq_sum = 0.0;
        for (size_t k = 0; k < n; k++) {
            double e = (double)y[k] - (double)x[k];
            abs_sum += fabs(e);
            sq_sum += e * e;
        }
        size_t before = t->end - t->begin;
        size_t after = q4_code_bytes(q) + q4_constant_bytes(q);
        printf("%-40s %12zu %14zu %14zu %8.3f %12.4e %12.4e\n", t->name, n, before, after, q4_bits_per_param(q),
               abs_sum / (double)n, sqrt(sq_sum / (double)n));
        tot->before += before;
        tot->after += after;
        tot->n += n;
        qstore_add(w, t->name, q, t->ndim, t->shape, torch_dtype(t->dtype));
    }
    free(label);
    free(x);
    free(y);
    return ok;
}

int cmd_quantize(int argc, char **argv) {
    QuantizeArgs a = {.type = "nf4", .blocksize = QUANT_DEFAULT_BLOCK};
    int rc = cli_parse(&QUANTIZE, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    Error err = {0};
    if (!path_check_apart("OUT", a.out, "IN", a.in, &err)) die_error(&err);
    SafeTensors st;
    if (!st_open(&st, a.in, &err)) die_error(&err);
    for (size_t i = 0; i < st.n_tensors; i++)  // its absmax/quant_map would be quantized again
        if (strstr(st.tensors[i].name, QSTORE_STATE_SUFFIX))
            die(EXIT_BAD_INPUT, "%s: tensor '%s': the file is already quantized (expected floating-point "
                                "weights; 'qlora dequantize' restores them)", a.in, st.tensors[i].name);
    Q4Tensor *qs = xcalloc(st.n_tensors ? st.n_tensors : 1, sizeof(Q4Tensor));
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    printf("%-40s %12s %14s %14s %8s %12s %12s\n", "tensor", "elements", "bytes_before",
           "bytes_after", "bits/p", "mean_abs_err", "rms_err");
    QuantTotals tot = {0};
    bool ok = true;
    for (size_t i = 0; ok && i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        if (is_float(t->dtype) && t->n_elements > 0) ok = quantize_tensor(&a, &st, t, &qs[i], &w, &tot, &err);
        else st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data);  // copied as they are
    }
    if (ok) ok = st_writer_write(&w, a.out, &err);
    if (ok && tot.n)
        printf("total: %zu elements, %zu -> %zu bytes (%.2fx smaller), %.3f bits/param; wrote %s\n", tot.n,
               tot.before, tot.after, (double)tot.before / (double)tot.after,
               8.0 * (double)tot.after / (double)tot.n, a.out);
    st_writer_free(&w);
    for (size_t i = 0; i < st.n_tensors; i++) q4_free(&qs[i]);
    free(qs);
    st_close(&st);
    if (!ok) die_error(&err);
    return 0;
}

typedef struct {
    const char *in, *out;
} DequantizeArgs;

static const CliOption DEQUANTIZE_OPTIONS[] = {
    {"Q.safetensors", CLI_STR(DequantizeArgs, in), NULL, "a quantized file", .flags = CLI_REQUIRED},
    {"OUT.safetensors", CLI_STR(DequantizeArgs, out), NULL, "the file to write", .flags = CLI_REQUIRED},
    CLI_END};

static const CliCommand DEQUANTIZE = {
    .name = "dequantize",
    .about =
    "Turns every 4-bit tensor of Q (as written by 'qlora quantize' or bitsandbytes) back into\n"
    "an F32 tensor of its original shape and name. Other tensors are copied unchanged.\n",
    .options = DEQUANTIZE_OPTIONS};

int cmd_dequantize(int argc, char **argv) {
    DequantizeArgs a = {0};
    int rc = cli_parse(&DEQUANTIZE, &a, argc, argv);
    if (rc != CLI_RUN) return rc;
    const char *in = a.in, *out = a.out;
    Error err = {0};
    if (!path_check_apart("OUT", out, "Q", in, &err)) die_error(&err);
    SafeTensors st;
    if (!st_open(&st, in, &err)) die_error(&err);
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    // Pass 1: every quant state names a group of tensors; rebuild each group.
    struct { char *key; int value; } *consumed = NULL;  // names that belong to a group
    sh_new_arena(consumed);
    static const char *const COMPANIONS[] = {"", ".absmax", ".quant_map", ".nested_absmax",
                                             ".nested_quant_map"};
    bool ok = true;
    size_t n_groups = 0;
    for (size_t i = 0; ok && i < st.n_tensors; i++) {
        char base[512];
        if (!qstore_is_state(st.tensors[i].name, base, sizeof base)) continue;
        Q4Tensor q;
        int ndim;
        uint64_t shape[ST_MAX_DIMS];
        if (!(ok = qstore_load(&st, base, &q, &ndim, shape, &err))) break;
        float *y = xmalloc_aligned((q.n ? q.n : 1) * sizeof(float));
        if (q.n) q4_dequantize(&q, 0, q.n, y);
        st_writer_add_owned(&w, base, ST_F32, ndim, shape, y);
        q4_free(&q);
        shput(consumed, st.tensors[i].name, 1);
        for (size_t k = 0; k < sizeof COMPANIONS / sizeof COMPANIONS[0]; k++) {
            char name[600];
            snprintf(name, sizeof name, "%s%s", base, COMPANIONS[k]);
            shput(consumed, name, 1);
        }
        n_groups++;
    }
    // Pass 2: everything else is copied unchanged.
    for (size_t i = 0; ok && i < st.n_tensors; i++)
        if (shgeti(consumed, st.tensors[i].name) < 0)
            st_writer_add(&w, st.tensors[i].name, st.tensors[i].dtype, st.tensors[i].ndim,
                          st.tensors[i].shape, st.tensors[i].data);
    if (ok) ok = st_writer_write(&w, out, &err);
    if (ok) printf("dequantized %zu tensors to F32; wrote %s\n", n_groups, out);
    shfree(consumed);
    st_writer_free(&w);
    st_close(&st);
    if (!ok) die_error(&err);
    return 0;
}
