// fuzz_adapter.c: libFuzzer harness for a PEFT adapter folder: adapter_config.json and
// adapter_model.safetensors (the input split at the first 0xFF byte), loaded for a
// 2-layer, 64-wide GPT-2.
#include <string.h>

#include "lora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *sep = memchr(data, 0xFF, size);
    if (!sep) return 0;
    LoraShapes shapes = {.in = {64, 64, 64, 256}, .out = {192, 64, 256, 64}};
    LoraSet ls;
    Error err = {0};
    size_t clen = (size_t)(sep - data);
    if (lora_load_peft_memory(&ls, (const char *)data, clen, "adapter_config.json", sep + 1, size - clen - 1,
                              "adapter_model.safetensors", 2, &shapes, &err))
        lora_free(&ls);
    return 0;
}
