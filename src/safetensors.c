// safetensors.c: see safetensors.h. Validation follows the reference reader's order
// (docs/formats.md, "safetensors validation") so that each malformed file gets the most specific message.
#include "safetensors.h"

#include <math.h>
#include <sys/mman.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "json.h"

static const struct {
    const char *name;
    int bits;
} DTYPES[ST_N_DTYPES] = {
    [ST_BOOL] = {"BOOL", 8},         [ST_U8] = {"U8", 8},
    [ST_I8] = {"I8", 8},             [ST_U16] = {"U16", 16},
    [ST_I16] = {"I16", 16},          [ST_F16] = {"F16", 16},
    [ST_BF16] = {"BF16", 16},        [ST_U32] = {"U32", 32},
    [ST_I32] = {"I32", 32},          [ST_F32] = {"F32", 32},
    [ST_U64] = {"U64", 64},          [ST_I64] = {"I64", 64},
    [ST_F64] = {"F64", 64},          [ST_C64] = {"C64", 64},
    [ST_F8_E5M2] = {"F8_E5M2", 8},   [ST_F8_E4M3] = {"F8_E4M3", 8},
    [ST_F8_E8M0] = {"F8_E8M0", 8},   [ST_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8},
    [ST_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8}, [ST_F4] = {"F4", 4},
    [ST_F6_E2M3] = {"F6_E2M3", 6},   [ST_F6_E3M2] = {"F6_E3M2", 6},
};

const char *st_dtype_name(StDtype dt) { return (unsigned)dt < ST_N_DTYPES ? DTYPES[dt].name : "?"; }
int st_dtype_bits(StDtype dt) { return (unsigned)dt < ST_N_DTYPES ? DTYPES[dt].bits : 0; }

bool st_dtype_parse(const char *name, StDtype *out) {
    for (int i = 0; i < ST_N_DTYPES; i++)
        if (strcmp(name, DTYPES[i].name) == 0) {
            *out = (StDtype)i;
            return true;
        }
    return false;
}

