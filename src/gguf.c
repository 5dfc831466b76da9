// gguf.c: GGUF v3 writing and validated reading (gguf.h; docs/gguf.md states the format).
#include "gguf.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "safetensors.h"  // st_f16_to_f32

// Tensor data is written straight from memory as F32 and read back the same way.
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF is little-endian; so is this code");

static const struct {
    const char *name;
    size_t block_values, block_bytes;
} GGML_TYPES[] = {
    [GGML_TYPE_F32] = {"f32", 1, 4},
    [GGML_TYPE_F16] = {"f16", 1, 2},
    [GGML_TYPE_Q8_0] = {"q8_0", GGML_Q8_0_BLOCK, sizeof(GgmlBlockQ8_0)},
};

// True for the tensor types this module knows (ggml's numbering has gaps).
static bool ggml_type_known(uint32_t t) {
    return t == GGML_TYPE_F32 || t == GGML_TYPE_F16 || t == GGML_TYPE_Q8_0;
}

const char *ggml_type_name(GgmlType t) { return GGML_TYPES[t].name; }
size_t ggml_block_values(GgmlType t) { return GGML_TYPES[t].block_values; }
size_t ggml_block_bytes(GgmlType t) { return GGML_TYPES[t].block_bytes; }

// Bytes of a scalar of value type t (0 for strings and arrays, whose size varies).
static size_t gguf_scalar_bytes(GgufType t) {
    static const size_t bytes[GGUF_N_TYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return bytes[t];
}

// "u8" ... "f64" for value type t, "unknown" past them.
static const char *gguf_type_name(uint32_t t) {
    static const char *const names[GGUF_N_TYPES] = {"u8",  "i8",   "u16",    "i16",   "u32",
                                                    "i32", "f32",  "bool",   "string", "array",
                                                    "u64", "i64",  "f64"};
    return t < GGUF_N_TYPES ? names[t] : "unknown";
}

uint16_t gguf_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));  // NaN, quiet
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // >= 65520 rounds past 65504: Inf
    if (ax < 0x38800000u) {  // below 2^-14: a subnormal half (multiples of 2^-24) or zero
        if (ax < 0x33000000u) return (uint16_t)sign;  // below 2^-25: rounds to zero
        const uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        const uint32_t shift = 126 - e;  // 14..24: f / 2^-24 = m >> shift
        uint32_t q = m >> shift;
        const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;  // may carry into the smallest normal
        return (uint16_t)(sign | q);
    }
    uint32_t h = (ax >> 13) - ((127u - 15u) << 10);  // rebias the exponent, keep 10 mantissa bits
    const uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++;  // a carry may reach the exponent
    return (uint16_t)(sign | h);
}

