// safetensors.h: reading and writing the safetensors format (docs/formats.md, "safetensors validation").
//
// File layout: 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping tensor
// names to {"dtype", "shape", "data_offsets": [begin, end]} (plus an optional
// "__metadata__" object of strings), then the byte buffer the offsets index.
// st_open maps the file and validates the whole header before any tensor is touched: every
// rule of the reference reader (sizes, UTF-8, JSON schema, known dtypes, shape x dtype ==
// byte span, offsets in bounds, contiguous, non-overlapping, buffer fully indexed) plus
// unique names. Tensor data is then borrowed straight from the mapping.
// Not here: what the tensors mean (model.c, lora.c, cmd/quant.c).
#ifndef QLORA_SAFETENSORS_H
#define QLORA_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

typedef enum {
    ST_BOOL, ST_U8, ST_I8, ST_U16, ST_I16, ST_F16, ST_BF16, ST_U32, ST_I32, ST_F32,
    ST_U64, ST_I64, ST_F64, ST_C64, ST_F8_E5M2, ST_F8_E4M3, ST_F8_E8M0, ST_F8_E4M3FNUZ,
    ST_F8_E5M2FNUZ, ST_F4, ST_F6_E2M3, ST_F6_E3M2,
    ST_N_DTYPES
} StDtype;

const char *st_dtype_name(StDtype dt);
int st_dtype_bits(StDtype dt);
bool st_dtype_parse(const char *name, StDtype *out);

#define ST_MAX_DIMS 8                 // deeper tensors are rejected with a message
#define ST_MAX_HEADER 100000000ull    // the reference reader's MAX_HEADER_SIZE

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t n_elements;      // product of shape (1 for a 0-d scalar)
    uint64_t begin, end;      // byte offsets into the data buffer
    const uint8_t *data;      // borrowed from the mapping; not aligned in general
} StTensor;

typedef struct {
    char *key;
    char *value;
} StMeta;

typedef struct {
    char *path;
    MappedFile file;
    bool borrowed;  // file.data belongs to the caller (st_open_memory)
    uint64_t header_bytes;
    StTensor *tensors;  // sorted by data offset
    size_t n_tensors;
    StMeta *meta;       // __metadata__, in file order
    size_t n_meta;
    struct StIndex { char *key; size_t value; } *index;  // stb_ds map: name -> tensors[i]
} SafeTensors;

// Open and validate path. On failure st is left closed and err names the file and problem.
bool st_open(SafeTensors *st, const char *path, Error *err);
// The same over bytes in memory (borrowed; must outlive st); name stands for the path in
// messages. Used by the fuzzers and for files already in memory.
bool st_open_memory(SafeTensors *st, const uint8_t *data, size_t size, const char *name, Error *err);
void st_close(SafeTensors *st);

// The tensor called name, or NULL.
const StTensor *st_find(const SafeTensors *st, const char *name);
// The metadata value for key, or NULL.
const char *st_meta(const SafeTensors *st, const char *key);

// Convert a floating tensor (F32, F16, BF16, F64) to f32 into out[0..n_elements).
// Overwrites out. Other dtypes give an error naming the tensor.
bool st_read_f32(const SafeTensors *st, const StTensor *t, float *out, Error *err);

// Tell the kernel the pages holding t's data are no longer needed, so a large checkpoint
// read tensor by tensor does not stay resident (the mapping remains valid; touching the
// data again re-reads it from the file).
void st_release(const SafeTensors *st, const StTensor *t);

// IEEE half and bfloat16 to f32 (exact; subnormals, Inf and NaN kept).
float st_f16_to_f32(uint16_t h);
float st_bf16_to_f32(uint16_t b);

// Writer: collect tensors (data borrowed until st_write_file), then write one file whose
// header is compact JSON (__metadata__ first), padded with spaces to a multiple of 8, the
// tensors laid out contiguously sorted by dtype alignment (descending) then name, as the
// reference writer does. Written to a temporary name and renamed (atomic).
typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
    const void *data;
    uint64_t bytes;
    bool owned;  // data is freed by st_writer_free
} StEntry;

typedef struct {
    StEntry *entries;  // stb_ds array
    StMeta *meta;      // stb_ds array
} StWriter;

void st_writer_init(StWriter *w);
void st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim,
                   const uint64_t *shape, const void *data);
// Same, but the writer takes ownership of data (malloc'ed) and frees it.
void st_writer_add_owned(StWriter *w, const char *name, StDtype dtype, int ndim,
                         const uint64_t *shape, void *data);
void st_writer_meta(StWriter *w, const char *key, const char *value);
// Write the file; false (err filled) on duplicate names or I/O failure.
bool st_writer_write(StWriter *w, const char *path, Error *err);
// Same, but entries added with data == NULL are produced on demand, one at a time, by
// fill(ctx, entry, buf) into a temporary buffer of entry->bytes (so a file larger than
// memory can be written).
typedef void (*StFill)(void *ctx, const StEntry *entry, void *buf);
bool st_writer_write_fill(StWriter *w, const char *path, StFill fill, void *ctx, Error *err);
void st_writer_free(StWriter *w);

#endif
