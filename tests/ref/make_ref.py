#!/usr/bin/env python3
"""Writes the PyTorch reference fixtures of tests/ref/ (run with Debian's python3-torch):

  tiny/            a small random GPT-2 in the Hugging Face layout (hub tensor names, F32),
                   with a byte-level vocab.json (256 bytes + <|endoftext|>) and empty merges
  tiny-f16/        the same weights as F16 with save_pretrained's "transformer." names
  tiny-bf16/       the same weights as BF16
  tiny_ref.safetensors   tokens (I32 [B, T]), logits (F32 [B, T, V]), loss (F32 [1])

The forward pass below is written from the GPT-2 equations (docs/formats.md, "GPT-2 layer math"), independently
of the C code, and checked against Hugging Face transformers' GPT2LMHeadModel where that is
installed (tests/ref/check_hf.py). Weights are rounded to bfloat16 precision so that the
F32, F16 and BF16 files hold exactly the same values. Regenerate with:
    python3 tests/ref/make_ref.py
"""
import json
import math
import os
import struct

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
L, C, NH, P, V = 2, 64, 4, 32, 257
B, T = 2, 24
torch.manual_seed(1234)


def bf16_exact(x):
    """Round to bfloat16 and flush values below f16's normal range, so F32/F16/BF16 agree."""
    x = x.to(torch.bfloat16).to(torch.float32)
    x[x.abs() < 2.0 ** -14] = 0.0
    return x


def rand(*shape, std=0.1):
    return bf16_exact(torch.randn(*shape) * std)


weights = {"wte.weight": rand(V, C, std=0.2), "wpe.weight": rand(P, C, std=0.1),
           "ln_f.weight": bf16_exact(1.0 + 0.1 * torch.randn(C)), "ln_f.bias": rand(C)}
for i in range(L):
    weights[f"h.{i}.ln_1.weight"] = bf16_exact(1.0 + 0.1 * torch.randn(C))
    weights[f"h.{i}.ln_1.bias"] = rand(C)
    weights[f"h.{i}.ln_2.weight"] = bf16_exact(1.0 + 0.1 * torch.randn(C))
    weights[f"h.{i}.ln_2.bias"] = rand(C)
    for name, (nin, nout) in {"attn.c_attn": (C, 3 * C), "attn.c_proj": (C, C),
                              "mlp.c_fc": (C, 4 * C), "mlp.c_proj": (4 * C, C)}.items():
        weights[f"h.{i}.{name}.weight"] = rand(nin, nout, std=0.15)  # Conv1D [in, out]
        weights[f"h.{i}.{name}.bias"] = rand(nout, std=0.05)


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, w, b, eps=1e-5):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * w + b


def forward(w, tokens):
    """GPT-2 forward in float64 (the reference is held to a stricter standard than fp32)."""
    w = {k: v.double() for k, v in w.items()}
    b_, t_ = tokens.shape
    h = w["wte.weight"][tokens] + w["wpe.weight"][torch.arange(t_)]
    hs = C // NH
    mask = torch.tril(torch.ones(t_, t_, dtype=torch.bool))
    for i in range(L):
        p = f"h.{i}."
        a = layer_norm(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = a @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=-1)
        q = q.view(b_, t_, NH, hs).transpose(1, 2)
        k = k.view(b_, t_, NH, hs).transpose(1, 2)
        v = v.view(b_, t_, NH, hs).transpose(1, 2)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
        s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
        o = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(b_, t_, C)
        h = h + o @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        m = layer_norm(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        u = gelu_new(m @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
        h = h + u @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"]
    h = layer_norm(h, w["ln_f.weight"], w["ln_f.bias"])
    return h @ w["wte.weight"].T


DTYPES = {torch.float32: ("F32", 4), torch.float16: ("F16", 2), torch.bfloat16: ("BF16", 2),
          torch.int32: ("I32", 4)}


def write_safetensors(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        dt, size = DTYPES[t.dtype]
        if t.dtype == torch.bfloat16:
            raw = t.view(torch.int16).numpy().tobytes()
        else:
            raw = t.numpy().tobytes()
        header[name] = {"dtype": dt, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def byte_vocab():
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    vocab = {chr(c): b for b, c in zip(bs, cs)}
    vocab["<|endoftext|>"] = 256
    return vocab


def write_model(folder, dtype, prefix):
    d = os.path.join(HERE, folder)
    os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(d, "model.safetensors"),
                      {prefix + k: v.to(dtype) for k, v in weights.items()})
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
           "activation_function": "gelu_new", "n_layer": L, "n_head": NH, "n_embd": C,
           "n_positions": P, "n_ctx": P, "vocab_size": V, "layer_norm_epsilon": 1e-5,
           "n_inner": None, "bos_token_id": 256, "eos_token_id": 256, "attn_pdrop": 0.0,
           "embd_pdrop": 0.0, "resid_pdrop": 0.0, "tie_word_embeddings": True}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "vocab.json"), "w") as f:
        json.dump(byte_vocab(), f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")


write_model("tiny", torch.float32, "")
write_model("tiny-f16", torch.float16, "transformer.")
write_model("tiny-bf16", torch.bfloat16, "")

text = b"The quick brown fox jumps over the lazy dog. Pack my box with five dozen jugs!"
tokens = torch.tensor([list(text[:T]), list(text[T:2 * T])], dtype=torch.int64)
logits = forward(weights, tokens)
loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
write_safetensors(os.path.join(HERE, "tiny_ref.safetensors"),
                  {"tokens": tokens.to(torch.int32), "logits": logits.float(),
                   "loss": loss.float().reshape(1)})
print(f"wrote tiny GPT-2 fixtures; loss {loss.item():.6f}")