void gguf_quantize_q8_0(const float *x, size_t n, GgmlBlockQ8_0 *out) {
    CHECK(n % GGML_Q8_0_BLOCK == 0);
    for (size_t b = 0; b < n / GGML_Q8_0_BLOCK; b++) {
        const float *v = x + b * GGML_Q8_0_BLOCK;
        float amax = 0.0f;
        for (int j = 0; j < GGML_Q8_0_BLOCK; j++) amax = fmaxf(amax, fabsf(v[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;  // an all-zero block: q = 0
        out[b].d = gguf_f32_to_f16(d);
        for (int j = 0; j < GGML_Q8_0_BLOCK; j++) out[b].qs[j] = (int8_t)roundf(v[j] * id);
    }
}

// ---- writer --------------------------------------------------------------------------------

typedef struct {
    char name[GGUF_MAX_NAME];
    GgmlType type;
    int n_dims;
    uint64_t ne[GGUF_MAX_DIMS];
    uint64_t n_elements, nbytes;
    const float *data;
    float *owned;
} WTensor;

struct GgufWriter {
    uint8_t *kv;   // stb_ds: the pairs, serialized as they are set
    char **keys;   // stb_ds: their keys, for the duplicate check
    WTensor *tensors;
};

// Append n bytes, a little-endian u32 / u64, or a GGUF string (u64 length + bytes) to *b.
static void put_bytes(uint8_t **b, const void *p, size_t n) {
    memcpy(arraddnptr(*b, n), p, n);
}
static void put_u32(uint8_t **b, uint32_t v) {
    for (int i = 0; i < 4; i++) arrput(*b, (uint8_t)(v >> (8 * i)));
}
static void put_u64(uint8_t **b, uint64_t v) {
    for (int i = 0; i < 8; i++) arrput(*b, (uint8_t)(v >> (8 * i)));
}
static void put_str(uint8_t **b, const char *s) {
    const size_t n = strlen(s);
    put_u64(b, n);
    put_bytes(b, s, n);
}

// Start the pair key of type t: checks the key is new, writes the key and the type.
static void put_key(GgufWriter *w, const char *key, GgufType t) {
    for (size_t i = 0; i < arrlenu(w->keys); i++) CHECK(strcmp(w->keys[i], key) != 0);
    arrput(w->keys, xstrdup(key));
    put_str(&w->kv, key);
    put_u32(&w->kv, t);
}

GgufWriter *gguf_writer_new(void) {
    GgufWriter *w = xcalloc(1, sizeof *w);
    gguf_set_u32(w, GGUF_KEY_ALIGNMENT, GGUF_ALIGNMENT);
    return w;
}

void gguf_writer_free(GgufWriter *w) {
    if (!w) return;
    for (size_t i = 0; i < arrlenu(w->keys); i++) free(w->keys[i]);
    for (size_t i = 0; i < arrlenu(w->tensors); i++) free(w->tensors[i].owned);
    arrfree(w->keys);
    arrfree(w->kv);
    arrfree(w->tensors);
    free(w);
}

void gguf_set_u32(GgufWriter *w, const char *key, uint32_t v) {
    put_key(w, key, GGUF_U32);
    put_u32(&w->kv, v);
}

void gguf_set_i32(GgufWriter *w, const char *key, int32_t v) {
    put_key(w, key, GGUF_I32);
    put_u32(&w->kv, (uint32_t)v);
}

void gguf_set_f32(GgufWriter *w, const char *key, float v) {
    uint32_t bits;
    memcpy(&bits, &v, 4);
    put_key(w, key, GGUF_F32);
    put_u32(&w->kv, bits);
}

void gguf_set_bool(GgufWriter *w, const char *key, bool v) {
    put_key(w, key, GGUF_BOOL);
    arrput(w->kv, (uint8_t)(v ? 1 : 0));
}

void gguf_set_str(GgufWriter *w, const char *key, const char *v) {
    put_key(w, key, GGUF_STRING);
    put_str(&w->kv, v);
}

void gguf_set_str_array(GgufWriter *w, const char *key, const char *const *v, size_t n) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_STRING);
    put_u64(&w->kv, n);
    for (size_t i = 0; i < n; i++) put_str(&w->kv, v[i]);
}

void gguf_set_i32_array(GgufWriter *w, const char *key, const int32_t *v, size_t n) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_I32);
    put_u64(&w->kv, n);
    for (size_t i = 0; i < n; i++) put_u32(&w->kv, (uint32_t)v[i]);
}

void gguf_set_f32_array(GgufWriter *w, const char *key, const float *v, size_t n) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(&w->kv, GGUF_F32);
    put_u64(&w->kv, n);
    for (size_t i = 0; i < n; i++) {
        uint32_t bits;
        memcpy(&bits, &v[i], 4);
        put_u32(&w->kv, bits);
    }
}

// n rounded up to a multiple of a.
static uint64_t align_up(uint64_t n, uint64_t a) { return (n + a - 1) / a * a; }

void gguf_add_tensor(GgufWriter *w, const char *name, GgmlType type, int n_dims,
                     const uint64_t *ne, const float *data) {
    CHECK(strlen(name) < GGUF_MAX_NAME && n_dims >= 1 && n_dims <= GGUF_MAX_DIMS && ggml_type_known(type));
    for (size_t i = 0; i < arrlenu(w->tensors); i++) CHECK(strcmp(w->tensors[i].name, name) != 0);
    WTensor t = {.type = type, .n_dims = n_dims, .n_elements = 1, .data = data};
    strcpy(t.name, name);
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t.ne[d] = d < n_dims ? ne[d] : 1;
        t.n_elements *= t.ne[d];
    }
    CHECK(t.ne[0] % ggml_block_values(type) == 0);
    t.nbytes = t.n_elements / ggml_block_values(type) * ggml_block_bytes(type);
    arrput(w->tensors, t);
}

void gguf_add_tensor_owned(GgufWriter *w, const char *name, GgmlType type, int n_dims,
                           const uint64_t *ne, float *data) {
    gguf_add_tensor(w, name, type, n_dims, ne, data);
    arrlast(w->tensors).owned = data;
}