static int cmp_by_offset(const void *a, const void *b) {
    const StTensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

// One tensor entry of the header: {"dtype": .., "shape": [..], "data_offsets": [b, e]}.
static bool parse_entry(const cJSON *item, StTensor *t, const char *path, Error *err) {
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return error_set(err, "%s: tensor '%s': expected an object with dtype, shape and "
                              "data_offsets", path, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dtype))
        return error_set(err, "%s: tensor '%s': missing or non-string \"dtype\"", path, name);
    if (!st_dtype_parse(dtype->valuestring, &t->dtype))
        return error_set(err, "%s: tensor '%s': unknown dtype '%s' (expected F32, F16, BF16, "
                              "U8, I8, I32, I64, ...)", path, name, dtype->valuestring);
    if (!cJSON_IsArray(shape))
        return error_set(err, "%s: tensor '%s': \"shape\" must be an array of non-negative "
                              "integers", path, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > ST_MAX_DIMS)
        return error_set(err, "%s: tensor '%s': %d dimensions, at most %d supported", path,
                         name, ndim, ST_MAX_DIMS);
    t->ndim = ndim;
    uint64_t n_el = 1;
    bool overflow = false;
    int d = 0;
    for (const cJSON *dim = shape->child; dim; dim = dim->next, d++) {
        if (!json_as_u64(dim, &t->shape[d]))
            return error_set(err, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                             path, name, d);
        overflow |= __builtin_mul_overflow(n_el, t->shape[d], &n_el);
    }
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        !json_as_u64(offs->child, &t->begin) || !json_as_u64(offs->child->next, &t->end))
        return error_set(err, "%s: tensor '%s': \"data_offsets\" must be two non-negative "
                              "integers [begin, end]", path, name);
    uint64_t n_bits;
    if (overflow || __builtin_mul_overflow(n_el, (uint64_t)st_dtype_bits(t->dtype), &n_bits))
        return error_set(err, "%s: tensor '%s': shape size overflows", path, name);
    if (n_bits % 8)
        return error_set(err, "%s: tensor '%s': %llu elements of %s do not fill whole bytes",
                         path, name, (unsigned long long)n_el, st_dtype_name(t->dtype));
    t->n_elements = n_el;
    if (t->end < t->begin)
        return error_set(err, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                         path, name, (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end - t->begin != n_bits / 8)
        return error_set(err, "%s: tensor '%s': shape and %s need %llu bytes, data_offsets "
                              "[%llu, %llu] span %llu", path, name, st_dtype_name(t->dtype),
                         (unsigned long long)(n_bits / 8), (unsigned long long)t->begin,
                         (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
    return true;
}

static bool parse_metadata(SafeTensors *st, const cJSON *meta, const char *path, Error *err) {
    if (!cJSON_IsObject(meta))
        return error_set(err, "%s: \"__metadata__\" must be an object of strings", path);
    for (const cJSON *kv = meta->child; kv; kv = kv->next) {
        if (!cJSON_IsString(kv))
            return error_set(err, "%s: \"__metadata__\" value of '%s' must be a string",
                             path, kv->string);
        StMeta m = {xstrdup(kv->string), xstrdup(kv->valuestring)};
        arrput(st->meta, m);
    }
    st->n_meta = arrlenu(st->meta);
    return true;
}

static bool parse_header(SafeTensors *st, const char *path, Error *err) {
    const uint8_t *base = st->file.data;
    const size_t size = st->file.size;
    if (size < 8)
        return error_set(err, "%s: %zu bytes, shorter than the 8-byte header length "
                              "(empty or truncated file)", path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | base[i];
    if (n > ST_MAX_HEADER)
        return error_set(err, "%s: header length %llu exceeds the 100000000-byte limit "
                              "(not a safetensors file?)", path, (unsigned long long)n);
    if (n > size - 8)
        return error_set(err, "%s: header length %llu exceeds the %zu bytes after the length "
                              "field (truncated download?)", path, (unsigned long long)n, size - 8);
    st->header_bytes = n;
    const char *hdr = (const char *)base + 8;
    if (n == 0 || hdr[0] != '{')
        return error_set(err, "%s: byte 8: expected '{' to open the JSON header", path);
    for (size_t i = 0, k; i < n; i += k)
        if ((k = utf8_seq_len((const uint8_t *)hdr + i, n - i)) == 0)
            return error_set(err, "%s: byte %zu: header is not valid UTF-8", path, 8 + i);
    cJSON *root = json_parse(hdr, n, 8, path, err);
    if (!root) return false;
    bool ok = true, seen_meta = false;
    for (const cJSON *item = root->child; ok && item; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (seen_meta)
                ok = error_set(err, "%s: \"__metadata__\" appears twice", path);
            else
                ok = parse_metadata(st, item, path, err);
            seen_meta = true;
            continue;
        }
        if (shgeti(st->index, item->string) >= 0) {
            ok = error_set(err, "%s: tensor '%s' appears twice in the header", path, item->string);
            break;
        }
        StTensor t = {0};
        if (!(ok = parse_entry(item, &t, path, err))) break;
        t.name = xstrdup(item->string);
        shput(st->index, t.name, 0);
        arrput(st->tensors, t);
    }
    cJSON_Delete(root);
    if (!ok) return false;

    st->n_tensors = arrlenu(st->tensors);
    const uint64_t buffer = size - 8 - n;
    for (size_t i = 0; i < st->n_tensors; i++) {
        const StTensor *t = &st->tensors[i];
        if (t->end > buffer)
            return error_set(err, "%s: tensor '%s': data_offsets [%llu, %llu] run past the end "
                                  "of the %llu-byte data buffer (truncated file?)", path,
                             t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                             (unsigned long long)buffer);
    }
    if (st->n_tensors > 1)  // qsort's pointer must not be NULL, even for 0 elements
        qsort(st->tensors, st->n_tensors, sizeof(StTensor), cmp_by_offset);
    uint64_t expect = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        StTensor *t = &st->tensors[i];
        if (t->begin != expect)
            return error_set(err, "%s: tensor '%s': data starts at offset %llu, expected %llu "
                                  "(%s)", path, t->name, (unsigned long long)t->begin,
                             (unsigned long long)expect,
                             t->begin < expect ? "overlaps the previous tensor" : "gap before it");
        expect = t->end;
        t->data = base + 8 + n + t->begin;
        shput(st->index, t->name, i);  // index now points at the sorted position
    }
    if (expect != buffer)
        return error_set(err, "%s: tensors cover %llu bytes of the data buffer but it holds %llu "
                              "(trailing bytes or a missing tensor)", path,
                         (unsigned long long)expect, (unsigned long long)buffer);
    return true;
}

bool st_open(SafeTensors *st, const char *path, Error *err) {
    memset(st, 0, sizeof *st);
    if (!file_map(&st->file, path, err)) return false;
    sh_new_arena(st->index);
    st->path = xstrdup(path);
    if (!parse_header(st, path, err)) {
        st_close(st);
        return false;
    }
    return true;
}

bool st_open_memory(SafeTensors *st, const uint8_t *data, size_t size, const char *name, Error *err) {
    memset(st, 0, sizeof *st);
    st->file.data = data;
    st->file.size = size;
    st->borrowed = true;
    sh_new_arena(st->index);
    st->path = xstrdup(name);
    if (!parse_header(st, name, err)) {
        st_close(st);
        return false;
    }
    return true;
}

void st_close(SafeTensors *st) {
    for (size_t i = 0; i < arrlenu(st->tensors); i++) free(st->tensors[i].name);
    arrfree(st->tensors);
    for (size_t i = 0; i < arrlenu(st->meta); i++) {
        free(st->meta[i].key);
        free(st->meta[i].value);
    }
    arrfree(st->meta);
    shfree(st->index);
    if (!st->borrowed) file_unmap(&st->file);
    free(st->path);
    memset(st, 0, sizeof *st);
}

const StTensor *st_find(const SafeTensors *st, const char *name) {
    struct StIndex *index = st->index;  // shgeti takes a modifiable lvalue
    ptrdiff_t i = shgeti(index, name);
    return i < 0 ? NULL : &st->tensors[index[i].value];
}

const char *st_meta(const SafeTensors *st, const char *key) {
    for (size_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[i].key, key) == 0) return st->meta[i].value;
    return NULL;
}

