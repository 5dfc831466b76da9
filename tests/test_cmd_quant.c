// test_cmd_quant.c: `qlora quantize` / `qlora dequantize` end to end on
// tests/data/small.safetensors (a 3x130 F32 weight: odd block count, partial last block;
// an F16 bias; an I32 tensor that must pass through), checking the bitsandbytes names,
// dtypes, shapes and quant-state JSON, and that dequantize reproduces the quantizer.
#include <stdlib.h>

#include "cmd/cli.h"
#include "json.h"
#include "qstore.h"
#include "test.h"

static char tmpdir[] = "/tmp/qlora-test-cq-XXXXXX";
static const char *IN = "tests/data/small.safetensors";

static int run(int (*cmd)(int, char **), int argc, const char **argv) {
    fflush(stdout);
    return cmd(argc, (char **)argv);
}

static void check_layout(const char *path, bool dq, const char *type) {
    SafeTensors st;
    Error err = {0};
    if (!st_open(&st, path, &err)) {
        EXPECT(0, "open %s: %s", path, err.msg);
        return;
    }
    const StTensor *codes = st_find(&st, "layer.weight");
    const StTensor *absmax = st_find(&st, "layer.weight.absmax");
    const StTensor *qmap = st_find(&st, "layer.weight.quant_map");
    const StTensor *nabs = st_find(&st, "layer.weight.nested_absmax");
    const StTensor *nmap = st_find(&st, "layer.weight.nested_quant_map");
    char state_name[128];
    snprintf(state_name, sizeof state_name, "layer.weight.quant_state.bitsandbytes__%s", type);
    const StTensor *state = st_find(&st, state_name);
    // 390 values, blocks of 64 -> 7 blocks (the last holds 6); 195 code bytes
    EXPECT(codes && codes->dtype == ST_U8 && codes->ndim == 2 && codes->shape[0] == 195 &&
           codes->shape[1] == 1, "%s dq=%d: codes U8 [195, 1]", type, dq);
    EXPECT(absmax && absmax->dtype == (dq ? ST_U8 : ST_F32) && absmax->n_elements == 7,
           "%s dq=%d: absmax %s [7]", type, dq, dq ? "U8" : "F32");
    EXPECT(qmap && qmap->dtype == ST_F32 && qmap->n_elements == 16, "quant_map F32 [16]");
    EXPECT(dq ? (nabs && nabs->n_elements == 1 && nmap && nmap->n_elements == 256) : (!nabs && !nmap),
           "nested tensors present iff double quant");
    EXPECT(state && state->dtype == ST_U8, "quant state tensor %s", state_name);
    if (state) {
        cJSON *js = json_parse((const char *)state->data, state->n_elements, 0, "state", &err);
        const cJSON *sh = js ? cJSON_GetObjectItem(js, "shape") : NULL;
        EXPECT(js && strcmp(cJSON_GetObjectItem(js, "quant_type")->valuestring, type) == 0 &&
               cJSON_GetObjectItem(js, "blocksize")->valueint == 64 &&
               strcmp(cJSON_GetObjectItem(js, "dtype")->valuestring, "float32") == 0 &&
               cJSON_GetArraySize(sh) == 2 && cJSON_GetArrayItem(sh, 0)->valueint == 3 &&
               cJSON_GetArrayItem(sh, 1)->valueint == 130 &&
               (cJSON_GetObjectItem(js, "nested_blocksize") != NULL) == dq &&
               (cJSON_GetObjectItem(js, "nested_offset") != NULL) == dq,
               "quant state JSON: type, blocksize 64, float32, shape [3, 130], nested fields iff dq");
        cJSON_Delete(js);
    }
    const StTensor *bias_codes = st_find(&st, "layer.bias");
    EXPECT(bias_codes && bias_codes->dtype == ST_U8 && bias_codes->n_elements == 2,
           "F16 bias quantized too (4 values -> 2 bytes)");
    const StTensor *ids = st_find(&st, "ids");
    EXPECT(ids && ids->dtype == ST_I32 && ids->n_elements == 3, "I32 tensor copied unchanged");
    const char *fmt = st_meta(&st, "format");
    EXPECT(fmt && strcmp(fmt, "pt") == 0, "metadata format=pt");
    st_close(&st);
}

static void check_round_trip(const char *qpath, const char *outpath, const char *type, bool dq) {
    const char *argv[] = {"dequantize", qpath, outpath};
    EXPECT(run(cmd_dequantize, 3, argv) == 0, "dequantize %s", qpath);
    SafeTensors in, out;
    Error err = {0};
    CHECK(st_open(&in, IN, &err));
    if (!st_open(&out, outpath, &err)) {
        EXPECT(0, "open %s: %s", outpath, err.msg);
        st_close(&in);
        return;
    }
    EXPECT(out.n_tensors == 3, "dequantized file has the 3 original tensors (got %zu)", out.n_tensors);
    const StTensor *w = st_find(&out, "layer.weight");
    const StTensor *w0 = st_find(&in, "layer.weight");
    EXPECT(w && w->dtype == ST_F32 && w->ndim == 2 && w->shape[0] == 3 && w->shape[1] == 130,
           "layer.weight back as F32 [3, 130]");
    if (w) {
        // The same values as quantizing in memory and dequantizing with the reference.
        float x[390], ref[390], got[390];
        CHECK(st_read_f32(&in, w0, x, &err));
        Q4Tensor q;
        QuantType t;
        CHECK(quant_parse(type, &t));
        CHECK(q4_quantize(&q, x, 390, t, 64, dq, "mem", &err));
        q4_dequantize_ref(&q, 0, 390, ref);
        CHECK(st_read_f32(&out, w, got, &err));
        EXPECT(memcmp(got, ref, sizeof got) == 0, "%s dq=%d: file round trip == in-memory reference, bit for bit", type, dq);
        q4_free(&q);
    }
    const StTensor *ids = st_find(&out, "ids");
    EXPECT(ids && ids->dtype == ST_I32 && memcmp(ids->data, st_find(&in, "ids")->data, 12) == 0,
           "I32 tensor unchanged through both commands");
    st_close(&out);
    st_close(&in);
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL);
    char q1[256], q2[256], q3[256], d[256];
    snprintf(q1, sizeof q1, "%s/nf4dq.safetensors", tmpdir);
    snprintf(q2, sizeof q2, "%s/nf4.safetensors", tmpdir);
    snprintf(q3, sizeof q3, "%s/fp4.safetensors", tmpdir);
    snprintf(d, sizeof d, "%s/deq.safetensors", tmpdir);
    const char *a1[] = {"quantize", IN, q1};
    EXPECT(run(cmd_quantize, 3, a1) == 0, "quantize (nf4, double quant)");
    check_layout(q1, true, "nf4");
    check_round_trip(q1, d, "nf4", true);
    const char *a2[] = {"quantize", IN, q2, "--no-double-quant"};
    EXPECT(run(cmd_quantize, 4, a2) == 0, "quantize --no-double-quant");
    check_layout(q2, false, "nf4");
    check_round_trip(q2, d, "nf4", false);
    const char *a3[] = {"quantize", "--type", "fp4", IN, q3};
    EXPECT(run(cmd_quantize, 5, a3) == 0, "quantize --type fp4");
    check_layout(q3, true, "fp4");
    check_round_trip(q3, d, "fp4", true);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", tmpdir);
    return test_summary("test_cmd_quant");
}
