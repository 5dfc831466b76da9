// gguf_export.h: a Hugging Face model folder, with a PEFT adapter merged in or not, or a PEFT
// adapter on its own, as a GGUF file that llama.cpp loads (docs/gguf.md).
//
// What llama.cpp needs of each architecture lives in one table entry (GgufArchSpec in
// gguf_export.c): the name llama.cpp knows it by (general.architecture and the prefix of its
// keys), the GGUF name of every tensor model_params lists and its shape, the norm-epsilon key,
// and for the LLaMA family its grouped-query and rotary keys and whether the query and key rows
// are reordered for llama.cpp's `llama` rotary layout (llama and mistral: yes; qwen2: no). The
// tokenizer's keys come from gguf_vocab.h.
// Tensor types follow llama.cpp's converter: 1-D tensors, norms, biases and GPT-2's position
// embeddings stay F32; the rest take the requested type, and a Q8_0 tensor whose rows are not
// a multiple of 32 values falls back to F16.
// Not here: the file format (gguf.c), the merge arithmetic (lora_merge.c), the command
// (cmd/export_gguf.c).
#ifndef QLORA_GGUF_EXPORT_H
#define QLORA_GGUF_EXPORT_H

#include <stdbool.h>
#include <stddef.h>

#include "gguf.h"
#include "gguf_vocab.h"
#include "util.h"

// What a written file holds, for the command's report.
typedef struct {
    const char *arch;       // general.architecture
    size_t n_tensors;       // tensors in the file
    size_t n_f32_kept;      // of them kept in F32 although another type was asked for
    size_t n_f16_fallback;  // Q8_0 asked, F16 written (rows not a multiple of 32)
    uint64_t data_bytes;    // tensor data, padding included
    GgufVocabInfo vocab;    // tokenizer (model files only)
    int context_length;     // <arch>.context_length (model files only)
    bool context_is_window; // ... Mistral's sliding window, narrower than its positions
    size_t n_lora_pairs;    // adapter slots merged in, or written as .lora_a / .lora_b
    float lora_alpha;       // adapter.lora.alpha written (adapter files only)
} GgufExportInfo;

// Write model_dir (config.json, weights, tokenizer) as a GGUF model file at out
// (atomically), its linear weights merged with adapter_dir's adapter (W + scaling B A from the
// original fp32 weights, as `qlora merge`) when adapter_dir is non-NULL, its matrices stored
// as type. False with err: status 2 for a folder llama.cpp cannot be given (an architecture
// not in the table or a shape its loader would not take, a tokenizer llama.cpp would split
// differently, weights outside the chosen type's range or not finite), 1 for I/O failures.
// info may be NULL.
bool gguf_export_model(const char *model_dir, const char *adapter_dir, GgmlType type, const char *out,
                       GgufExportInfo *info, Error *err);

// Write adapter_dir's adapter as a GGUF LoRA file at out (atomically), for model_dir's
// architecture and shapes (config.json only is read): general.type "adapter", adapter.type
// "lora", adapter.lora.alpha = scaling * r (llama.cpp applies alpha / r), and per adapted
// linear "<its tensor name>.lora_a" (ne {in, r}) and ".lora_b" (ne {r, out}; its rows reordered
// as the base tensor's are) as type (F32 or F16). Errors as gguf_export_model.
bool gguf_export_adapter(const char *model_dir, const char *adapter_dir, GgmlType type, const char *out,
                         GgufExportInfo *info, Error *err);

#endif