void st_release(const SafeTensors *st, const StTensor *t) {
    const uintptr_t page = 4096, lo = (uintptr_t)t->data, hi = lo + (t->end - t->begin);
    const uintptr_t a = (lo + page - 1) & ~(page - 1), b = hi & ~(page - 1);
    (void)st;
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);  // advice only: failure is harmless
}

float st_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1F, man = h & 0x3FF, bits;
    if (exp == 0x1F) {
        bits = sign | 0x7F800000u | man << 13;  // Inf or NaN (payload kept)
    } else if (exp == 0) {
        float v = ldexpf((float)man, -24);       // zero or subnormal: exact
        return sign ? -v : v;
    } else {
        bits = sign | (exp + 112) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float st_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

bool st_read_f32(const SafeTensors *st, const StTensor *t, float *out, Error *err) {
    const uint8_t *p = t->data;
    const size_t n = t->n_elements;
    switch (t->dtype) {
    case ST_F32:
        memcpy(out, p, n * 4);  // little-endian host (x86-64, aarch64)
        return true;
    case ST_F16:
    case ST_BF16:
        #pragma omp parallel for schedule(static)
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = t->dtype == ST_F16 ? st_f16_to_f32(h) : st_bf16_to_f32(h);
        }
        return true;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return true;
    default:
        return error_set(err, "%s: tensor '%s': dtype %s, expected a floating type (F32, F16, "
                              "BF16, F64)", st->path, t->name, st_dtype_name(t->dtype));
    }
}

void st_writer_init(StWriter *w) { memset(w, 0, sizeof *w); }

void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim,
                   const uint64_t *shape, const void *data) {
    CHECK(ndim >= 0 && ndim <= ST_MAX_DIMS);
    StEntry e = {.name = xstrdup(name), .dtype = dtype, .ndim = ndim, .data = data};
    uint64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        e.shape[d] = shape[d];
        n *= shape[d];
    }
    e.bytes = n * (uint64_t)st_dtype_bits(dtype) / 8;
    arrput(w->entries, e);
}

