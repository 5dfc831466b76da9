#!/usr/bin/env python3
"""Training fixtures of tests/ref/ (run after make_ref.py, with Debian's python3-torch):

  lora_init/            a PEFT-format adapter for tests/ref/tiny (r=4, alpha=8, all four
                        linears, random A and B), the starting point of the tests below
  tiny_grads.safetensors  gradients of the mean next-token loss on tiny_ref's tokens:
                        "lora.<PEFT key>" for every adapter tensor (model + lora_init), and
                        "full.<param>" for every model parameter (method full; linear
                        weights in [out, in] layout, as qlora stores them)
  train_data.jsonl      10 pre-tokenized examples of different lengths
  train_ref.json        per-step losses of 12 AdamW steps with torch.optim.AdamW, clipping
                        and a linear warm-up/decay schedule (settings inside), for LoRA
                        from lora_init, and of 6 steps of method full

The model code is make_ref.py's float64 forward, evaluated here in float32 for training
(as qlora trains in fp32). Regenerate with: python3 tests/ref/make_train_ref.py
"""
import json
import os
import struct

import torch

import make_ref as R  # the tiny model's weights and forward (same seed, same values)

HERE = R.HERE
L, C, V = R.L, R.C, R.V
torch.manual_seed(99)
TARGETS = ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"]
SHAPES = {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C), "mlp.c_fc": (C, 4 * C), "mlp.c_proj": (4 * C, C)}
RANK, ALPHA = 4, 8.0


def lora_init():
    ad = {}
    for i in range(L):
        for t in TARGETS:
            nin, nout = SHAPES[t]
            ad[f"base_model.model.transformer.h.{i}.{t}.lora_A.weight"] = (torch.rand(RANK, nin) * 2 - 1) / nin ** 0.5
            ad[f"base_model.model.transformer.h.{i}.{t}.lora_B.weight"] = torch.randn(nout, RANK) * 0.05
    return ad


def forward_lora(w, ad, tokens, dtype):
    """GPT-2 forward with LoRA on every linear: x W + b + s * (x A^T) B^T."""
    w = {k: v.to(dtype) for k, v in w.items()}
    b_, t_ = tokens.shape
    hs = C // R.NH
    s = ALPHA / RANK
    mask = torch.tril(torch.ones(t_, t_, dtype=torch.bool))

    def lin(x, i, t):
        p = f"h.{i}.{t}"
        y = x @ w[p + ".weight"] + w[p + ".bias"]
        if ad is not None:
            k = f"base_model.model.transformer.h.{i}.{t}"
            y = y + s * (x @ ad[k + ".lora_A.weight"].to(dtype).T) @ ad[k + ".lora_B.weight"].to(dtype).T
        return y

    h = w["wte.weight"][tokens] + w["wpe.weight"][torch.arange(t_)]
    for i in range(L):
        p = f"h.{i}."
        a = R.layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        q, k, v = lin(a, i, "attn.c_attn").split(C, dim=-1)
        q = q.view(b_, t_, R.NH, hs).transpose(1, 2)
        k = k.view(b_, t_, R.NH, hs).transpose(1, 2)
        v = v.view(b_, t_, R.NH, hs).transpose(1, 2)
        sc = (q @ k.transpose(-1, -2)) / hs ** 0.5
        sc = sc.masked_fill(~mask, torch.finfo(sc.dtype).min)
        o = (torch.softmax(sc, dim=-1) @ v).transpose(1, 2).reshape(b_, t_, C)
        h = h + lin(o, i, "attn.c_proj")
        m = R.layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        h = h + lin(R.gelu_new(lin(m, i, "mlp.c_fc")), i, "mlp.c_proj")
    h = R.layer_norm(h, w["ln_f.weight"], w["ln_f.bias"])
    return h @ w["wte.weight"].T


def loss_sum(logits, targets):
    return torch.nn.functional.cross_entropy(logits.reshape(-1, V), targets.reshape(-1),
                                             ignore_index=-1, reduction="sum")


