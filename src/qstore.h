// qstore.h: the bitsandbytes / transformers serialization of one 4-bit tensor in a
// safetensors file (docs/formats.md, "bitsandbytes serialization"). For a tensor NAME of original shape S:
//   NAME                                   U8  [(n+1)/2, 1]  packed codes
//   NAME.absmax                            U8  [n_blocks] with double quant, F32 without
//   NAME.quant_map                         F32 [16]
//   NAME.nested_absmax                     F32 [ceil(n_blocks/256)]   (double quant only)
//   NAME.nested_quant_map                  F32 [256]                  (double quant only)
//   NAME.quant_state.bitsandbytes__nf4     U8 bytes of JSON: quant_type, blocksize, dtype,
//        (or __fp4)                        shape, and nested_blocksize, nested_offset,
//                                          nested_dtype with double quant
// Not here: the quantizer itself (quant.c) or the file format (safetensors.c).
#ifndef QLORA_QSTORE_H
#define QLORA_QSTORE_H

#include "quant.h"
#include "safetensors.h"

#define QSTORE_STATE_SUFFIX ".quant_state.bitsandbytes__"

// Add the tensors of q under name to w. q must outlive st_writer_write (its arrays are
// borrowed); the JSON state is owned by the writer. orig_dtype names the source dtype
// ("float32", "float16", "bfloat16").
void qstore_add(StWriter *w, const char *name, const Q4Tensor *q, int ndim,
                const uint64_t *shape, const char *orig_dtype);

// If tensor_name is a quant-state tensor (ends in QSTORE_STATE_SUFFIX + nf4|fp4), copy its
// base name (without the suffix) into base (cap bytes) and return true.
bool qstore_is_state(const char *tensor_name, char *base, size_t cap);

// Load the 4-bit tensor stored under base name `name` from st into q (owned copies), with
// its original shape in ndim/shape. Every companion tensor is checked for presence, dtype
// and size; an error names the file and tensor.
bool qstore_load(const SafeTensors *st, const char *name, Q4Tensor *q, int *ndim,
                 uint64_t shape[ST_MAX_DIMS], Error *err);

#endif
