// test_gguf.c: the GGUF module (src/gguf.h): fp32 -> fp16 rounding against the compiler's
// _Float16, q8_0 blocks against a plain reference written from the format's definition, a
// writer -> reader round trip of every value type the exporter writes, the exact bytes of a
// tiny file, and hostile files (every truncation, and one corruption per rule) rejected with
// a one-line message naming the file.
#include <stdlib.h>
#include <unistd.h>

#include "ds.h"
#include "gguf.h"
#include "safetensors.h"  // st_f16_to_f32
#include "test.h"

static char tmpdir[] = "/tmp/qlora-test-gguf-XXXXXX";

static float bits_to_f32(uint32_t b) {
    float f;
    memcpy(&f, &b, 4);
    return f;
}

// The reference rounding of fp32 to fp16: the compiler's _Float16 conversion (IEEE
// round-to-nearest-even) where the compiler has the type.
static bool ref_f16(float f, uint16_t *out) {
#ifdef __FLT16_MAX__
    _Float16 h = (_Float16)f;
    memcpy(out, &h, 2);
    return true;
#else
    (void)f;
    (void)out;
    return false;
#endif
}

static void test_f16(void) {
    // every half goes to fp32 and back unchanged (NaNs stay NaN)
    int bad = 0;
    for (uint32_t h = 0; h < 65536; h++) {
        const float f = st_f16_to_f32((uint16_t)h);
        const uint16_t back = gguf_f32_to_f16(f);
        if (isnan(f) ? !isnan(st_f16_to_f32(back)) : back != h) bad++;
    }
    EXPECT(bad == 0, "all 65536 halves survive f16 -> f32 -> f16 (%d differ)", bad);
    // midpoints between neighbouring halves round to the even one
    bad = 0;
    for (uint32_t h = 0; h < 0x7bff; h++) {
        const double mid = ((double)st_f16_to_f32((uint16_t)h) + st_f16_to_f32((uint16_t)(h + 1))) / 2;
        const uint16_t want = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        if (gguf_f32_to_f16((float)mid) != want) bad++;
    }
    EXPECT(bad == 0, "the midpoint of each pair of neighbouring halves rounds to the even one (%d differ)", bad);
    EXPECT(gguf_f32_to_f16(65504.0f) == 0x7bff && gguf_f32_to_f16(65519.99f) == 0x7bff &&
               gguf_f32_to_f16(65520.0f) == 0x7c00 && gguf_f32_to_f16(-1e30f) == 0xfc00 &&
               gguf_f32_to_f16(bits_to_f32(0x7f800000u)) == 0x7c00,
           "65504 is the largest half; 65520 and beyond round to Inf");
    EXPECT(gguf_f32_to_f16(5.9604645e-8f) == 0x0001 && gguf_f32_to_f16(2.9802322e-8f) == 0x0000 &&
               gguf_f32_to_f16(2.9802326e-8f) == 0x0001 && gguf_f32_to_f16(-0.0f) == 0x8000,
           "2^-24 is the smallest half; 2^-25 ties to 0; just above it rounds up; -0 keeps its sign");
    uint16_t r;
    if (!ref_f16(1.0f, &r)) {
        SKIP(1, "this compiler has no _Float16: no comparison with its conversion");
        return;
    }
    Rng rng;
    rng_seed(&rng, 7);
    bad = 0;
    for (int i = 0; i < 2000000; i++) {  // random bit patterns: every exponent, NaNs, Infs
        const float f = bits_to_f32((uint32_t)rng_u64(&rng));
        ref_f16(f, &r);
        const uint16_t got = gguf_f32_to_f16(f);
        if (isnan(f) ? (got & 0x7c00) != 0x7c00 || !(got & 0x3ff) : got != r) bad++;
    }
    EXPECT(bad == 0, "2,000,000 random fp32 bit patterns convert as _Float16 does (%d differ)", bad);
}

