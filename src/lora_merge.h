// lora_merge.h: folding a LoRA adapter into its base weight, W' = W + scaling B A, for the
// commands that write merged models (`qlora merge`'s Hugging Face folder, `qlora export-gguf`'s
// GGUF file). Not here: the adapters themselves (lora.c), the file formats (model_io.c, gguf.c).
#ifndef QLORA_LORA_MERGE_H
#define QLORA_LORA_MERGE_H

#include "lora.h"

// Add scaling * B [out, r] . A [r, in] of slot (layer, t) of ls to w [out, in] in place;
// nothing when that slot has no adapter. When w_sq / delta_sq are non-NULL, the sums of the
// squares of w (before) and of the change are added to them (a slot without an adapter adds
// nothing). Allocates out * in floats of scratch for the product.
void lora_merge_into(const LoraSet *ls, int layer, LoraTarget t, float *w, double *w_sq, double *delta_sq);

#endif