size_t gguf_writer_n_tensors(const GgufWriter *w) { return arrlenu(w->tensors); }

uint64_t gguf_writer_data_bytes(const GgufWriter *w) {
    uint64_t n = 0;
    for (size_t i = 0; i < arrlenu(w->tensors); i++) n += align_up(w->tensors[i].nbytes, GGUF_ALIGNMENT);
    return n;
}

// Everything before the tensor data: header, pairs, tensor infos, padding. An stb_ds array.
static uint8_t *build_header(const GgufWriter *w) {
    uint8_t *b = NULL;
    put_u32(&b, GGUF_MAGIC);
    put_u32(&b, GGUF_VERSION);
    put_u64(&b, arrlenu(w->tensors));
    put_u64(&b, arrlenu(w->keys));
    put_bytes(&b, w->kv, arrlenu(w->kv));
    uint64_t offset = 0;
    for (size_t i = 0; i < arrlenu(w->tensors); i++) {
        const WTensor *t = &w->tensors[i];
        put_str(&b, t->name);
        put_u32(&b, (uint32_t)t->n_dims);
        for (int d = 0; d < t->n_dims; d++) put_u64(&b, t->ne[d]);
        put_u32(&b, t->type);
        put_u64(&b, offset);
        offset += align_up(t->nbytes, GGUF_ALIGNMENT);
    }
    while (arrlenu(b) % GGUF_ALIGNMENT) arrput(b, 0);
    return b;
}

// Write t's data converted to its type, a slice of whole blocks at a time, then its padding.
static bool write_tensor(AtomicFile *af, const WTensor *t, void *scratch, size_t slice, Error *err) {
    static const uint8_t zeros[GGUF_ALIGNMENT];
    bool ok = true;
    if (t->type == GGML_TYPE_F32) {
        ok = atomic_write(af, t->data, t->nbytes, err);
    } else {
        for (uint64_t i = 0; ok && i < t->n_elements; i += slice) {
            const size_t n = t->n_elements - i < slice ? (size_t)(t->n_elements - i) : slice;
            if (t->type == GGML_TYPE_F16) {
                uint16_t *h = scratch;
                for (size_t j = 0; j < n; j++) h[j] = gguf_f32_to_f16(t->data[i + j]);
                ok = atomic_write(af, h, n * 2, err);
            } else {
                gguf_quantize_q8_0(t->data + i, n, scratch);
                ok = atomic_write(af, scratch, n / GGML_Q8_0_BLOCK * sizeof(GgmlBlockQ8_0), err);
            }
        }
    }
    const size_t pad = (size_t)(align_up(t->nbytes, GGUF_ALIGNMENT) - t->nbytes);
    return ok && atomic_write(af, zeros, pad, err);
}

bool gguf_write(const GgufWriter *w, const char *path, Error *err) {
    enum { SLICE = 64 * 1024 };  // values converted at a time: a multiple of GGML_Q8_0_BLOCK
    _Static_assert(SLICE % GGML_Q8_0_BLOCK == 0, "slices hold whole q8_0 blocks");
    uint8_t *hdr = build_header(w);
    void *scratch = xmalloc(SLICE * sizeof(float));
    AtomicFile af;
    bool ok = atomic_open(&af, path, err) && atomic_write(&af, hdr, arrlenu(hdr), err);
    for (size_t i = 0; ok && i < arrlenu(w->tensors); i++) ok = write_tensor(&af, &w->tensors[i], scratch, SLICE, err);
    if (af.fp) {  // atomic_open succeeded
        if (ok) ok = atomic_commit(&af, err);
        else atomic_abort(&af);
    }
    free(scratch);
    arrfree(hdr);
    return ok;
}

// ---- reader --------------------------------------------------------------------------------

typedef struct {
    const GgufFile *f;
    size_t pos;
    Error *err;
} Cursor;

typedef struct {
    char *key;
    int value;
} NameSet;  // stb_ds string map used as a set: repeated keys and tensor names

// Fail at the cursor: "NAME: byte POS: " + the message.
__attribute__((format(printf, 2, 3))) static bool cur_fail(Cursor *c, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return error_set(c->err, "%s: byte %zu: %s", c->f->name, c->pos, msg);
}

// Bytes after the cursor.
static size_t cur_left(const Cursor *c) { return c->f->size - c->pos; }