// The q8_0 reference, from the format's definition alone: d = max|x| / 127 in fp32, q =
// x * (1/d) rounded half away from zero (in double, where + 0.5 is exact), scale stored as half.
static void ref_q8_0(const float *x, GgmlBlockQ8_0 *out) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
    const float d = amax / 127, id = d == 0 ? 0 : 1 / d;
    uint16_t h;
    if (!ref_f16(d, &h)) h = gguf_f32_to_f16(d);
    out->d = h;
    for (int j = 0; j < 32; j++) {
        const double v = (double)(x[j] * id);
        out->qs[j] = (int8_t)(v >= 0 ? floor(v + 0.5) : -floor(-v + 0.5));
    }
}

static void test_q8_0(void) {
    enum { NB = 64 };
    float x[NB * 32];
    Rng rng;
    rng_seed(&rng, 11);
    for (int i = 0; i < NB * 32; i++) x[i] = rng_normal(&rng) * (i < 32 * 32 ? 0.02f : 3.0f);
    for (int j = 0; j < 32; j++) {
        x[40 * 32 + j] = 0.0f;                                     // an all-zero block
        x[41 * 32 + j] = (float)(j - 16) + 0.5f;                   // ties: d = 15.5 / 127
        x[42 * 32 + j] = j == 0 ? -127.0f : (float)j - 16.5f;      // d = 1: exact .5 ties
        x[43 * 32 + j] = 1e-30f * (float)(j + 1);                  // d underflows to 0 in half
    }
    GgmlBlockQ8_0 got[NB], want[NB];
    gguf_quantize_q8_0(x, NB * 32, got);
    int bad = 0;
    for (int b = 0; b < NB; b++) {
        ref_q8_0(x + b * 32, &want[b]);
        if (memcmp(&got[b], &want[b], sizeof got[b]) != 0) bad++;
    }
    EXPECT(bad == 0, "%d q8_0 blocks equal the plain reference byte for byte (%d differ)", NB, bad);
    EXPECT(got[42].qs[0] == -127 && got[42].qs[1] == -16 && got[42].qs[16] == -1 && got[42].qs[17] == 1 &&
               got[42].qs[31] == 15,
           "d = 1: -15.5 -> -16, -0.5 -> -1, 0.5 -> 1 (half away from zero)");
    float back[NB * 32];
    GgufTensor t = {.type = GGML_TYPE_Q8_0, .n_elements = NB * 32, .nbytes = sizeof got, .data = (const uint8_t *)got};
    gguf_tensor_to_f32(&t, back);
    double worst = 0;
    for (int b = 0; b < NB; b++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        const double d = amax / 127.0, dh = st_f16_to_f32(got[b].d);
        // rounding to the nearest step (d/2) plus the scale's own rounding to half, times |q| <= 127
        const double bound = d / 2 + 127 * fabs(dh - d) + 1e-45;
        for (int j = 0; j < 32; j++) {
            const double e = fabs(back[b * 32 + j] - x[b * 32 + j]) / bound;
            worst = e > worst ? e : worst;
        }
    }
    EXPECT(worst <= 1.0, "q8_0 read back within d/2 + 127 |half(d) - d| of every value (worst %.3f of it)", worst);
    bool zeros = true;
    for (int j = 0; j < 32; j++) zeros = zeros && back[40 * 32 + j] == 0.0f;
    EXPECT(zeros && got[40].d == 0, "an all-zero block has scale 0 and reads back as zeros, not NaN");
}

// A small file with every value type the exporter writes and a tensor of each type.
static GgufWriter *sample_writer(const float *a, const float *b) {
    GgufWriter *w = gguf_writer_new();
    gguf_set_str(w, "general.architecture", "gpt2");
    gguf_set_u32(w, "gpt2.block_count", 4);
    gguf_set_i32(w, "test.negative", -5);
    gguf_set_f32(w, "gpt2.attention.layer_norm_epsilon", 1e-5f);
    gguf_set_bool(w, "test.flag", true);
    const char *toks[] = {"a", "\xc4\xa0the", "<|endoftext|>", ""};
    gguf_set_str_array(w, "tokenizer.ggml.tokens", toks, 4);
    gguf_set_str_array(w, "tokenizer.ggml.merges", NULL, 0);
    const int32_t types[] = {1, 1, 3, 5};
    gguf_set_i32_array(w, "tokenizer.ggml.token_type", types, 4);
    const uint64_t ne_a[2] = {32, 3}, ne_b[1] = {5};
    gguf_add_tensor(w, "blk.0.ffn_up.weight", GGML_TYPE_Q8_0, 2, ne_a, a);
    gguf_add_tensor(w, "blk.0.ffn_up.bias", GGML_TYPE_F32, 1, ne_b, b);
    gguf_add_tensor(w, "token_embd.weight", GGML_TYPE_F16, 2, ne_a, a);
    return w;
}

