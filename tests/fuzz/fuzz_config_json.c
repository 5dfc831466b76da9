// fuzz_config_json.c: libFuzzer harness for a model's config.json.
#include "model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    GPT2Config cfg;
    Error err = {0};
    model_parse_config(&cfg, (const char *)data, size, "config.json", &err);
    return 0;
}