// Read n little-endian bytes as an unsigned integer; what names the field in the message.
static bool cur_uint(Cursor *c, int n, uint64_t *v, const char *what) {
    *v = 0;  // also on failure, so that no caller reads an unset value
    if (cur_left(c) < (size_t)n)
        return cur_fail(c, "%s: expected %d more bytes, found the end of the file (%zu left)", what, n, cur_left(c));
    for (int i = 0; i < n; i++) *v |= (uint64_t)c->f->bytes[c->pos + i] << (8 * i);
    c->pos += (size_t)n;
    return true;
}

// cur_uint of 4 bytes into a u32 (*v untouched on failure).
static bool cur_u32(Cursor *c, uint32_t *v, const char *what) {
    uint64_t x = 0;
    if (!cur_uint(c, 4, &x, what)) return false;
    *v = (uint32_t)x;
    return true;
}

// A string: *s points into the file (not NUL-terminated), *len its bytes.
static bool cur_str(Cursor *c, const char **s, uint64_t *len, const char *what) {
    if (!cur_uint(c, 8, len, what)) return false;
    if (*len > cur_left(c))
        return cur_fail(c, "%s: expected a string of at most the %zu bytes left, found a length of %llu", what,
                        cur_left(c), (unsigned long long)*len);
    *s = (const char *)c->f->bytes + c->pos;
    c->pos += (size_t)*len;
    return true;
}

// Skip one value of scalar or string type t (arrays are handled by the caller).
static bool skip_value(Cursor *c, GgufType t, const char *what) {
    if (t == GGUF_STRING) {
        const char *s;
        uint64_t len;
        return cur_str(c, &s, &len, what);
    }
    uint64_t v;
    const size_t n = gguf_scalar_bytes(t);
    if (!cur_uint(c, (int)n, &v, what)) return false;
    if (t == GGUF_BOOL && v > 1) {
        c->pos -= 1;
        return cur_fail(c, "%s: expected a bool (0 or 1), found %llu", what, (unsigned long long)v);
    }
    return true;
}

// One array value of pair kv (after its type): element type, count, elements.
static bool read_array(Cursor *c, GgufKv *kv) {
    uint32_t et;
    if (!cur_u32(c, &et, kv->key)) return false;
    if (et >= GGUF_N_TYPES || et == GGUF_ARRAY) {
        c->pos -= 4;
        return cur_fail(c, "key '%s': expected an array element type (0..12, arrays not nested), found %u", kv->key, et);
    }
    kv->arr_type = (GgufType)et;
    if (!cur_uint(c, 8, &kv->n, kv->key)) return false;
    kv->at = c->pos;
    const size_t eb = gguf_scalar_bytes(kv->arr_type);
    if (eb) {  // fixed-size elements: one bounds check, then the bools' values
        if (kv->n > cur_left(c) / eb)
            return cur_fail(c, "key '%s': expected %llu %s elements within the %zu bytes left", kv->key,
                            (unsigned long long)kv->n, gguf_type_name(et), cur_left(c));
        if (kv->arr_type != GGUF_BOOL) {
            c->pos += (size_t)(kv->n * eb);
            return true;
        }
    } else if (kv->n > cur_left(c) / 8) {
        return cur_fail(c, "key '%s': expected %llu strings within the %zu bytes left", kv->key,
                        (unsigned long long)kv->n, cur_left(c));
    }
    for (uint64_t i = 0; i < kv->n; i++)
        if (!skip_value(c, kv->arr_type, kv->key)) return false;
    return true;
}

// One key-value pair into kv; seen (stb_ds string set) catches a repeated key.
static bool read_kv(Cursor *c, GgufKv *kv, NameSet **seen) {
    const char *k;
    uint64_t klen;
    uint32_t t;
    if (!cur_str(c, &k, &klen, "key")) return false;
    kv->key = xmalloc((size_t)klen + 1);
    memcpy(kv->key, k, (size_t)klen);
    kv->key[klen] = '\0';
    if (strlen(kv->key) != klen) return cur_fail(c, "key: expected text, found a NUL byte in '%s'", kv->key);
    if (shgeti(*seen, kv->key) >= 0) return cur_fail(c, "key '%s': expected each key once, found it twice", kv->key);
    shput(*seen, kv->key, 1);
    if (!cur_u32(c, &t, kv->key)) return false;
    if (t >= GGUF_N_TYPES) {
        c->pos -= 4;
        return cur_fail(c, "key '%s': expected a value type 0..12, found %u", kv->key, t);
    }
    kv->type = (GgufType)t;
    kv->n = 1;
    kv->at = c->pos;
    return t == GGUF_ARRAY ? read_array(c, kv) : skip_value(c, kv->type, kv->key);
}