static void test_round_trip(void) {
    float a[96], b[5] = {1.5f, -2.0f, 0.0f, 1e-8f, 3e38f};
    for (int i = 0; i < 96; i++) a[i] = sinf((float)i) * 0.1f;
    GgufWriter *w = sample_writer(a, b);
    EXPECT(gguf_writer_n_tensors(w) == 3 && gguf_writer_data_bytes(w) == 128 + 32 + 192,
           "3 tensors taking 102 -> 128, 20 -> 32 and 192 bytes (%llu)", (unsigned long long)gguf_writer_data_bytes(w));
    char path[256];
    snprintf(path, sizeof path, "%s/round.gguf", tmpdir);
    Error err = {0};
    const bool wrote = gguf_write(w, path, &err);
    EXPECT(wrote, "write: %s", err.msg);
    gguf_writer_free(w);
    GgufFile f;
    if (!gguf_open(&f, path, &err)) {
        EXPECT(0, "read back: %s", err.msg);
        return;
    }
    uint32_t u;
    float e;
    bool flag;
    char *arch = NULL, **toks = NULL, **merges = NULL;
    int32_t *types = NULL;
    EXPECT(f.version == 3 && f.alignment == 32 && f.n_kv == 9 && f.n_tensors == 3 && f.data_start % 32 == 0,
           "version 3, alignment 32, 9 pairs (general.alignment first), 3 tensors");
    EXPECT(gguf_get_u32(&f, "general.alignment", &u, &err) && u == 32 && f.kv[0].type == GGUF_U32, "general.alignment = 32");
    EXPECT(gguf_get_str(&f, "general.architecture", &arch, &err) && strcmp(arch, "gpt2") == 0, "string value");
    EXPECT(gguf_get_u32(&f, "gpt2.block_count", &u, &err) && u == 4, "u32 value");
    EXPECT(gguf_get_f32(&f, "gpt2.attention.layer_norm_epsilon", &e, &err) && e == 1e-5f, "f32 value");
    EXPECT(gguf_get_bool(&f, "test.flag", &flag, &err) && flag, "bool value");
    EXPECT(gguf_find_kv(&f, "test.negative")->type == GGUF_I32 &&
               (int32_t)(f.bytes[gguf_find_kv(&f, "test.negative")->at] | 0xffffff00u) == -5, "i32 value");
    EXPECT(gguf_get_str_array(&f, "tokenizer.ggml.tokens", &toks, &err) && arrlenu(toks) == 4 &&
               strcmp(toks[1], "\xc4\xa0the") == 0 && strcmp(toks[2], "<|endoftext|>") == 0 && toks[3][0] == 0,
           "string array, UTF-8 and empty strings kept");
    EXPECT(gguf_get_str_array(&f, "tokenizer.ggml.merges", &merges, &err) && arrlenu(merges) == 0, "empty array");
    EXPECT(gguf_get_i32_array(&f, "tokenizer.ggml.token_type", &types, &err) && arrlenu(types) == 4 &&
               types[2] == 3 && types[3] == 5, "i32 array");
    EXPECT(!gguf_get_u32(&f, "gpt2.attention.layer_norm_epsilon", &u, &err) && strstr(err.msg, "expected u32, found f32"),
           "a getter of the wrong type says what it expected and found: %s", err.msg);
    const GgufTensor *q = gguf_find_tensor(&f, "blk.0.ffn_up.weight"), *v = gguf_find_tensor(&f, "blk.0.ffn_up.bias"),
                     *h = gguf_find_tensor(&f, "token_embd.weight");
    EXPECT(q && v && h && q->offset == 0 && v->offset == 128 && h->offset == 160 && q->ne[0] == 32 && q->ne[1] == 3 &&
               q->n_dims == 2 && h->type == GGML_TYPE_F16 && f.size == f.data_start + 352,
           "tensor infos: offsets 0, 128, 160 (packed, aligned to 32), shapes, types; file ends after the padding");
    float got[96];
    GgmlBlockQ8_0 blocks[3];
    gguf_quantize_q8_0(a, 96, blocks);
    EXPECT(q && memcmp(q->data, blocks, sizeof blocks) == 0, "q8_0 tensor bytes are the quantizer's");
    if (v) gguf_tensor_to_f32(v, got);
    EXPECT(v && memcmp(got, b, sizeof b) == 0, "f32 tensor exact");
    if (h) gguf_tensor_to_f32(h, got);
    bool same = h != NULL;
    for (int i = 0; h && i < 96; i++) same = same && got[i] == st_f16_to_f32(gguf_f32_to_f16(a[i]));
    EXPECT(same, "f16 tensor = each value rounded to half");
    free(arch);
    gguf_free_strs(toks);
    gguf_free_strs(merges);
    arrfree(types);
    gguf_close(&f);
}

