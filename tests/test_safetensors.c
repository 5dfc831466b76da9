// test_safetensors.c: TV9's exact bytes, writer -> reader round trips for every dtype we
// write, F16/BF16 conversion, and the table of malformed files in tests/bad/.
#include <stdlib.h>
#include <unistd.h>

#include "safetensors.h"
#include "test.h"

static char tmpdir[] = "/tmp/qlora-test-st-XXXXXX";

static void path_in_tmp(char *buf, size_t cap, const char *name) {
    snprintf(buf, cap, "%s/%s", tmpdir, name);
}

static void test_tv9(void) {
    // smallest file (docs/formats.md, "Worked values"): file, one F32 tensor "a" = [1, 2], no metadata
    static const uint8_t expect[72] = {
        0x38, 0, 0, 0, 0, 0, 0, 0, '{', '"', 'a', '"', ':', '{', '"', 'd', 't', 'y', 'p', 'e',
        '"', ':', '"', 'F', '3', '2', '"', ',', '"', 's', 'h', 'a', 'p', 'e', '"', ':', '[', '2',
        ']', ',', '"', 'd', 'a', 't', 'a', '_', 'o', 'f', 'f', 's', 'e', 't', 's', '"', ':', '[',
        '0', ',', '8', ']', '}', '}', ' ', ' ', 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40};
    float a[2] = {1.0f, 2.0f};
    uint64_t shape[1] = {2};
    StWriter w;
    st_writer_init(&w);
    st_writer_add(&w, "a", ST_F32, 1, shape, a);
    char path[256];
    path_in_tmp(path, sizeof path, "tv9.safetensors");
    Error err = {0};
    EXPECT(st_writer_write(&w, path, &err), "write TV9: %s", err.msg);
    st_writer_free(&w);
    MappedFile f;
    CHECK(file_map(&f, path, &err));
    EXPECT(f.size == 72 && memcmp(f.data, expect, 72) == 0, "TV9 file is byte-identical (%zu bytes)", f.size);
    file_unmap(&f);
    SafeTensors st;
    EXPECT(st_open(&st, path, &err), "TV9 reads back: %s", err.msg);
    const StTensor *t = st_find(&st, "a");
    float back[2];
    EXPECT(t && t->dtype == ST_F32 && t->ndim == 1 && t->shape[0] == 2 &&
           st_read_f32(&st, t, back, &err) && back[0] == 1.0f && back[1] == 2.0f, "TV9 tensor a = [1, 2]");
    st_close(&st);
}

static void test_round_trip(void) {
    // one tensor of each common dtype, odd sizes, a 0-d scalar, an empty tensor, metadata
    float f32[6] = {1.5f, -2.25f, 0.0f, 3e-38f, -1e30f, 7.0f};
    uint16_t f16[3] = {0x3C00, 0xC000, 0x7BFF};  // 1, -2, 65504
    uint16_t bf16[2] = {0x3F80, 0xC2F7};         // 1, -123.5
    uint8_t u8[5] = {0, 1, 2, 254, 255};
    int8_t i8[3] = {-128, 0, 127};
    int32_t i32[2] = {-7, 2147483647};
    int64_t i64[1] = {-9000000000000LL};
    float scalar = 42.0f;
    uint64_t s23[2] = {2, 3}, s3[1] = {3}, s2[1] = {2}, s5[1] = {5}, s1[1] = {1}, s0[2] = {0, 4};
    StWriter w;
    st_writer_init(&w);
    st_writer_meta(&w, "format", "pt");
    st_writer_meta(&w, "note", "quotes \" and \\ and \n survive");
    st_writer_add(&w, "z.f32", ST_F32, 2, s23, f32);
    st_writer_add(&w, "f16", ST_F16, 1, s3, f16);
    st_writer_add(&w, "bf16", ST_BF16, 1, s2, bf16);
    st_writer_add(&w, "u8", ST_U8, 1, s5, u8);
    st_writer_add(&w, "i8", ST_I8, 1, s3, i8);
    st_writer_add(&w, "i32", ST_I32, 1, s2, i32);
    st_writer_add(&w, "i64", ST_I64, 1, s1, i64);
    st_writer_add(&w, "scalar", ST_F32, 0, NULL, &scalar);
    st_writer_add(&w, "empty", ST_F32, 2, s0, f32);
    char path[256];
    path_in_tmp(path, sizeof path, "rt.safetensors");
    Error err = {0};
    EXPECT(st_writer_write(&w, path, &err), "round-trip write: %s", err.msg);
    st_writer_free(&w);

    SafeTensors st;
    bool opened = st_open(&st, path, &err);
    EXPECT(opened, "round-trip read: %s", err.msg);
    if (!opened) return;
    EXPECT(st.n_tensors == 9, "9 tensors (got %zu)", st.n_tensors);
    EXPECT((8 + st.header_bytes) % 8 == 0, "data buffer starts 8-byte aligned");
    const char *fmt = st_meta(&st, "format"), *note = st_meta(&st, "note");
    EXPECT(fmt && strcmp(fmt, "pt") == 0 && note && strcmp(note, "quotes \" and \\ and \n survive") == 0,
           "metadata survives, escapes included");
    struct { const char *name; const void *data; size_t bytes; StDtype dt; } cases[] = {
        {"z.f32", f32, sizeof f32, ST_F32}, {"f16", f16, sizeof f16, ST_F16},
        {"bf16", bf16, sizeof bf16, ST_BF16}, {"u8", u8, sizeof u8, ST_U8},
        {"i8", i8, sizeof i8, ST_I8}, {"i32", i32, sizeof i32, ST_I32},
        {"i64", i64, sizeof i64, ST_I64}, {"scalar", &scalar, 4, ST_F32}, {"empty", f32, 0, ST_F32}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const StTensor *t = st_find(&st, cases[i].name);
        EXPECT(t && t->dtype == cases[i].dt && t->end - t->begin == cases[i].bytes &&
               memcmp(t->data, cases[i].data, cases[i].bytes) == 0,
               "tensor %s round-trips exactly", cases[i].name);
    }
    const StTensor *sc = st_find(&st, "scalar"), *em = st_find(&st, "empty");
    EXPECT(sc && sc->ndim == 0 && sc->n_elements == 1 && em && em->n_elements == 0,
           "0-d scalar has 1 element, [0, 4] has 0");
    // layout order: larger alignment first (I64, F32 before F16, U8), then by name
    const StTensor *i64t = st_find(&st, "i64"), *u8t = st_find(&st, "u8"), *f16t = st_find(&st, "f16");
    EXPECT(i64t->begin == 0 && f16t->begin > st_find(&st, "z.f32")->begin && u8t->begin > f16t->begin,
           "tensors laid out by dtype size descending, then name");
    float conv[3];
    EXPECT(st_read_f32(&st, f16t, conv, &err) && conv[0] == 1.0f && conv[1] == -2.0f && conv[2] == 65504.0f,
           "F16 -> F32: 1, -2, 65504");
    EXPECT(st_read_f32(&st, st_find(&st, "bf16"), conv, &err) && conv[0] == 1.0f && conv[1] == -123.5f,
           "BF16 -> F32: 1, -123.5");
    EXPECT(!st_read_f32(&st, u8t, conv, &err) && strstr(err.msg, "'u8'") && strstr(err.msg, "floating"),
           "reading U8 as f32 is an error naming the tensor: %s", err.msg);
    st_close(&st);
}