// The u32 value of pair kv, which the reader has validated.
static uint32_t kv_u32_at(const GgufFile *f, const GgufKv *kv) {
    const uint8_t *p = f->bytes + kv->at;
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

// Magic, version and the two counts; allocates the pair and tensor tables.
static bool read_header(Cursor *c) {
    GgufFile *f = (GgufFile *)c->f;
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    if (!cur_u32(c, &magic, "magic")) return false;
    if (magic != GGUF_MAGIC) {
        c->pos = 0;
        return cur_fail(c, "magic: expected the bytes 'GGUF', found %02x %02x %02x %02x", f->bytes[0], f->bytes[1],
                        f->bytes[2], f->bytes[3]);
    }
    if (!cur_u32(c, &f->version, "version")) return false;
    if (f->version != 3 && f->version != 2) {
        c->pos -= 4;
        return cur_fail(c, "version: expected 3 (or 2), found %u", f->version);
    }
    if (!cur_uint(c, 8, &n_tensors, "tensor count") || !cur_uint(c, 8, &n_kv, "key-value count")) return false;
    // the smallest pair takes 13 bytes (key length, type, a u8); the smallest tensor info 32
    if (n_kv > cur_left(c) / 13 || n_tensors > cur_left(c) / 32)
        return cur_fail(c, "counts: expected %llu pairs and %llu tensors to fit in the %zu bytes left",
                        (unsigned long long)n_kv, (unsigned long long)n_tensors, cur_left(c));
    f->n_kv = (size_t)n_kv;
    f->n_tensors = (size_t)n_tensors;
    f->kv = xcalloc(f->n_kv ? f->n_kv : 1, sizeof(GgufKv));
    f->tensors = xcalloc(f->n_tensors ? f->n_tensors : 1, sizeof(GgufTensor));
    return true;
}

// general.alignment, when present: a u32 power of two.
static bool read_alignment(Cursor *c) {
    GgufFile *f = (GgufFile *)c->f;
    f->alignment = GGUF_ALIGNMENT;
    const GgufKv *kv = gguf_find_kv(f, GGUF_KEY_ALIGNMENT);
    if (!kv) return true;
    c->pos = kv->at;
    if (kv->type != GGUF_U32) return cur_fail(c, "key '%s': expected a u32, found a %s", kv->key, gguf_type_name(kv->type));
    const uint32_t a = kv_u32_at(f, kv);
    if (a == 0 || (a & (a - 1)) != 0) return cur_fail(c, "key '%s': expected a power of two, found %u", kv->key, a);
    f->alignment = a;
    return true;
}

// One tensor info into t; expected_offset is where a packed data section puts it.
static bool read_tensor_info(Cursor *c, GgufTensor *t, uint64_t expected_offset) {
    const char *s;
    uint64_t len;
    uint32_t nd, type;
    if (!cur_str(c, &s, &len, "tensor name")) return false;
    if (len >= GGUF_MAX_NAME || memchr(s, 0, (size_t)len))
        return cur_fail(c, "tensor name: expected text of at most %d bytes, found %llu bytes", GGUF_MAX_NAME - 1,
                        (unsigned long long)len);
    memcpy(t->name, s, (size_t)len);
    if (!cur_u32(c, &nd, t->name)) return false;
    if (nd < 1 || nd > GGUF_MAX_DIMS) return cur_fail(c, "tensor '%s': expected 1..4 dimensions, found %u", t->name, nd);
    t->n_dims = (int)nd;
    t->n_elements = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d < t->n_dims && !cur_uint(c, 8, &t->ne[d], t->name)) return false;
        if (t->ne[d] && t->n_elements > (UINT64_MAX / 64) / t->ne[d])  // room for bytes per element too
            return cur_fail(c, "tensor '%s': expected an element count below 2^58, found dimensions that overflow", t->name);
        t->n_elements *= t->ne[d];
    }
    if (!cur_u32(c, &type, t->name)) return false;
    if (!ggml_type_known(type))
        return cur_fail(c, "tensor '%s': expected type f32 (0), f16 (1) or q8_0 (8), found %u", t->name, type);
    t->type = (GgmlType)type;
    if (t->ne[0] % ggml_block_values(t->type))
        return cur_fail(c, "tensor '%s': expected ne[0] a multiple of %zu for %s, found %llu", t->name,
                        ggml_block_values(t->type), ggml_type_name(t->type), (unsigned long long)t->ne[0]);
    t->nbytes = t->n_elements / ggml_block_values(t->type) * ggml_block_bytes(t->type);
    if (!cur_uint(c, 8, &t->offset, t->name)) return false;
    if (t->offset != expected_offset)
        return cur_fail(c, "tensor '%s': expected data offset %llu (packed, aligned to %zu), found %llu", t->name,
                        (unsigned long long)expected_offset, c->f->alignment, (unsigned long long)t->offset);
    return true;
}

