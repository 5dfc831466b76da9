// qstore.c: see qstore.h.
#include "qstore.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "json.h"
#include "path.h"

static char *join(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = xmalloc(la + lb + 1);
    memcpy(s, a, la);
    memcpy(s + la, b, lb + 1);
    return s;
}

static void add_suffixed(StWriter *w, const char *name, const char *suffix, StDtype dt,
                         int ndim, const uint64_t *shape, const void *data) {
    char *full = join(name, suffix);
    st_writer_add(w, full, dt, ndim, shape, data);
    free(full);
}

void qstore_add(StWriter *w, const char *name, const Q4Tensor *q, int ndim,
                const uint64_t *shape, const char *orig_dtype) {
    uint64_t codes_shape[2] = {(q->n + 1) / 2, 1};
    st_writer_add(w, name, ST_U8, 2, codes_shape, q->codes);
    uint64_t nb = q->n_blocks, n16 = 16, n256 = 256;
    uint64_t n2 = (q->n_blocks + QUANT_DQ_BLOCK - 1) / QUANT_DQ_BLOCK;
    if (q->double_quant) {
        add_suffixed(w, name, ".absmax", ST_U8, 1, &nb, q->absmax_q);
        add_suffixed(w, name, ".nested_absmax", ST_F32, 1, &n2, q->absmax2);
        add_suffixed(w, name, ".nested_quant_map", ST_F32, 1, &n256, q->dq_map);
    } else {
        add_suffixed(w, name, ".absmax", ST_F32, 1, &nb, q->absmax);
    }
    add_suffixed(w, name, ".quant_map", ST_F32, 1, &n16, q->code);

    char *js = NULL;
    sb_appendf(&js, "{\"quant_type\":\"%s\",\"blocksize\":%zu,\"dtype\":\"%s\",\"shape\":[",
               quant_name(q->type), q->blocksize, orig_dtype);
    for (int d = 0; d < ndim; d++) sb_appendf(&js, d ? ",%llu" : "%llu", (unsigned long long)shape[d]);
    arrput(js, ']');
    if (q->double_quant)  // %.9g round-trips every f32 exactly
        sb_appendf(&js, ",\"nested_blocksize\":%d,\"nested_offset\":%.9g,"
                        "\"nested_dtype\":\"float32\"", QUANT_DQ_BLOCK, (double)q->offset);
    arrput(js, '}');
    uint64_t len = arrlenu(js);
    uint8_t *bytes = xmalloc(len);
    memcpy(bytes, js, len);
    arrfree(js);
    char suffix[64];
    snprintf(suffix, sizeof suffix, "%s%s", QSTORE_STATE_SUFFIX, quant_name(q->type));
    char *full = join(name, suffix);
    st_writer_add_owned(w, full, ST_U8, 1, &len, bytes);
    free(full);
}

bool qstore_is_state(const char *tensor_name, char *base, size_t cap) {
    const char *p = strstr(tensor_name, QSTORE_STATE_SUFFIX);
    if (!p) return false;
    const char *kind = p + strlen(QSTORE_STATE_SUFFIX);
    if (strcmp(kind, "nf4") != 0 && strcmp(kind, "fp4") != 0) return false;
    size_t n = (size_t)(p - tensor_name);
    if (n + 1 > cap) return false;
    memcpy(base, tensor_name, n);
    base[n] = '\0';
    return true;
}

// The companion tensor name+suffix, checked for dtype and element count.
static const StTensor *companion(const SafeTensors *st, const char *name, const char *suffix,
                                 StDtype dt, uint64_t n_elements, Error *err) {
    char *full = join(name, suffix);
    const StTensor *t = st_find(st, full);
    if (!t)
        error_set(err, "%s: quantized tensor '%s' has no '%s'", st->path, name, full);
    else if (t->dtype != dt || t->n_elements != n_elements) {
        error_set(err, "%s: tensor '%s': expected %s with %llu elements, found %s with %llu",
                  st->path, full, st_dtype_name(dt), (unsigned long long)n_elements,
                  st_dtype_name(t->dtype), (unsigned long long)t->n_elements);
        t = NULL;
    }
    free(full);
    return t;
}

// The maps and scales of q, which multiply every weight, are finite: a NaN or Inf there
// would dequantize silently into non-finite weights. err names the tensor and element.
static bool check_scales(const Q4Tensor *q, const char *path, const char *name, Error *err) {
    const size_t n2 = (q->n_blocks + QUANT_DQ_BLOCK - 1) / QUANT_DQ_BLOCK;
    const struct { const char *suffix; const float *x; size_t n; } parts[] = {
        {".quant_map", q->code, 16},
        {".nested_quant_map", q->double_quant ? q->dq_map : NULL, 256},
        {".nested_absmax", q->double_quant ? q->absmax2 : NULL, n2},
        {".absmax", q->double_quant ? NULL : q->absmax, q->n_blocks},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        const size_t bad = parts[i].x ? quant_find_nonfinite(parts[i].x, parts[i].n) : parts[i].n;
        if (bad < parts[i].n)
            return error_set(err, "%s: tensor '%s%s': element %zu is %s (expected finite scales)", path, name,
                             parts[i].suffix, bad, isnan(parts[i].x[bad]) ? "NaN" : "Inf");
    }
    return true;
}

