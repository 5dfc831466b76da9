// gguf.h: GGUF v3 files, the single-file format of ggml and llama.cpp (docs/gguf.md): a writer,
// a validating reader, and every constant of the format, here and nowhere else.
//
// Layout (little-endian throughout; a string is a u64 byte count and that many UTF-8 bytes,
// no NUL):
//   u32 magic "GGUF", u32 version 3, u64 tensor count, u64 key-value count
//   per key-value pair: string key, u32 value type (GgufType), the value; an array value is
//     u32 element type, u64 element count, the elements
//   per tensor: string name (shorter than GGUF_MAX_NAME bytes), u32 n_dims (1..4),
//     u64 ne[n_dims], u32 ggml type (GgmlType), u64 offset
//   zero padding to the alignment (general.alignment, GGUF_ALIGNMENT when absent), then the
//   tensor data: each tensor at its offset from the start of the data, in the order of the
//   infos, each padded with zeros to the alignment.
// ne[0] is the contiguous dimension: a row-major matrix [rows, cols] has ne = {cols, rows},
// so a linear layer's weight [out, in] is stored with ne = {in, out}.
// Not here: which tensors and keys a model needs (gguf_export.c).
#ifndef QLORA_GGUF_H
#define QLORA_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define GGUF_MAGIC 0x46554747u  // the bytes "GGUF" read as a little-endian u32
#define GGUF_VERSION 3
#define GGUF_ALIGNMENT 32       // what this writer uses, and the default when the key is absent
#define GGUF_KEY_ALIGNMENT "general.alignment"
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_NAME 64        // a tensor name has fewer bytes than this (ggml's name buffer)

// Value types of the key-value pairs.
typedef enum {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11,
    GGUF_F64 = 12,
    GGUF_N_TYPES
} GgufType;

// The ggml tensor types qlora writes and reads (ggml numbers many more).
typedef enum { GGML_TYPE_F32 = 0, GGML_TYPE_F16 = 1, GGML_TYPE_Q8_0 = 8 } GgmlType;

// Q8_0: blocks of 32 consecutive values along ne[0]; d = max|x| / 127 stored as IEEE half,
// q = round-half-away(x / d) (x * (1/d) in fp32, with d before its rounding to half, as
// ggml's reference quantizer computes it); a value reads back as q * half(d).
#define GGML_Q8_0_BLOCK 32
typedef struct {
    uint16_t d;                  // scale, IEEE binary16 bits
    int8_t qs[GGML_Q8_0_BLOCK];
} GgmlBlockQ8_0;
_Static_assert(sizeof(GgmlBlockQ8_0) == 34, "a q8_0 block is 2 + 32 bytes, unpadded");

// llama.cpp's token types (tokenizer.ggml.token_type, i32 per token).
enum {
    GGUF_TOKEN_NORMAL = 1, GGUF_TOKEN_UNKNOWN = 2, GGUF_TOKEN_CONTROL = 3,
    GGUF_TOKEN_USER_DEFINED = 4, GGUF_TOKEN_UNUSED = 5, GGUF_TOKEN_BYTE = 6,
};
// general.file_type: the type of most tensors (1-D ones stay F32).
enum { GGUF_FILE_ALL_F32 = 0, GGUF_FILE_MOSTLY_F16 = 1, GGUF_FILE_MOSTLY_Q8_0 = 7 };
// general.quantization_version, required once any tensor is quantized (ggml's GGML_QNT_VERSION).
#define GGUF_QUANTIZATION_VERSION 2

// "f32", "f16", "q8_0".
const char *ggml_type_name(GgmlType t);
// Values per block (1, 1, 32) and bytes per block (4, 2, 34) of type t.
size_t ggml_block_values(GgmlType t);
size_t ggml_block_bytes(GgmlType t);

// IEEE binary16 bits of f, rounded to nearest, ties to even; beyond the largest half (65504)
// the result is +-Inf; NaN stays NaN. (The reverse is safetensors.h's st_f16_to_f32.)
uint16_t gguf_f32_to_f16(float f);
// Quantize x[0..n) (n % GGML_Q8_0_BLOCK == 0) into n / 32 blocks at out. Overwrites out.
void gguf_quantize_q8_0(const float *x, size_t n, GgmlBlockQ8_0 *out);

// ---- writing -------------------------------------------------------------------------------

// Key-value pairs in the order they are set, then tensors in the order they are added. The
// writer is the caller's own content: a key set twice, a name too long, a shape that type
// cannot hold (Q8_0 needs ne[0] % 32 == 0) is a bug (CHECK), not an Error.
typedef struct GgufWriter GgufWriter;
// A new writer holding one pair already: general.alignment = GGUF_ALIGNMENT.
GgufWriter *gguf_writer_new(void);
void gguf_writer_free(GgufWriter *w);  // NULL is a no-op; frees owned tensor data