// The tensor infos, then the data section: its start and every tensor inside the file.
static bool read_tensors(Cursor *c) {
    GgufFile *f = (GgufFile *)c->f;
    NameSet *seen = NULL;
    bool ok = true;
    uint64_t offset = 0;
    for (size_t i = 0; ok && i < f->n_tensors; i++) {
        GgufTensor *t = &f->tensors[i];
        ok = read_tensor_info(c, t, offset);
        if (ok && shgeti(seen, t->name) >= 0) ok = cur_fail(c, "tensor '%s': expected each name once, found it twice", t->name);
        if (ok) shput(seen, t->name, 1);
        if (ok && t->nbytes > UINT64_MAX - offset - f->alignment)
            ok = cur_fail(c, "tensor '%s': expected a data section below 2^64 bytes", t->name);
        if (ok) offset = align_up(offset + t->nbytes, f->alignment);
    }
    shfree(seen);
    if (!ok) return false;
    f->data_start = (size_t)align_up(c->pos, f->alignment);
    for (size_t i = 0; i < f->n_tensors; i++) {
        GgufTensor *t = &f->tensors[i];
        if (f->data_start > f->size || t->offset > f->size - f->data_start ||
            t->nbytes > f->size - f->data_start - t->offset) {
            c->pos = f->size;
            return cur_fail(c, "tensor '%s': expected its %llu bytes at data offset %llu inside the file, found the end",
                            t->name, (unsigned long long)t->nbytes, (unsigned long long)t->offset);
        }
        t->data = f->bytes + f->data_start + t->offset;
    }
    return true;
}

bool gguf_open_memory(GgufFile *f, const uint8_t *bytes, size_t size, const char *name, Error *err) {
    memset(f, 0, sizeof *f);
    f->bytes = bytes;
    f->size = size;
    f->name = xstrdup(name);
    Cursor c = {f, 0, err};
    bool ok = read_header(&c);
    NameSet *seen = NULL;
    for (size_t i = 0; ok && i < f->n_kv; i++) ok = read_kv(&c, &f->kv[i], &seen);
    shfree(seen);
    const size_t after_kv = c.pos;
    ok = ok && read_alignment(&c);
    c.pos = after_kv;
    ok = ok && read_tensors(&c);
    if (!ok) gguf_close(f);
    return ok;
}

bool gguf_open(GgufFile *f, const char *path, Error *err) {
    MappedFile map;
    if (!file_map(&map, path, err)) return false;
    if (!gguf_open_memory(f, map.data, map.size, path, err)) {
        file_unmap(&map);
        return false;
    }
    f->map = map;
    return true;
}

void gguf_close(GgufFile *f) {
    for (size_t i = 0; f->kv && i < f->n_kv; i++) free(f->kv[i].key);
    free(f->kv);
    free(f->tensors);
    free(f->name);
    if (f->map.data) file_unmap(&f->map);
    memset(f, 0, sizeof *f);
}

const GgufKv *gguf_find_kv(const GgufFile *f, const char *key) {
    for (size_t i = 0; i < f->n_kv; i++)
        if (f->kv[i].key && strcmp(f->kv[i].key, key) == 0) return &f->kv[i];
    return NULL;
}