static void *copy_out(const StTensor *t) {
    void *p = xmalloc(t->end - t->begin);
    memcpy(p, t->data, t->end - t->begin);
    return p;
}

bool qstore_load(const SafeTensors *st, const char *name, Q4Tensor *q, int *ndim,
                 uint64_t shape[ST_MAX_DIMS], Error *err) {
    memset(q, 0, sizeof *q);
    const StTensor *state = NULL;
    char label[512];
    for (int k = 0; k < 2 && !state; k++) {
        snprintf(label, sizeof label, "%s%s%s", name, QSTORE_STATE_SUFFIX, k ? "fp4" : "nf4");
        state = st_find(st, label);
    }
    if (!state) return error_set(err, "%s: no quant state for tensor '%s'", st->path, name);
    if (state->dtype != ST_U8)
        return error_set(err, "%s: tensor '%s': expected U8 JSON bytes, found %s", st->path,
                         label, st_dtype_name(state->dtype));
    char *what = path_fmt("%s: tensor '%s'", st->path, label);  // the file's path: any length
    cJSON *js = json_parse((const char *)state->data, state->n_elements, 0, what, err);
    if (!js) return free(what), false;

    bool ok = false;
    const cJSON *qt = cJSON_GetObjectItemCaseSensitive(js, "quant_type");
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(js, "blocksize");
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(js, "shape");
    const cJSON *nbs = cJSON_GetObjectItemCaseSensitive(js, "nested_blocksize");
    const cJSON *noff = cJSON_GetObjectItemCaseSensitive(js, "nested_offset");
    uint64_t blocksize = 0, nested_bs = 0, n = 1;
    if (!cJSON_IsString(qt) || !quant_parse(qt->valuestring, &q->type) ||
        (q->type != QUANT_NF4 && q->type != QUANT_FP4)) {
        error_set(err, "%s: \"quant_type\" must be \"nf4\" or \"fp4\"", what);
        goto done;
    }
    if (!json_as_u64(bs, &blocksize) || !quant_blocksize_ok(blocksize)) {
        error_set(err, "%s: \"blocksize\" must be a power of two in [%d, %d]", what,
                  QUANT_MIN_BLOCK, QUANT_MAX_BLOCK);
        goto done;
    }
    if (!cJSON_IsArray(sh) || cJSON_GetArraySize(sh) > ST_MAX_DIMS) {
        error_set(err, "%s: \"shape\" must be an array of at most %d integers", what, ST_MAX_DIMS);
        goto done;
    }
    *ndim = 0;
    for (const cJSON *d = sh->child; d; d = d->next) {
        if (!json_as_u64(d, &shape[*ndim]) || __builtin_mul_overflow(n, shape[*ndim], &n)) {
            error_set(err, "%s: \"shape\" entries must be non-negative integers", what);
            goto done;
        }
        (*ndim)++;
    }
    q->double_quant = nbs != NULL;
    if (q->double_quant) {
        if (!json_as_u64(nbs, &nested_bs) || nested_bs != QUANT_DQ_BLOCK) {
            error_set(err, "%s: \"nested_blocksize\" must be %d", what, QUANT_DQ_BLOCK);
            goto done;
        }
        if (!cJSON_IsNumber(noff) || !isfinite(noff->valuedouble)) {
            error_set(err, "%s: \"nested_offset\" must be a finite number", what);
            goto done;
        }
        q->offset = (float)noff->valuedouble;
    }
    q->n = n;
    q->blocksize = blocksize;
    q->n_blocks = (n + blocksize - 1) / blocksize;
    const uint64_t n2 = (q->n_blocks + QUANT_DQ_BLOCK - 1) / QUANT_DQ_BLOCK;
    const StTensor *codes = companion(st, name, "", ST_U8, (n + 1) / 2, err);
    const StTensor *qmap = codes ? companion(st, name, ".quant_map", ST_F32, 16, err) : NULL;
    if (!qmap) goto done;
    const StTensor *absmax = companion(st, name, ".absmax", q->double_quant ? ST_U8 : ST_F32,
                                       q->n_blocks, err);
    if (!absmax) goto done;
    const StTensor *absmax2 = NULL, *nmap = NULL;
    if (q->double_quant) {
        absmax2 = companion(st, name, ".nested_absmax", ST_F32, n2, err);
        nmap = absmax2 ? companion(st, name, ".nested_quant_map", ST_F32, 256, err) : NULL;
        if (!nmap) goto done;
    }
    q->codes = copy_out(codes);
    memcpy(q->code, qmap->data, sizeof q->code);
    if (q->double_quant) {
        q->absmax_q = copy_out(absmax);
        q->absmax2 = copy_out(absmax2);
        memcpy(q->dq_map, nmap->data, sizeof q->dq_map);
    } else {
        q->absmax = copy_out(absmax);
    }
    ok = check_scales(q, st->path, name, err);
done:
    cJSON_Delete(js);
    free(what);
    if (!ok) q4_free(q);
    return ok;
}