void st_writer_add_owned(StWriter *w, const char *name, StDtype dtype, int ndim,
                         const uint64_t *shape, void *data) {
    st_writer_add(w, name, dtype, ndim, shape, data);
    arrlast(w->entries).owned = true;
}

void st_writer_meta(StWriter *w, const char *key, const char *value) {
    StMeta m = {xstrdup(key), xstrdup(value)};
    arrput(w->meta, m);
}

static int cmp_entries(const void *a, const void *b) {
    const StEntry *x = a, *y = b;
    int bx = st_dtype_bits(x->dtype), by = st_dtype_bits(y->dtype);
    if (bx != by) return by - bx;  // larger alignment first, as the reference writer
    return strcmp(x->name, y->name);
}

bool st_writer_write(StWriter *w, const char *path, Error *err) {
    return st_writer_write_fill(w, path, NULL, NULL, err);
}

bool st_writer_write_fill(StWriter *w, const char *path, StFill fill, void *ctx, Error *err) {
    const size_t n = arrlenu(w->entries);
    if (n > 1) qsort(w->entries, n, sizeof(StEntry), cmp_entries);  // entries is NULL when n == 0
    for (size_t i = 1; i < n; i++)
        if (strcmp(w->entries[i - 1].name, w->entries[i].name) == 0)
            return error_set(err, "%s: tensor '%s' added twice", path, w->entries[i].name);
    char *hdr = NULL;
    arrput(hdr, '{');
    bool first = true;
    if (arrlenu(w->meta)) {
        sb_appendf(&hdr, "\"__metadata__\":{");
        for (size_t i = 0; i < arrlenu(w->meta); i++) {
            if (i) arrput(hdr, ',');
            json_append_string(&hdr, w->meta[i].key);
            arrput(hdr, ':');
            json_append_string(&hdr, w->meta[i].value);
        }
        arrput(hdr, '}');
        first = false;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        const StEntry *e = &w->entries[i];
        if (!first) arrput(hdr, ',');
        first = false;
        json_append_string(&hdr, e->name);
        sb_appendf(&hdr, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_name(e->dtype));
        for (int d = 0; d < e->ndim; d++)
            sb_appendf(&hdr, d ? ",%llu" : "%llu", (unsigned long long)e->shape[d]);
        sb_appendf(&hdr, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                   (unsigned long long)(off + e->bytes));
        off += e->bytes;
    }
    arrput(hdr, '}');
    while (arrlenu(hdr) % 8) arrput(hdr, ' ');  // the data buffer starts 8-byte aligned
    uint8_t len_le[8];
    for (int i = 0; i < 8; i++) len_le[i] = (uint8_t)((uint64_t)arrlenu(hdr) >> (8 * i));

    AtomicFile af;
    bool ok = atomic_open(&af, path, err);
    if (ok) {
        ok = atomic_write(&af, len_le, 8, err) && atomic_write(&af, hdr, arrlenu(hdr), err);
        for (size_t i = 0; ok && i < n; i++) {
            const StEntry *e = &w->entries[i];
            if (e->data || e->bytes == 0) {
                ok = atomic_write(&af, e->data, e->bytes, err);
            } else {
                CHECK(fill != NULL);
                void *buf = xmalloc_aligned(e->bytes);
                fill(ctx, e, buf);
                ok = atomic_write(&af, buf, e->bytes, err);
                free(buf);
            }
        }
        if (ok) ok = atomic_commit(&af, err);
        else atomic_abort(&af);
    }
    arrfree(hdr);
    return ok;
}

void st_writer_free(StWriter *w) {
    for (size_t i = 0; i < arrlenu(w->entries); i++) {
        free(w->entries[i].name);
        if (w->entries[i].owned) free((void *)w->entries[i].data);
    }
    arrfree(w->entries);
    for (size_t i = 0; i < arrlenu(w->meta); i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    arrfree(w->meta);
    memset(w, 0, sizeof *w);
}