def write_adapter(folder, ad):
    d = os.path.join(HERE, folder)
    os.makedirs(d, exist_ok=True)
    R.write_safetensors(os.path.join(d, "adapter_model.safetensors"), {k: v.float() for k, v in ad.items()})
    cfg = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": "tests/ref/tiny",
           "r": RANK, "lora_alpha": ALPHA, "lora_dropout": 0.0, "target_modules": ["c_attn", "c_proj", "c_fc"],
           "fan_in_fan_out": True, "bias": "none", "use_rslora": False, "init_lora_weights": True,
           "inference_mode": True}
    with open(os.path.join(d, "config.json" if False else "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


ad0 = lora_init()
write_adapter("lora_init", ad0)

# gradients at the starting point, float64
ref_tokens = torch.tensor([list(b"The quick brown fox jumps over the lazy dog. Pack my box with five dozen jugs!"[i * R.T:(i + 1) * R.T]) for i in range(R.B)])
targets = torch.full_like(ref_tokens, -1)
targets[:, :-1] = ref_tokens[:, 1:]
grads = {}
ad = {k: v.double().requires_grad_() for k, v in ad0.items()}
n_pred = (targets >= 0).sum()
(loss_sum(forward_lora(R.weights, ad, ref_tokens, torch.float64), targets) / n_pred).backward()
for k, v in ad.items():
    grads["lora." + k] = v.grad.float()
w = {k: v.double().requires_grad_() for k, v in R.weights.items()}
(loss_sum(forward_lora(w, None, ref_tokens, torch.float64), targets) / n_pred).backward()
for k, v in w.items():
    g = v.grad
    if k.endswith(".weight") and any(t in k for t in TARGETS):
        g = g.T  # Conv1D [in, out] -> [out, in]
    grads["full." + k] = g.float().contiguous()
R.write_safetensors(os.path.join(HERE, "tiny_grads.safetensors"), grads)

# training data: 10 pre-tokenized examples of lengths 7..25
gen = torch.Generator().manual_seed(5)
examples = [torch.randint(0, 256, (7 + (i * 7) % 19,), generator=gen).tolist() for i in range(10)]
with open(os.path.join(HERE, "train_data.jsonl"), "w") as f:
    for e in examples:
        f.write(json.dumps({"input_ids": e}) + "\n")


def linear_schedule(warmup, total):
    def f(step):
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


def train(params, forward, steps, lr, wd_for, settings):
    """qlora's batching: micro_batch_size examples per pass, in file order, padded to the
    longest; gradient_accumulation_steps passes per step, cut short at the end of an epoch;
    loss = sum over predicted tokens / their count in the whole step."""
    groups = [{"params": [p for n, p in params.items() if wd_for(n)], "weight_decay": settings["weight_decay"]},
              {"params": [p for n, p in params.items() if not wd_for(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(settings["adam_beta1"], settings["adam_beta2"]),
                            eps=settings["adam_epsilon"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_schedule(settings["warmup_steps"], steps))
    mb, acc = settings["micro_batch_size"], settings["gradient_accumulation_steps"]
    n, pos, losses = len(examples), 0, []
    for _ in range(steps):
        micro = []
        for _ in range(acc):
            if pos >= n:
                break
            micro.append(examples[pos:pos + mb])
            pos += mb
        if pos >= n:
            pos = 0
        total = sum(len(e) - 1 for batch in micro for e in batch)
        opt.zero_grad()
        step_loss = 0.0
        for batch in micro:
            t = max(len(e) for e in batch)
            tok = torch.zeros(len(batch), t, dtype=torch.long)
            tgt = torch.full((len(batch), t), -1, dtype=torch.long)
            for b, e in enumerate(batch):
                tok[b, :len(e)] = torch.tensor(e)
                tgt[b, :len(e) - 1] = torch.tensor(e[1:])
            ls = loss_sum(forward(tok), tgt)
            (ls / total).backward()
            step_loss += ls.item()
        torch.nn.utils.clip_grad_norm_(list(params.values()), settings["max_grad_norm"])
        opt.step()
        sched.step()
        losses.append(step_loss / total)
    return losses


settings = {"micro_batch_size": 2, "gradient_accumulation_steps": 2, "warmup_steps": 2,
            "weight_decay": 0.01, "adam_beta1": 0.9, "adam_beta2": 0.99, "adam_epsilon": 1e-6,
            "max_grad_norm": 1.0}
lora_params = {k: v.float().clone().requires_grad_() for k, v in ad0.items()}
lora_losses = train(lora_params, lambda tok: forward_lora(R.weights, lora_params, tok, torch.float32),
                    12, 5e-3, lambda n: True, settings)
full_params = {k: v.float().clone().requires_grad_() for k, v in R.weights.items()}
no_decay = lambda n: not (n.endswith(".bias") or ".ln_" in n or n.startswith("ln_f"))
full_losses = train(full_params, lambda tok: forward_lora(full_params, None, tok, torch.float32),
                    6, 1e-3, no_decay, settings)
with open(os.path.join(HERE, "train_ref.json"), "w") as f:
    json.dump({"settings": settings, "lora": {"learning_rate": 5e-3, "steps": 12, "losses": lora_losses},
               "full": {"learning_rate": 1e-3, "steps": 6, "losses": full_losses}}, f, indent=1)
print("lora losses", [round(x, 5) for x in lora_losses])
print("full losses", [round(x, 5) for x in full_losses])