// The pair key with type t (and element type et for arrays), or NULL with err set.
static const GgufKv *want_kv(const GgufFile *f, const char *key, GgufType t, GgufType et, Error *err) {
    const GgufKv *kv = gguf_find_kv(f, key);
    if (!kv) {
        error_set(err, "%s: key '%s': expected it, found no such key", f->name, key);
    } else if (kv->type != t || (t == GGUF_ARRAY && kv->arr_type != et)) {
        error_set(err, "%s: key '%s': expected %s%s%s, found %s%s%s", f->name, key, gguf_type_name(t),
                  t == GGUF_ARRAY ? " of " : "", t == GGUF_ARRAY ? gguf_type_name(et) : "",
                  gguf_type_name(kv->type), kv->type == GGUF_ARRAY ? " of " : "",
                  kv->type == GGUF_ARRAY ? gguf_type_name(kv->arr_type) : "");
        kv = NULL;
    }
    return kv;
}

bool gguf_get_u32(const GgufFile *f, const char *key, uint32_t *out, Error *err) {
    const GgufKv *kv = want_kv(f, key, GGUF_U32, 0, err);
    if (kv) *out = kv_u32_at(f, kv);
    return kv != NULL;
}

bool gguf_get_f32(const GgufFile *f, const char *key, float *out, Error *err) {
    const GgufKv *kv = want_kv(f, key, GGUF_F32, 0, err);
    if (kv) {
        const uint32_t bits = kv_u32_at(f, kv);
        memcpy(out, &bits, 4);
    }
    return kv != NULL;
}

bool gguf_get_bool(const GgufFile *f, const char *key, bool *out, Error *err) {
    const GgufKv *kv = want_kv(f, key, GGUF_BOOL, 0, err);
    if (kv) *out = f->bytes[kv->at] != 0;
    return kv != NULL;
}

// A new NUL-terminated copy of the string stored at file offset *at; advances *at past it.
static char *str_at(const GgufFile *f, size_t *at) {
    uint64_t len = 0;
    for (int i = 0; i < 8; i++) len |= (uint64_t)f->bytes[*at + i] << (8 * i);
    char *s = xmalloc((size_t)len + 1);
    memcpy(s, f->bytes + *at + 8, (size_t)len);
    s[len] = '\0';
    *at += 8 + (size_t)len;
    return s;
}

bool gguf_get_str(const GgufFile *f, const char *key, char **out, Error *err) {
    const GgufKv *kv = want_kv(f, key, GGUF_STRING, 0, err);
    size_t at = kv ? kv->at : 0;
    if (kv) *out = str_at(f, &at);
    return kv != NULL;
}

bool gguf_get_str_array(const GgufFile *f, const char *key, char ***out, Error *err) {
    const GgufKv *kv = want_kv(f, key, GGUF_ARRAY, GGUF_STRING, err);
    if (!kv) return false;
    *out = NULL;
    size_t at = kv->at;
    for (uint64_t i = 0; i < kv->n; i++) arrput(*out, str_at(f, &at));
    return true;
}

bool gguf_get_i32_array(const GgufFile *f, const char *key, int32_t **out, Error *err) {
    const GgufKv *kv = want_kv(f, key, GGUF_ARRAY, GGUF_I32, err);
    if (!kv) return false;
    *out = NULL;
    memcpy(arraddnptr(*out, kv->n), f->bytes + kv->at, (size_t)kv->n * 4);
    return true;
}

bool gguf_get_f32_array(const GgufFile *f, const char *key, float **out, Error *err) {
    const GgufKv *kv = want_kv(f, key, GGUF_ARRAY, GGUF_F32, err);
    if (!kv) return false;
    *out = NULL;
    memcpy(arraddnptr(*out, kv->n), f->bytes + kv->at, (size_t)kv->n * 4);
    return true;
}

void gguf_free_strs(char **strs) {
    for (size_t i = 0; i < arrlenu(strs); i++) free(strs[i]);
    arrfree(strs);
}

const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name) {
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

void gguf_tensor_to_f32(const GgufTensor *t, float *out) {
    const uint8_t *p = t->data;
    if (t->type == GGML_TYPE_F32) {
        memcpy(out, p, (size_t)t->nbytes);
    } else if (t->type == GGML_TYPE_F16) {
        for (uint64_t i = 0; i < t->n_elements; i++) out[i] = st_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
    } else {
        for (uint64_t b = 0; b < t->n_elements / GGML_Q8_0_BLOCK; b++) {
            GgmlBlockQ8_0 blk;
            memcpy(&blk, p + b * sizeof blk, sizeof blk);
            const float d = st_f16_to_f32(blk.d);
            for (int j = 0; j < GGML_Q8_0_BLOCK; j++) out[b * GGML_Q8_0_BLOCK + j] = (float)blk.qs[j] * d;
        }
    }
}
