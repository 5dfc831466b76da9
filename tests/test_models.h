// test_models.h: model helpers shared by the model-layer tests.
#ifndef QLORA_TEST_MODELS_H
#define QLORA_TEST_MODELS_H

#include "model.h"

// Replace every linear of m stored quantized by fp32 holding its dequantized weights (so a
// quantized model's products can be compared with plain fp32 ones on the same values).
__attribute__((unused)) static void dequantize_in_place(Model *m) {
    const int n_lin = model_lora_shapes(&m->cfg).n;
    for (int l = 0; l < m->cfg.n_layer; l++)
        for (int t = 0; t < n_lin; t++) {
            QLinear *q = &m->blocks[l].lin[t];
            float *w = xmalloc_aligned(q->in * q->out * sizeof(float));
            qlinear_rows(q, 0, q->out, w);
            q4_free(&q->q4);
            qint_free(&q->qi);
            q->type = QUANT_NONE;
            q->w = w;
        }
}

#endif