static void test_f16_special(void) {
    EXPECT(st_f16_to_f32(0x0001) == ldexpf(1.0f, -24), "F16 smallest subnormal = 2^-24");
    EXPECT(st_f16_to_f32(0x03FF) == ldexpf(1023.0f, -24), "F16 largest subnormal");
    EXPECT(st_f16_to_f32(0x0400) == ldexpf(1.0f, -14), "F16 smallest normal = 2^-14");
    EXPECT(isinf(st_f16_to_f32(0x7C00)) && st_f16_to_f32(0xFC00) < 0, "F16 +-Inf");
    EXPECT(isnan(st_f16_to_f32(0x7E00)), "F16 NaN");
    EXPECT(signbit(st_f16_to_f32(0x8000)) && st_f16_to_f32(0x8000) == 0.0f, "F16 -0");
    EXPECT(st_f16_to_f32(0x3555) == 0.333251953125f, "F16 0x3555 = 0.333251953125");
}

static void test_bad_files(void) {
    FILE *list = fopen("tests/bad/safetensors.list", "r");
    EXPECT(list != NULL, "tests/bad/safetensors.list exists");
    if (!list) return;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, list)) {
        char *tab = strchr(line, '\t');
        if (!tab) continue;
        *tab = '\0';
        char *phrase = tab + 1;
        phrase[strcspn(phrase, "\n")] = '\0';
        char path[600];
        snprintf(path, sizeof path, "tests/bad/%s", line);
        SafeTensors st;
        Error err = {0};
        bool opened = st_open(&st, path, &err);
        if (opened) st_close(&st);
        EXPECT(!opened && err.status == EXIT_BAD_INPUT && strstr(err.msg, path) &&
               strstr(err.msg, phrase) && !strchr(err.msg, '\n'),
               "%s rejected with one line naming it and '%s': %s", line, phrase, err.msg);
        n++;
    }
    fclose(list);
    EXPECT(n >= 20, "at least 20 malformed files checked (%d)", n);
    SafeTensors st;
    Error err = {0};
    EXPECT(!st_open(&st, "tests/bad/no-such-file.safetensors", &err) && strstr(err.msg, "cannot open"),
           "missing file: %s", err.msg);
}

static void test_writer_duplicate(void) {
    float a = 1;
    uint64_t s[1] = {1};
    StWriter w;
    st_writer_init(&w);
    st_writer_add(&w, "x", ST_F32, 1, s, &a);
    st_writer_add(&w, "x", ST_F32, 1, s, &a);
    char path[256];
    path_in_tmp(path, sizeof path, "dup.safetensors");
    Error err = {0};
    EXPECT(!st_writer_write(&w, path, &err) && strstr(err.msg, "added twice") && access(path, F_OK) != 0,
           "writer refuses duplicate names and leaves no file: %s", err.msg);
    st_writer_free(&w);
}

// A file with no tensors: written by the writer and read back, and a bare "{}" header in
// memory. Both once passed NULL to qsort (undefined behaviour, UBSan: make test SANITIZE=1).
static void test_no_tensors(void) {
    char path[300];
    snprintf(path, sizeof path, "%s/none.safetensors", tmpdir);
    StWriter w;
    st_writer_init(&w);
    Error err = {0};
    EXPECT(st_writer_write(&w, path, &err), "write a file with no tensors: %s", err.msg);
    st_writer_free(&w);
    SafeTensors st;
    EXPECT(st_open(&st, path, &err) && st.n_tensors == 0, "read it back: %s", err.msg);
    st_close(&st);
    static const uint8_t bare[10] = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
    EXPECT(st_open_memory(&st, bare, sizeof bare, "bare", &err) && st.n_tensors == 0, "'{}' header: %s", err.msg);
    st_close(&st);
}

int main(void) {
    CHECK(mkdtemp(tmpdir) != NULL);
    test_no_tensors();
    test_tv9();
    test_round_trip();
    test_f16_special();
    test_bad_files();
    test_writer_duplicate();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("warning: could not remove %s\n", tmpdir);
    return test_summary("test_safetensors");
}
