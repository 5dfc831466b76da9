// gguf_logprobs.c: a helper of tests/test_gguf_llama.sh (not a test itself): the next-token
// log-probabilities that qlora's forward pass, the one `qlora eval` sums into its loss, gives
// each token of a sequence, to hold llama.cpp's to them token by token.
// usage: gguf_logprobs MODEL_DIR ADAPTER_DIR|- IDS_FILE...
// An ids file holds `qlora tokenize` output (ids separated by spaces, at most n_positions). The
// model is loaded in fp32 (--quant none), as export-gguf reads it; the adapter, unless "-", is
// applied unmerged, as eval applies it. Prints per file one line: the log-probabilities of
// tokens 1..n-1 given the tokens before them.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ds.h"
#include "model.h"

// The ids in path (an stb_ds array), or exit 2.
static int *read_ids(const char *path) {
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "gguf_logprobs: cannot open %s\n", path);
        exit(2);
    }
    int *ids = NULL, id;
    while (fscanf(fp, "%d", &id) == 1) arrput(ids, id);
    fclose(fp);
    return ids;
}

// Print the log-probability of ids[t+1] after ids[0..t] for every t, from one forward pass.
static void print_logprobs(const Model *m, const LoraSet *lora, const int *ids, size_t n) {
    const size_t V = (size_t)m->cfg.vocab_size;
    Acts *acts = acts_create(m, lora, 1, n, ACTS_INFER);
    float *logits = xmalloc(n * V * sizeof(float));
    size_t count = 0;
    model_forward(m, lora, acts, ids, NULL, 1, n, &count, logits);
    for (size_t t = 0; t + 1 < n; t++) {
        const float *z = logits + t * V;
        double mx = -INFINITY, sum = 0;
        for (size_t v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (size_t v = 0; v < V; v++) sum += exp(z[v] - mx);
        printf(t ? " %.9g" : "%.9g", z[ids[t + 1]] - mx - log(sum));
    }
    printf("\n");
    free(logits);
    acts_free(acts);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: gguf_logprobs MODEL_DIR ADAPTER_DIR|- IDS_FILE...\n");
        return 2;
    }
    Model m;
    LoraSet lora;
    Error err = {0};
    const QuantConfig q = {QUANT_NONE, 64, false};
    if (!model_load(&m, argv[1], &q, &err)) {
        fprintf(stderr, "gguf_logprobs: %s\n", err.msg);
        return 2;
    }
    const bool has_lora = strcmp(argv[2], "-") != 0;
    const LoraShapes sh = model_lora_shapes(&m.cfg);
    if (has_lora && !lora_load_peft(&lora, argv[2], m.cfg.n_layer, &sh, &err)) {
        fprintf(stderr, "gguf_logprobs: %s\n", err.msg);
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        int *ids = read_ids(argv[i]);
        const size_t n = arrlenu(ids);
        if (n < 2 || n > (size_t)m.cfg.n_positions) {
            fprintf(stderr, "gguf_logprobs: %s: %zu ids, expected 2..%d\n", argv[i], n, m.cfg.n_positions);
            return 2;
        }
        print_logprobs(&m, has_lora ? &lora : NULL, ids, n);
        arrfree(ids);
    }
    if (has_lora) lora_free(&lora);
    model_free(&m);
    return 0;
}