// The exact bytes of a file with one pair and one 1-element F32 tensor.
static void test_exact_bytes(void) {
    GgufWriter *w = gguf_writer_new();
    const float one = 1.0f;
    const uint64_t ne[1] = {1};
    gguf_add_tensor(w, "t", GGML_TYPE_F32, 1, ne, &one);
    char path[256];
    snprintf(path, sizeof path, "%s/tiny.gguf", tmpdir);
    Error err = {0};
    const bool wrote = gguf_write(w, path, &err);
    EXPECT(wrote, "write tiny: %s", err.msg);
    gguf_writer_free(w);
    static const uint8_t head[] = {
        'G', 'G', 'U', 'F', 3, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,  // v3, 1 tensor, 1 pair
        17, 0, 0, 0, 0, 0, 0, 0, 'g', 'e', 'n', 'e', 'r', 'a', 'l', '.', 'a', 'l', 'i', 'g', 'n', 'm', 'e', 'n', 't',
        4, 0, 0, 0, 32, 0, 0, 0,                                                      // u32 32
        1, 0, 0, 0, 0, 0, 0, 0, 't', 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,              // "t", 1 dim, ne 1
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};                                          // f32, offset 0
    MappedFile m;
    CHECK(file_map(&m, path, &err));
    // header 94 bytes, padded to 96; data 4 bytes padded to 32
    EXPECT(m.size == 128 && memcmp(m.data, head, sizeof head) == 0 && m.data[94] == 0 && m.data[95] == 0 &&
               memcmp(m.data + 96, &one, 4) == 0,
           "tiny file: the header bytes, zero padding to 96, the value at 96, 128 bytes in all (%zu)", m.size);
    file_unmap(&m);
}

// gguf_open_memory on bytes[0..n) must fail with a message containing phrase and the name.
static void expect_rejected(const uint8_t *bytes, size_t n, const char *phrase, const char *what) {
    GgufFile f;
    Error err = {0};
    const bool ok = gguf_open_memory(&f, bytes, n, "bad.gguf", &err);
    if (ok) gguf_close(&f);
    EXPECT(!ok && strstr(err.msg, phrase) && strncmp(err.msg, "bad.gguf: byte ", 15) == 0 && !strchr(err.msg, '\n'),
           "%s: rejected with '%s' (got: %s)", what, phrase, ok ? "accepted" : err.msg);
}

// Offset of the first occurrence of needle (n bytes) in hay, which must have one.
static size_t find(const uint8_t *hay, size_t size, const void *needle, size_t n) {
    for (size_t i = 0; i + n <= size; i++)
        if (memcmp(hay + i, needle, n) == 0) return i;
    CHECK(0);
}

