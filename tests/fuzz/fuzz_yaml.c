// fuzz_yaml.c: libFuzzer harness for the YAML job file and the --set overrides.
#include <string.h>

#include "config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    TrainConfig c;
    Error err = {0};
    config_defaults(&c);
    if (config_load_text(&c, (const char *)data, size, "job.yaml", &err)) config_validate(&c, &err);
    config_free(&c);
    // the same bytes as one --set assignment (NUL-terminated copy)
    char buf[512];
    size_t n = size < sizeof buf - 1 ? size : sizeof buf - 1;
    memcpy(buf, data, n);
    buf[n] = '\0';
    config_defaults(&c);
    config_set(&c, buf, &err);
    config_free(&c);
    return 0;
}
