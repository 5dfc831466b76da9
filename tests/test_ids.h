// test_ids.h: token-id arrays in the tokenizer tests: read from a JSON array (the fixtures'
// "ids"), compared, printed on failure. Arrays are stb_ds arrays.
#ifndef QLORA_TEST_IDS_H
#define QLORA_TEST_IDS_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "ds.h"
#include "json.h"

// The integers of JSON array arr as a new stb_ds array (arrfree it).
__attribute__((unused)) static int *ids_from_json(const cJSON *arr) {
    int *ids = NULL;
    for (const cJSON *w = arr->child; w; w = w->next) arrput(ids, w->valueint);
    return ids;
}

// a[0..na) and b[0..nb) hold the same ids.
__attribute__((unused)) static bool ids_equal(const int *a, size_t na, const int *b, size_t nb) {
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof(int)) == 0);
}

// "    what: 1 2 3" on stdout.
__attribute__((unused)) static void ids_print(const char *what, const int *ids, size_t n) {
    printf("    %s:", what);
    for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
    printf("\n");
}

#endif
