// cmd/quant.c: `qlora quantize` and `qlora dequantize` (file-level quantization with the
// bitsandbytes serialization of qstore.h).
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/cli.h"
#include "ds.h"
#include "qstore.h"

static const char *QUANTIZE_HELP =
    "usage: qlora quantize IN.safetensors OUT.safetensors [--type nf4|fp4] [--blocksize N]\n"
    "                      [--no-double-quant]\n\n"
    "Quantizes every floating tensor of IN (flattened row-major, as stored) to 4 bits with\n"
    "one scale per block (default nf4, blocksize 64, double-quantized scales) and writes the\n"
    "bitsandbytes/transformers serialization. Other tensors are copied unchanged.\n"
    "Prints one line per tensor: elements, bytes before and after, bits per parameter, mean\n"
    "absolute and RMS error of the round trip.\n";

static const char *DEQUANTIZE_HELP =
    "usage: qlora dequantize Q.safetensors OUT.safetensors\n\n"
    "Turns every 4-bit tensor of Q (as written by 'qlora quantize' or bitsandbytes) back into\n"
    "an F32 tensor of its original shape and name. Other tensors are copied unchanged.\n";

static bool is_float(StDtype dt) {
    return dt == ST_F32 || dt == ST_F16 || dt == ST_BF16 || dt == ST_F64;
}

static const char *torch_dtype(StDtype dt) {
    switch (dt) {
    case ST_F16: return "float16";
    case ST_BF16: return "bfloat16";
    case ST_F64: return "float64";
    default: return "float32";
    }
}

int cmd_quantize(int argc, char **argv) {
    if (cli_help(argc, argv, QUANTIZE_HELP)) return 0;
    const char *in = NULL, *out = NULL;
    QuantType type = QUANT_NF4;
    size_t blocksize = QUANT_DEFAULT_BLOCK;
    bool double_quant = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--type") == 0) {
            const char *v = cli_value(argc, argv, &i);
            if (!quant_parse(v, &type) || (type != QUANT_NF4 && type != QUANT_FP4))
                cli_usage_error("quantize", "--type must be nf4 or fp4, got '%s'", v);
        } else if (strcmp(argv[i], "--blocksize") == 0) {
            blocksize = (size_t)cli_long("--blocksize", cli_value(argc, argv, &i), 1, 1 << 20);
            if (!quant_blocksize_ok(blocksize))
                cli_usage_error("quantize", "--blocksize must be a power of two in [%d, %d], got %zu",
                                QUANT_MIN_BLOCK, QUANT_MAX_BLOCK, blocksize);
        } else if (strcmp(argv[i], "--no-double-quant") == 0) {
            double_quant = false;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            cli_usage_error("quantize", "unknown option '%s'", argv[i]);
        } else if (!in) {
            in = argv[i];
        } else if (!out) {
            out = argv[i];
        } else {
            cli_usage_error("quantize", "unexpected argument '%s'", argv[i]);
        }
    }
    if (!in || !out) cli_usage_error("quantize", "expected IN.safetensors and OUT.safetensors");

    Error err = {0};
    if (!path_check_apart("OUT", out, "IN", in, &err)) die_error(&err);
    SafeTensors st;
    if (!st_open(&st, in, &err)) die_error(&err);
    for (size_t i = 0; i < st.n_tensors; i++)  // its absmax/quant_map would be quantized again
        if (strstr(st.tensors[i].name, QSTORE_STATE_SUFFIX))
            die(EXIT_BAD_INPUT, "%s: tensor '%s': the file is already quantized (expected floating-point "
                                "weights; 'qlora dequantize' restores them)", in, st.tensors[i].name);
    Q4Tensor *qs = xcalloc(st.n_tensors ? st.n_tensors : 1, sizeof(Q4Tensor));
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    printf("%-40s %12s %14s %14s %8s %12s %12s\n", "tensor", "elements", "bytes_before",
           "bytes_after", "bits/p", "mean_abs_err", "rms_err");
    size_t total_before = 0, total_after = 0, total_n = 0;
    bool ok = true;
    for (size_t i = 0; ok && i < st.n_tensors; i++) {
        const StTensor *t = &st.tensors[i];
        if (!is_float(t->dtype) || t->n_elements == 0) {  // copied as they are
            st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, t->data);
            continue;
        }
        const size_t n = t->n_elements;
        float *x = xmalloc_aligned(n * sizeof(float));
        float *y = xmalloc_aligned(n * sizeof(float));
        char label[600];
        snprintf(label, sizeof label, "%s: tensor '%s'", in, t->name);
        ok = st_read_f32(&st, t, x, &err) &&
             q4_quantize(&qs[i], x, n, type, blocksize, double_quant, label, &err);
        if (ok) {
            q4_dequantize(&qs[i], 0, n, y);
            double abs_sum = 0.0, sq_sum = 0.0;
            for (size_t k = 0; k < n; k++) {
                double e = (double)y[k] - (double)x[k];
                abs_sum += fabs(e);
                sq_sum += e * e;
            }
            size_t before = t->end - t->begin;
            size_t after = q4_code_bytes(&qs[i]) + q4_constant_bytes(&qs[i]);
            printf("%-40s %12zu %14zu %14zu %8.3f %12.4e %12.4e\n", t->name, n, before, after,
                   q4_bits_per_param(&qs[i]), abs_sum / (double)n, sqrt(sq_sum / (double)n));
            total_before += before;
            total_after += after;
            total_n += n;
            qstore_add(&w, t->name, &qs[i], t->ndim, t->shape, torch_dtype(t->dtype));
        }
        free(x);
        free(y);
    }
    if (ok) ok = st_writer_write(&w, out, &err);
    if (ok && total_n)
        printf("total: %zu elements, %zu -> %zu bytes (%.2fx smaller), %.3f bits/param; wrote %s\n",
               total_n, total_before, total_after, (double)total_before / (double)total_after,
               8.0 * (double)total_after / (double)total_n, out);
    st_writer_free(&w);
    for (size_t i = 0; i < st.n_tensors; i++) q4_free(&qs[i]);
    free(qs);
    st_close(&st);
    if (!ok) die_error(&err);
    return 0;
}

int cmd_dequantize(int argc, char **argv) {
    if (cli_help(argc, argv, DEQUANTIZE_HELP)) return 0;
    const char *in = NULL, *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1]) cli_usage_error("dequantize", "unknown option '%s'", argv[i]);
        else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else cli_usage_error("dequantize", "unexpected argument '%s'", argv[i]);
    }
    if (!in || !out) cli_usage_error("dequantize", "expected Q.safetensors and OUT.safetensors");

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