void gguf_set_u32(GgufWriter *w, const char *key, uint32_t v);
void gguf_set_i32(GgufWriter *w, const char *key, int32_t v);
void gguf_set_f32(GgufWriter *w, const char *key, float v);
void gguf_set_bool(GgufWriter *w, const char *key, bool v);
void gguf_set_str(GgufWriter *w, const char *key, const char *v);
// Arrays of n strings (NUL-terminated, copied), n int32 values or n float values (copied).
void gguf_set_str_array(GgufWriter *w, const char *key, const char *const *v, size_t n);
void gguf_set_i32_array(GgufWriter *w, const char *key, const int32_t *v, size_t n);
void gguf_set_f32_array(GgufWriter *w, const char *key, const float *v, size_t n);

// A tensor of shape ne[0..n_dims) (ne[0] contiguous) from fp32 values in that order, stored
// as type when the file is written. data is borrowed: it must live until gguf_write returns.
void gguf_add_tensor(GgufWriter *w, const char *name, GgmlType type, int n_dims,
                     const uint64_t *ne, const float *data);
// The same, but the writer takes data (malloc'ed) and frees it.
void gguf_add_tensor_owned(GgufWriter *w, const char *name, GgmlType type, int n_dims,
                           const uint64_t *ne, float *data);
// Tensors added so far, and the bytes their data takes in the file (padding included).
size_t gguf_writer_n_tensors(const GgufWriter *w);
uint64_t gguf_writer_data_bytes(const GgufWriter *w);

// Write the file to path atomically (util.h's AtomicFile: a reader never sees half a file and
// an earlier file survives a failure). Converts tensor data a slice at a time. False with err
// (status 1) on an I/O failure.
bool gguf_write(const GgufWriter *w, const char *path, Error *err);

// ---- reading -------------------------------------------------------------------------------

typedef struct {
    char *key;
    GgufType type;
    GgufType arr_type;  // the elements' type when type == GGUF_ARRAY
    uint64_t n;         // elements of an array; 1 otherwise
    size_t at;          // file offset of the value (an array's: of its first element)
} GgufKv;

typedef struct {
    char name[GGUF_MAX_NAME];
    GgmlType type;
    int n_dims;
    uint64_t ne[GGUF_MAX_DIMS];  // unused dimensions are 1
    uint64_t n_elements, nbytes;
    uint64_t offset;             // from the start of the data section
    const uint8_t *data;         // inside the file's bytes
} GgufTensor;

typedef struct {
    MappedFile map;              // when opened from a path
    const uint8_t *bytes;
    size_t size;
    char *name;                  // the path, or the name given, for messages
    uint32_t version;
    size_t alignment;
    GgufKv *kv;                  // [n_kv]
    size_t n_kv;
    GgufTensor *tensors;         // [n_tensors]
    size_t n_tensors;
    size_t data_start;           // file offset of the data section
} GgufFile;

// Open and validate the whole file before anything is used: magic, version (3, or 2 which has
// the same layout), counts that fit in the file, known value types, no nested arrays, bools 0
// or 1, strings inside the file, unique keys and tensor names, general.alignment a u32 power
// of two, tensors of 1..4 dimensions whose element counts do not overflow, of the three types
// above with ne[0] a whole number of blocks, at the offsets a packed data section implies,
// inside the file. False (status 2) with "NAME: byte OFFSET: WHAT: expected ..., found ...".
bool gguf_open(GgufFile *f, const char *path, Error *err);
// The same over bytes in memory (borrowed until gguf_close); name stands for them in messages.
bool gguf_open_memory(GgufFile *f, const uint8_t *bytes, size_t size, const char *name, Error *err);
void gguf_close(GgufFile *f);  // frees what gguf_open made; f is zeroed

// The pair named key, or NULL.
const GgufKv *gguf_find_kv(const GgufFile *f, const char *key);
// Typed getters: false (status 2) naming the file, the key, the type expected and the one
// found, or that the key is missing.
bool gguf_get_u32(const GgufFile *f, const char *key, uint32_t *out, Error *err);
bool gguf_get_f32(const GgufFile *f, const char *key, float *out, Error *err);
bool gguf_get_bool(const GgufFile *f, const char *key, bool *out, Error *err);
// A string value as a new NUL-terminated malloc'ed copy (free it).
bool gguf_get_str(const GgufFile *f, const char *key, char **out, Error *err);
// An array of strings as an stb_ds array of malloc'ed copies (gguf_free_strs frees both), or
// of i32 or f32 values as an stb_ds array (arrfree).
bool gguf_get_str_array(const GgufFile *f, const char *key, char ***out, Error *err);
bool gguf_get_i32_array(const GgufFile *f, const char *key, int32_t **out, Error *err);
bool gguf_get_f32_array(const GgufFile *f, const char *key, float **out, Error *err);
void gguf_free_strs(char **strs);

// The tensor named name, or NULL.
const GgufTensor *gguf_find_tensor(const GgufFile *f, const char *name);
// t's values as fp32 into out[0..t->n_elements) (F16 and Q8_0 dequantized). Overwrites out.
void gguf_tensor_to_f32(const GgufTensor *t, float *out);

#endif