static void test_hostile(void) {
    float a[96], b[5] = {0};
    for (int i = 0; i < 96; i++) a[i] = (float)i;
    GgufWriter *w = sample_writer(a, b);
    char path[256];
    snprintf(path, sizeof path, "%s/good.gguf", tmpdir);
    Error err = {0};
    CHECK(gguf_write(w, path, &err));
    gguf_writer_free(w);
    MappedFile m;
    CHECK(file_map(&m, path, &err));
    const size_t n = m.size;
    uint8_t *g = xmalloc(n);
    memcpy(g, m.data, n);
    file_unmap(&m);
    int crashed_or_accepted = 0;
    for (size_t len = 0; len < n; len++) {  // every truncation is refused (run under ASan by make test SANITIZE=1)
        GgufFile f;
        if (gguf_open_memory(&f, g, len, "bad.gguf", &err)) {
            crashed_or_accepted++;
            gguf_close(&f);
        }
    }
    EXPECT(crashed_or_accepted == 0, "all %zu truncations of a %zu-byte file are refused", n, n);
    uint8_t *c = xmalloc(n);
// the good file with the bytes at off replaced by val (len bytes), refused as phrase says
#define PATCH(off, val, len, phrase, what) \
    do { memcpy(c, g, n); memcpy(c + (off), (val), (len)); expect_rejected(c, n, phrase, what); } while (0)
#define CORRUPT(off, byte, phrase, what) PATCH(off, &(uint8_t){(uint8_t)(byte)}, 1, phrase, what)
    CORRUPT(0, 'X', "magic: expected the bytes 'GGUF'", "wrong magic");
    CORRUPT(4, 1, "version: expected 3 (or 2), found 1", "version 1");
    CORRUPT(15, 0x10, "counts: expected", "a tensor count beyond the file");
    const size_t arch_len = find(g, n, "general.architecture", 20) - 8;
    CORRUPT(arch_len + 5, 1, "key: expected a string of at most", "a key length beyond the file");
    CORRUPT(arch_len + 8 + 20, 13, "expected a value type 0..12, found 13", "an unknown value type");
    const size_t flag = find(g, n, "test.flag", 9);
    CORRUPT(flag + 9 + 4, 2, "expected a bool (0 or 1), found 2", "a bool of 2");
    const size_t toks = find(g, n, "tokenizer.ggml.tokens", 21) + 21 + 4;
    CORRUPT(toks, GGUF_ARRAY, "arrays not nested", "a nested array");
    CORRUPT(toks + 4 + 6, 0x40, "strings within the", "a string array longer than the file");
    PATCH(find(g, n, "tokenizer.ggml.merges", 21) + 15, "tokens", 6,
          "key 'tokenizer.ggml.tokens': expected each key once", "a repeated key");
    const size_t align = find(g, n, "general.alignment", 17) + 17 + 4;
    CORRUPT(align, 48, "expected a power of two, found 48", "alignment 48");
    CORRUPT(align - 4, GGUF_I32, "key 'general.alignment': expected a u32, found a i32", "alignment of type i32");
    const size_t up = find(g, n, "blk.0.ffn_up.weight", 19);
    CORRUPT(up + 19, 5, "expected 1..4 dimensions, found 5", "5 dimensions");
    CORRUPT(up + 19 + 4, 33, "expected ne[0] a multiple of 32 for q8_0, found 33", "a q8_0 row of 33");
    CORRUPT(up + 19 + 4 + 16, 2, "expected type f32 (0), f16 (1) or q8_0 (8), found 2", "type q4_0");
    CORRUPT(up + 19 + 4 + 16 + 4, 4, "expected data offset 0 (packed, aligned to 32), found 4", "a misaligned offset");
    CORRUPT(up + 19 + 4 + 8 + 7, 0x7f, "dimensions that overflow", "an element count that overflows");
    const size_t embd = find(g, n, "token_embd.weight", 17);
    PATCH(embd, "blk.0.ffn_up.bias", 17, "tensor 'blk.0.ffn_up.bias': expected each name once", "a repeated tensor name");
    CORRUPT(embd - 8, 64, "tensor name: expected text of at most 63 bytes, found 64", "a 64-byte tensor name");
    CORRUPT(embd + 17 + 4, 0xff, "expected its 1530 bytes at data offset 160 inside the file", "a tensor whose data runs past the end of the file");
#undef CORRUPT
#undef PATCH
    free(c);
    free(g);
}

int main(void) {
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_f16();
    test_q8_0();
    test_round_trip();
    test_exact_bytes();
    test_hostile();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", tmpdir);
    return test_summary("test_gguf");
}
