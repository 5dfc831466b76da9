#!/usr/bin/env python3
"""LLaMA-family reference fixtures for qlora (issue 15), written by the real libraries.

What it makes (under OUTDIR, committed as tests/ref/llama/; docs/llama.md says what the C code must do):
  llama_tied/, llama_untied/ (sharded), qwen2/, qwen2_bf16/, mistral/ (F16 file)
      tiny random models saved with save_pretrained: LlamaForCausalLM with a tied head and GQA
      (4 query heads, 2 kv heads); LlamaForCausalLM untied, MQA, attention_bias, rope_theta 5e5,
      sharded; Qwen2ForCausalLM (q/k/v biases, untied) in F32 and the same values in BF16;
      MistralForCausalLM with head_dim != hidden/heads and sliding_window 4, stored as F16.
      Every weight is rounded to bf16 precision (and |w| < 2^-14 flushed to 0) first, so the
      F32, F16 and BF16 files hold exactly the same values and one set of logits serves all.
  NAME_ref.safetensors   input_ids (I32 [B,T]), labels (I32, -100 = ignored), logits (F32 [B,T,V]),
                         loss (F32 [1]), hidden_states.K (F32 [B,T,H]; 0 = embeddings, L = after
                         the final norm), peft_logits, peft_loss (the model with NAME_lora applied)
  NAME_lora/             a PEFT adapter (r=4, alpha=8, q,k,v,o,gate,up,down, dropout 0, random A
                         and B drawn here) saved with PeftModel.save_pretrained
  NAME_lora_grads.safetensors  d(loss)/d(lora_A|lora_B) under the adapter's own key names
  llama_tied_full_grads.safetensors  d(loss)/d(every parameter) of llama_tied (method full)
  train_data.jsonl, train_ref.json  12 AdamW steps of LoRA (from llama_tied_lora) and 6 of full
                         fine-tuning on llama_tied with qlora's batching (docs/training.md)
  ref.json               per model: losses, greedy continuation, checks (an independent forward
                         written from docs/llama.md's equations against transformers, bf16/f16
                         reload, adapter reload)
  config_defaults.json   LlamaConfig/Qwen2Config/MistralConfig().to_dict() of this transformers
  llama_tied/config_v4style.json  the same config with top-level rope_theta, rope_scaling null
  tok_smollm2/, tok_qwen2/, tok_llama2/, tok_llama2_metaspace/  tokenizer.json (+ the
                         tokenizer_config.json of the real model) built with the tokenizers
                         library like SmolLM2, Qwen2 and Llama-2/TinyLlama, trained with BpeTrainer
                         on the small text below; tok_*_strmerges/ the same with merges as "a b"
  tokenizer_cases.json   test strings with ids, tokens and decodes from tokenizers, and what
                         AutoTokenizer gives for the same folder
  VERSIONS.json          library versions, the date, and this script's sha256

Run on a machine with torch, transformers, tokenizers, peft and safetensors (no internet needed):
    python3 tests/make_llama_fixtures.py OUTDIR
Recorded with torch 2.11, transformers 5.17, tokenizers 0.23, peft 0.21 (see VERSIONS.json).
"""
import copy
import datetime
import hashlib
import inspect
import json
import math
import os
import platform
import shutil
import sys
import traceback

import torch
import torch.nn.functional as F

OUT = sys.argv[1] if len(sys.argv) > 1 else "tests/ref/llama"
NOTES = sys.argv[2] if len(sys.argv) > 2 else None  # optional: library source excerpts for reading
os.makedirs(OUT, exist_ok=True)
torch.set_num_threads(min(8, os.cpu_count() or 1))
torch.manual_seed(0)

V, H, I, L = 320, 64, 96, 2
B, T = 2, 10
RANK, ALPHA = 4, 8
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
REPORT = {"errors": []}


def log(*a):
    print(*a, flush=True)


def err(where):
    msg = f"{where}: {traceback.format_exc()}"
    log("ERROR", msg)
    REPORT["errors"].append(msg)


def wjson(path, obj, indent=1):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=indent, ensure_ascii=False)
        f.write("\n")


def save_st(path, tensors):
    from safetensors.torch import save_file
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, path)


def load_st(path):
    from safetensors.torch import load_file
    return load_file(path)


def bf16_exact(x):
    x = x.to(torch.bfloat16).to(torch.float32)
    x[x.abs() < 2.0 ** -14] = 0.0
    return x


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------

def model_specs():
    from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM,
                              Qwen2Config, Qwen2ForCausalLM)
    common = dict(vocab_size=V, hidden_size=H, intermediate_size=I, num_hidden_layers=L,
                  max_position_embeddings=64, hidden_act="silu", initializer_range=0.02,
                  attention_dropout=0.0)
    return {
        "llama_tied": (LlamaConfig, LlamaForCausalLM, 11, dict(
            common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
            rope_theta=10000.0, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2)),
        "llama_untied": (LlamaConfig, LlamaForCausalLM, 12, dict(
            common, num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=False,
            rope_theta=500000.0, rms_norm_eps=1e-6, attention_bias=True, bos_token_id=1,
            eos_token_id=2)),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM, 13, dict(
            common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
            rope_theta=1000000.0, rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=2,
            use_sliding_window=False)),
        "mistral": (MistralConfig, MistralForCausalLM, 14, dict(
            common, num_attention_heads=4, num_key_value_heads=2, head_dim=24,
            tie_word_embeddings=False, rope_theta=10000.0, rms_norm_eps=1e-5, bos_token_id=1,
            eos_token_id=2, sliding_window=4)),
    }


def make_config(cls, kw):
    theta = kw["rope_theta"]
    tries = [dict(kw, rope_parameters={"rope_type": "default", "rope_theta": theta},
                  attn_implementation="eager"),
             dict(kw, attn_implementation="eager"), dict(kw)]
    last = None
    for t in tries:
        try:
            return cls(**t)
        except Exception as e:  # noqa: BLE001 - try the next spelling
            last = e
    raise last


def rope_theta_of(cfg):
    rp = cfg.get("rope_parameters") or {}
    if isinstance(rp, dict) and rp.get("rope_theta") is not None:
        return float(rp["rope_theta"])
    return float(cfg.get("rope_theta", 10000.0))


def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "norm" in name:
                v = 1.0 + 0.1 * r
            elif name.endswith(".bias"):
                v = 0.05 * r
            elif "embed_tokens" in name:
                v = 0.3 * r
            elif "lm_head" in name:
                v = 0.1 * r
            else:
                v = r / math.sqrt(p.shape[1])
            p.copy_(bf16_exact(v))


def from_pretrained(cls, path, **kw):
    try:
        return cls.from_pretrained(path, dtype=torch.float32, attn_implementation="eager", **kw)
    except TypeError:
        return cls.from_pretrained(path, torch_dtype=torch.float32, **kw)


def read_folder_state(path):
    sd = {}
    for f in sorted(os.listdir(path)):
        if f.endswith(".safetensors"):
            sd.update(load_st(os.path.join(path, f)))
    return sd


def ref_forward(sd, cfg, ids, adapter=None, scale=ALPHA / RANK, hidden=None):
    """The block math of docs/llama.md, written independently of transformers, in float64."""
    sd = {k: v.double() for k, v in sd.items()}
    nh = cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
    eps = cfg["rms_norm_eps"]
    theta = rope_theta_of(cfg)
    win = cfg.get("sliding_window")
    if cfg["model_type"] == "qwen2" and not cfg.get("use_sliding_window"):
        win = None
    bn, tn = ids.shape
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(tn, dtype=torch.float64)[:, None] * inv[None, :]
    cos = torch.cat([ang.cos(), ang.cos()], -1)
    sin = torch.cat([ang.sin(), ang.sin()], -1)
    pos = torch.arange(tn)
    allowed = pos[None, :] <= pos[:, None]
    if win:
        allowed &= pos[None, :] > pos[:, None] - win

    def rot(t):
        h2 = t.shape[-1] // 2
        return torch.cat([-t[..., h2:], t[..., :h2]], -1)

    def rms(t, w):
        return w * (t / torch.sqrt((t * t).mean(-1, keepdim=True) + eps))

    def lin(t, name):
        y = t @ sd[name + ".weight"].T
        if name + ".bias" in sd:
            y = y + sd[name + ".bias"]
        if adapter is not None:
            k = "base_model.model." + name
            if k + ".lora_A.weight" in adapter:
                a = adapter[k + ".lora_A.weight"].double()
                b = adapter[k + ".lora_B.weight"].double()
                y = y + scale * (t @ a.T) @ b.T
        return y

    x = sd["model.embed_tokens.weight"][ids]
    if hidden is not None:
        hidden.append(x)
    for li in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{li}."
        a = rms(x, sd[p + "input_layernorm.weight"])
        q = lin(a, p + "self_attn.q_proj").view(bn, tn, nh, hd).transpose(1, 2)
        k = lin(a, p + "self_attn.k_proj").view(bn, tn, nkv, hd).transpose(1, 2)
        v = lin(a, p + "self_attn.v_proj").view(bn, tn, nkv, hd).transpose(1, 2)
        q = q * cos + rot(q) * sin
        k = k * cos + rot(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=1)  # query head h reads kv head h // (nh / nkv)
        v = v.repeat_interleave(nh // nkv, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~allowed, float("-inf"))
        o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(bn, tn, nh * hd)
        x = x + lin(o, p + "self_attn.o_proj")
        m = rms(x, sd[p + "post_attention_layernorm.weight"])
        x = x + lin(F.silu(lin(m, p + "mlp.gate_proj")) * lin(m, p + "mlp.up_proj"), p + "mlp.down_proj")
        if hidden is not None:
            hidden.append(x)
    x = rms(x, sd["model.norm.weight"])
    if hidden is not None:
        hidden[-1] = x
    head = sd.get("lm_head.weight", sd["model.embed_tokens.weight"])
    return x @ head.T


def ref_loss(logits, labels):
    lg = logits[:, :-1].reshape(-1, logits.shape[-1])
    lb = labels[:, 1:].reshape(-1)
    return F.cross_entropy(lg, lb, ignore_index=-100, reduction="mean")


def lora_key(n):
    return n.replace(".default.", ".").replace(".default", "")


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def build_models():
    from peft import LoraConfig, PeftModel, get_peft_model
    specs = model_specs()
    out = {}
    for name, (ccls, mcls, seed, kw) in specs.items():
        log(f"== model {name}")
        rep = {}
        REPORT[name] = rep
        try:
            cfg = make_config(ccls, kw)
            torch.manual_seed(seed)
            model = mcls(cfg).float()
            init_weights(model, seed)
            model.eval()
            # the rope theta the model really uses, from its inv_freq
            try:
                inv = model.model.rotary_emb.inv_freq.double()
                hd = inv.numel() * 2
                rep["rope_theta_in_use"] = float(inv[1] ** (-hd / 2.0))
            except Exception:  # noqa: BLE001
                err(f"{name} inv_freq")
            folder = os.path.join(OUT, name)
            if name == "llama_untied":
                try:
                    model.save_pretrained(folder, max_shard_size="150KB")
                except TypeError:
                    model.save_pretrained(folder)
            elif name == "mistral":  # a copy: .half() would also round the rotary inv_freq buffer
                copy.deepcopy(model).half().save_pretrained(folder)
            else:
                model.save_pretrained(folder)
            rep["files"] = sorted(os.listdir(folder))
            with open(os.path.join(folder, "config.json")) as f:
                cj = json.load(f)
            rep["config_json"] = cj
            g = torch.Generator().manual_seed(seed + 100)
            ids = torch.randint(0, V, (B, T), generator=g)
            labels = ids.clone()
            labels[1, :3] = -100
            with torch.no_grad():
                o = model(input_ids=ids, labels=labels, output_hidden_states=True)
            ref = {"input_ids": ids.to(torch.int32), "labels": labels.to(torch.int32),
                   "logits": o.logits.float(), "loss": o.loss.float().reshape(1)}
            for k_, hs in enumerate(o.hidden_states):
                ref[f"hidden_states.{k_}"] = hs.float()
            rep["loss"] = o.loss.item()
            rep["logits_std"] = o.logits.std().item()
            # independent forward from the saved file, as docs/llama.md describes it
            sd = read_folder_state(folder)
            rep["tensor_names"] = sorted(sd.keys())
            rep["tensor_dtypes"] = sorted({str(v.dtype) for v in sd.values()})
            hid = []
            lg = ref_forward(sd, cj, ids, hidden=hid)
            rep["independent_forward_logits_max_rel_diff"] = rel(o.logits, lg)
            rep["independent_forward_loss"] = ref_loss(lg, labels).item()
            rep["independent_forward_hidden_max_rel_diff"] = [rel(o.hidden_states[k_], hid[k_]) for k_ in range(len(hid))]
            # greedy continuation with the KV cache
            try:
                gen = model.generate(ids[:1, :4], max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                     pad_token_id=0)
                rep["greedy_prompt"] = ids[0, :4].tolist()
                rep["greedy_ids"] = gen[0].tolist()
            except Exception:  # noqa: BLE001
                err(f"{name} generate")
            # method full: gradients of every parameter (llama_tied only, to keep the size down)
            if name == "llama_tied":
                model.zero_grad()
                for p in model.parameters():
                    p.requires_grad_(True)
                of = model(input_ids=ids, labels=labels)
                of.loss.backward()
                save_st(os.path.join(OUT, f"{name}_full_grads.safetensors"),
                        {n: p.grad.float() for n, p in model.named_parameters()})
                model.zero_grad()
            # reloads: the bf16 copy of qwen2, the F16 mistral, the sharded llama
            if name == "qwen2":
                bf = os.path.join(OUT, "qwen2_bf16")
                copy.deepcopy(model).to(torch.bfloat16).save_pretrained(bf)
                rep["bf16_files"] = sorted(os.listdir(bf))
            reload_dirs = [folder] + ([os.path.join(OUT, "qwen2_bf16")] if name == "qwen2" else [])
            for d in reload_dirs:
                try:
                    m2 = from_pretrained(mcls, d).eval()
                    with torch.no_grad():
                        l2 = m2(input_ids=ids).logits
                    rep[f"reload_{os.path.basename(d)}_max_abs_diff"] = (l2 - o.logits).abs().max().item()
                except Exception:  # noqa: BLE001
                    err(f"{name} reload {d}")
            # LoRA through PEFT
            lcfg = LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=list(TARGETS), lora_dropout=0.0,
                              bias="none", init_lora_weights=False, task_type="CAUSAL_LM")
            pm = get_peft_model(model, lcfg)
            gl = torch.Generator().manual_seed(seed + 200)
            with torch.no_grad():
                for n, p in pm.named_parameters():
                    if "lora_A" in n:
                        p.copy_(torch.randn(p.shape, generator=gl) * 0.1)
                    elif "lora_B" in n:
                        p.copy_(torch.randn(p.shape, generator=gl) * 0.05)
            pm.eval()
            pm.zero_grad()
            op = pm(input_ids=ids, labels=labels)
            op.loss.backward()
            grads = {lora_key(n): p.grad.float() for n, p in pm.named_parameters() if p.requires_grad}
            ad_dir = os.path.join(OUT, f"{name}_lora")
            pm.save_pretrained(ad_dir)
            saved = load_st(os.path.join(ad_dir, "adapter_model.safetensors"))
            rep["adapter_keys_match_grads"] = sorted(saved.keys()) == sorted(grads.keys())
            rep["adapter_key_example"] = sorted(saved.keys())[0]
            rep["lora_param_names_example"] = [n for n, p in pm.named_parameters() if p.requires_grad][:2]
            save_st(os.path.join(OUT, f"{name}_lora_grads.safetensors"), grads)
            ref["peft_logits"] = op.logits.detach().float()
            ref["peft_loss"] = op.loss.detach().float().reshape(1)
            rep["peft_loss"] = op.loss.item()
            lgp = ref_forward(sd, cj, ids, adapter=saved)
            rep["independent_forward_peft_logits_max_rel_diff"] = rel(op.logits.detach(), lgp)
            rep["independent_forward_peft_loss"] = ref_loss(lgp, labels).item()
            save_st(os.path.join(OUT, f"{name}_ref.safetensors"), ref)
            # the saved adapter, loaded back by PEFT on a fresh base model, gives the same loss
            try:
                base = from_pretrained(mcls, folder).eval()
                pm2 = PeftModel.from_pretrained(base, ad_dir).eval()
                with torch.no_grad():
                    rep["adapter_reload_loss"] = pm2(input_ids=ids, labels=labels).loss.item()
            except Exception:  # noqa: BLE001
                err(f"{name} adapter reload")
            out[name] = (mcls, folder, ad_dir)
        except Exception:  # noqa: BLE001
            err(f"model {name}")
    return out


def legacy_config():
    try:
        with open(os.path.join(OUT, "llama_tied", "config.json")) as f:
            cj = json.load(f)
        old = {k: v for k, v in cj.items() if k not in ("rope_parameters",)}
        old["rope_theta"] = rope_theta_of(cj)
        old["rope_scaling"] = None
        if "dtype" in old and "torch_dtype" not in old:
            old["torch_dtype"] = old.pop("dtype")
        wjson(os.path.join(OUT, "llama_tied", "config_v4style.json"), old, indent=2)
        from transformers import LlamaConfig
        c2 = LlamaConfig.from_dict(dict(old))
        REPORT["config_v4style_loads_as"] = {"rope_theta": getattr(c2, "rope_theta", None),
                                             "rope_parameters": getattr(c2, "rope_parameters", None)}
    except Exception:  # noqa: BLE001
        err("legacy config")


def config_defaults():
    try:
        from transformers import LlamaConfig, MistralConfig, Qwen2Config
        d = {}
        for c in (LlamaConfig, Qwen2Config, MistralConfig):
            d[c.model_type] = json.loads(c().to_json_string(use_diff=False))
        wjson(os.path.join(OUT, "config_defaults.json"), d)
    except Exception:  # noqa: BLE001
        err("config defaults")


# --------------------------------------------------------------------------------------------
# training trajectory (qlora's batching, as tests/ref/make_train_ref.py does it for GPT-2)
# --------------------------------------------------------------------------------------------

SETTINGS = {"micro_batch_size": 2, "gradient_accumulation_steps": 2, "warmup_steps": 2,
            "weight_decay": 0.01, "adam_beta1": 0.9, "adam_beta2": 0.99, "adam_epsilon": 1e-6,
            "max_grad_norm": 1.0}


def train(named, forward, examples, steps, lr, wd_for):
    params = dict(named)
    groups = [{"params": [p for n, p in params.items() if wd_for(n)], "weight_decay": SETTINGS["weight_decay"]},
              {"params": [p for n, p in params.items() if not wd_for(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(SETTINGS["adam_beta1"], SETTINGS["adam_beta2"]),
                            eps=SETTINGS["adam_epsilon"])
    w = SETTINGS["warmup_steps"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: s / max(1, w) if s < w else max(0.0, (steps - s) / max(1, steps - w)))
    mb, acc = SETTINGS["micro_batch_size"], SETTINGS["gradient_accumulation_steps"]
    n, pos, losses, norms = len(examples), 0, [], []
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
            tgt = torch.full((len(batch), t), -100, dtype=torch.long)
            for b, e in enumerate(batch):
                tok[b, :len(e)] = torch.tensor(e)
                tgt[b, :len(e) - 1] = torch.tensor(e[1:])
            logits = forward(tok)
            ls = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1),
                                 ignore_index=-100, reduction="sum")
            (ls / total).backward()
            step_loss += ls.item()
        norms.append(torch.nn.utils.clip_grad_norm_([p for p in params.values()], SETTINGS["max_grad_norm"]).item())
        opt.step()
        sched.step()
        losses.append(step_loss / total)
    return losses, norms


def training(models):
    if "llama_tied" not in models:
        return
    try:
        from peft import PeftModel
        mcls, folder, ad_dir = models["llama_tied"]
        gen = torch.Generator().manual_seed(5)
        examples = [torch.randint(0, V, (5 + (i * 5) % 11,), generator=gen).tolist() for i in range(10)]
        with open(os.path.join(OUT, "train_data.jsonl"), "w") as f:
            for e in examples:
                f.write(json.dumps({"input_ids": e}) + "\n")
        base = from_pretrained(mcls, folder).eval()
        pm = PeftModel.from_pretrained(base, ad_dir, is_trainable=True).eval()
        named = [(lora_key(n), p) for n, p in pm.named_parameters() if p.requires_grad]
        lora_losses, lora_norms = train(named, lambda tok: pm(input_ids=tok).logits, examples, 12, 5e-3,
                                        lambda n: True)
        full = from_pretrained(mcls, folder).eval()
        named = list(full.named_parameters())
        no_decay = lambda n: not (n.endswith(".bias") or "norm" in n)  # noqa: E731
        full_losses, full_norms = train(named, lambda tok: full(input_ids=tok).logits, examples, 6, 1e-3,
                                        no_decay)
        wjson(os.path.join(OUT, "train_ref.json"), {
            "model": "llama_tied", "adapter": "llama_tied_lora", "data": "train_data.jsonl",
            "settings": SETTINGS, "schedule": "linear with warm-up (LambdaLR, stepped after each update)",
            "lora": {"learning_rate": 5e-3, "steps": 12, "losses": lora_losses, "grad_norms": lora_norms},
            "full": {"learning_rate": 1e-3, "steps": 6, "losses": full_losses, "grad_norms": full_norms,
                     "no_weight_decay": "biases and RMSNorm weights"}})
        log("lora losses", [round(x, 5) for x in lora_losses])
        log("full losses", [round(x, 5) for x in full_losses])
    except Exception:  # noqa: BLE001
        err("training")


# --------------------------------------------------------------------------------------------
# tokenizers
# --------------------------------------------------------------------------------------------

CORPUS = """The weather station on the hill reports every morning at six o'clock.
It's cold today: the low is -3 degrees and the high is 7, with wind from the north.
We've measured 1234 millimetres of rain since 2019, and they'll measure more next year.
She'd rather walk than drive; he's the one who doesn't mind the traffic.
A café on the corner sells naïve paintings and crème brûlée for 4.50 each.
def forecast(city, day):
    return f"{city}: {day} will be sunny, high 21, low 12"
if (rain > 0.5) { umbrella = true; } else { umbrella = false; }
Numbers like 3.14159, 2,718 and 1e-6 appear in the logs, along with 0x1F and 255.
The quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX! the quick brown fox?
Tomorrow: clouds in the morning, sunshine in the afternoon, and a light breeze at night.
Forecast for Oslo, Monday: clear and cold, high -1, low -8. Watch for ice on the roads.
Forecast for Paris, Friday: warm and humid, high 28, low 19. Storms are possible later.
Forecast for Lima, Sunday: grey skies and drizzle along the coast, high 18, low 15.
Fine-tuning a small model on a laptop is slow, but it works if you are patient.
Our reporters wrote 42 stories, read 17 books and answered 365 letters last year.
I'm sure you're right; we're all tired, and it's late.  Let's stop here.
    Indented lines,\ttabs\tand  double  spaces  are kept as they are.
Résumé, façade, jalapeño, Zürich, Ångström and smörgåsbord are loanwords.
"""

QWEN2_RE = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

CASES = [
    "",
    " ",
    "   ",
    "Hello world",
    "Hello world's  end\n",
    "The quick brown fox jumps over the lazy dog.",
    "I'm you're we've they'll she'd it's DON'T I'LL He'S",
    "1234567890",
    "Call 555-0123 or +44 20 7946 0958 before 9:30.",
    "3.14159 and 2,718 and 1e-6 and 0x1F",
    "year2024x and v1.2.3",
    "café naïve résumé Zürich",
    "e\u0301 versus \u00e9, \u2126 versus \u03a9, \ufb01 ligature",
    "日本語のテキスト、中文。",
    "Привет, мир! Ελληνικά.",
    "😀 👍🏽 👨\u200d👩\u200d👧 🇳🇴",
    "a  b   c\t\td\n\n\ne",
    "   leading and trailing   ",
    "line one\r\nline two\r\n\r\n",
    "\ttab\tseparated\t",
    "non\u00a0breaking\u00a0space and\u3000ideographic",
    "\u001c\u001d\u001e\u001f controls and\u0085next line",
    "it\u2019s a \u201cquote\u201d \u2014 dash",
    "def f(x):\n    return x**2  # square\n",
    "if (a != b) { c++; } // done",
    "aaaaaaaaaaaaaaaa ababababab",
    "Hello, World! HELLO? hello...",
    "<|im_start|>user\nWhat is the weather?<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more text",
    "<s>Hello</s> <unk> <s> spaced",
    "a <mask> b   <rs>   c",
    "x<custom>y <custom> z",
    "xyzzy and axyzzyb and (xyzzy)",
    "<tool_call>{\"name\": \"f\"}</tool_call>",
    "<|im_start|><|im_end|><|im_start|>",
]


def byte_level_pair_merges(tok_json):
    ms = tok_json["model"]["merges"]
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in ms]


def string_merges_variant(path_in, path_out):
    with open(path_in, encoding="utf-8") as f:
        j = json.load(f)
    ms = j["model"]["merges"]
    for m in ms:
        a, b = (m if isinstance(m, list) else m.split(" "))
        assert " " not in a and " " not in b, "a merge part holds a space; the string form cannot carry it"
    j["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in ms]
    os.makedirs(os.path.dirname(path_out), exist_ok=True)
    with open(path_out, "w", encoding="utf-8") as f:
        json.dump(j, f, ensure_ascii=False, separators=(",", ":"))  # compact, unlike the pair form


def build_tokenizers():
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    lines = CORPUS.splitlines(keepends=True) * 3
    made = {}

    # SmolLM2: no normalizer, Digits(individual) + ByteLevel(regex), byte-level BPE, specials first
    t = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    tr = trainers.BpeTrainer(vocab_size=512, min_frequency=2, show_progress=False,
                             special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(lines, trainer=tr)
    t.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True),
                          AddedToken("<rs>", lstrip=False, rstrip=True, normalized=False, special=True)])
    t.add_tokens([AddedToken("<custom>", normalized=True, special=False),
                  AddedToken("xyzzy", single_word=True, normalized=False, special=False)])
    made["smollm2"] = (t, {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>",
                           "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                           "add_prefix_space": False, "clean_up_tokenization_spaces": False,
                           "model_max_length": 8192})

    # Qwen2: NFC, Split(regex, isolated) + ByteLevel(use_regex=false), specials appended after the BPE vocab
    t = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    t.normalizer = normalizers.NFC()
    t.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_RE), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    t.decoder = decoders.ByteLevel()
    t.post_processor = processors.ByteLevel(trim_offsets=False)
    tr = trainers.BpeTrainer(vocab_size=500, min_frequency=2, show_progress=False, special_tokens=[],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    t.train_from_iterator(lines, trainer=tr)
    t.add_special_tokens([AddedToken(s, normalized=False, special=True)
                          for s in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")])
    t.add_tokens([AddedToken("<tool_call>", normalized=False, special=False),
                  AddedToken("</tool_call>", normalized=False, special=False)])
    made["qwen2"] = (t, {"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|endoftext|>",
                         "pad_token": "<|endoftext|>", "unk_token": None, "add_prefix_space": False,
                         "clean_up_tokenization_spaces": False, "errors": "replace",
                         "split_special_tokens": False, "model_max_length": 131072})

    # Llama-2 / TinyLlama: SentencePiece-style BPE over "▁"-joined text, byte fallback, BOS template
    t0 = Tokenizer(models.BPE())
    t0.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True)
    tr = trainers.BpeTrainer(vocab_size=300, min_frequency=2, show_progress=False, special_tokens=[])
    t0.train_from_iterator(lines, trainer=tr)
    j0 = json.loads(t0.to_str())
    trained = sorted(j0["model"]["vocab"].items(), key=lambda kv: kv[1])
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    for tokstr, _ in trained:
        if tokstr not in vocab:
            vocab[tokstr] = len(vocab)
    merges = byte_level_pair_merges(j0)

    def llama_like(metaspace):
        tl = Tokenizer(models.BPE(vocab=dict(vocab), merges=list(merges), dropout=None, unk_token="<unk>",
                                  fuse_unk=True, byte_fallback=True))
        if metaspace:  # what transformers' converter writes with legacy=False
            tl.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
            tl.decoder = decoders.Sequence([decoders.Metaspace(replacement="\u2581", prepend_scheme="first",
                                                               split=False),
                                            decoders.ByteFallback(), decoders.Fuse()])
        else:  # the Llama-2 / TinyLlama tokenizer.json layout
            tl.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
            tl.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(),
                                            decoders.Fuse(), decoders.Strip(content=" ", left=1, right=0)])
        tl.post_processor = processors.TemplateProcessing(single="<s>:0 $A:0", pair="<s>:0 $A:0 <s>:1 $B:1",
                                                          special_tokens=[("<s>", 1)])
        tl.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in ("<unk>", "<s>", "</s>")])
        tl.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in ("<|im_start|>", "<|im_end|>")])
        return tl

    llama_cfg = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                 "pad_token": "</s>", "add_bos_token": True, "add_eos_token": False, "legacy": False,
                 "clean_up_tokenization_spaces": False, "model_max_length": 2048, "padding_side": "right",
                 "sp_model_kwargs": {}}
    made["llama2"] = (llama_like(False), llama_cfg)
    made["llama2_metaspace"] = (llama_like(True), llama_cfg)
    return made


def encode_all(tok, add_special):
    res = []
    for s in CASES:
        e = tok.encode(s, add_special_tokens=add_special)
        res.append(e)
    return res


def tokenizers_fixtures():
    from tokenizers import Tokenizer
    report = {"cases": CASES, "tokenizers": {}}
    try:
        made = build_tokenizers()
    except Exception:  # noqa: BLE001
        err("build tokenizers")
        return
    for name, (tok, tcfg) in made.items():
        try:
            d = os.path.join(OUT, f"tok_{name}")
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, "tokenizer.json")
            tok.save(path, pretty=True)
            wjson(os.path.join(d, "tokenizer_config.json"), tcfg, indent=2)
            tok = Tokenizer.from_file(path)
            entry = {"folder": f"tok_{name}", "vocab_size_with_added": tok.get_vocab_size(with_added_tokens=True),
                     "vocab_size_model": tok.get_vocab_size(with_added_tokens=False), "cases": []}
            plain = encode_all(tok, False)
            withsp = encode_all(tok, True)
            for s, e, e2 in zip(CASES, plain, withsp):
                entry["cases"].append({
                    "text": s, "ids": e.ids, "tokens": e.tokens,
                    "ids_with_special_tokens": e2.ids,
                    "decoded": tok.decode(e.ids, skip_special_tokens=False),
                    "decoded_skip_special": tok.decode(e.ids, skip_special_tokens=True),
                    "decoded_with_special_skip": tok.decode(e2.ids, skip_special_tokens=True)})
            # partial UTF-8: decode every prefix of an emoji string's ids
            emo = tok.encode("😀 👍🏽 中", add_special_tokens=False).ids
            entry["decode_prefixes"] = {"ids": emo, "decoded": [tok.decode(emo[:k], skip_special_tokens=False)
                                                                for k in range(1, len(emo) + 1)]}
            if name != "llama2_metaspace":
                sp = os.path.join(OUT, f"tok_{name}_strmerges", "tokenizer.json")
                string_merges_variant(path, sp)
                shutil.copy(os.path.join(d, "tokenizer_config.json"), os.path.dirname(sp))
                t2 = Tokenizer.from_file(sp)
                same = all(a.ids == b.ids for a, b in zip(plain, encode_all(t2, False)))
                entry["strmerges_folder"] = f"tok_{name}_strmerges"
                entry["strmerges_ids_identical"] = same
            auto = {}
            try:
                from transformers import AutoTokenizer
                at = AutoTokenizer.from_pretrained(d)
                auto["class"] = type(at).__name__
                bj = json.loads(at.backend_tokenizer.to_str())
                auto["backend_components"] = {k: (bj.get(k) or {}).get("type") if isinstance(bj.get(k), dict) else bj.get(k)
                                              for k in ("normalizer", "pre_tokenizer", "decoder", "post_processor")}
                auto["backend_same_as_tokenizer_json"] = {
                    k: bj.get(k) == json.loads(tok.to_str()).get(k)
                    for k in ("normalizer", "pre_tokenizer", "decoder", "post_processor", "added_tokens")}
                auto["backend_model_flags"] = {k: bj["model"].get(k) for k in
                                               ("type", "byte_fallback", "fuse_unk", "ignore_merges", "unk_token")}
                diffs = 0
                for c, e2 in zip(entry["cases"], withsp):
                    ai = at(c["text"])["input_ids"]
                    c["auto_ids"] = ai
                    c["auto_decoded"] = at.decode(ai, skip_special_tokens=False)
                    if ai != e2.ids:
                        diffs += 1
                auto["cases_where_auto_ids_differ_from_tokenizers_with_special"] = diffs
            except Exception:  # noqa: BLE001
                auto["error"] = traceback.format_exc()[-2000:]
            try:
                from transformers import PreTrainedTokenizerFast
                ft = PreTrainedTokenizerFast(tokenizer_file=path)
                auto["fast_from_file_diffs"] = sum(ft(c["text"])["input_ids"] != e2.ids
                                                   for c, e2 in zip(entry["cases"], withsp))
            except Exception:  # noqa: BLE001
                auto["fast_from_file_error"] = traceback.format_exc()[-1000:]
            entry["autotokenizer"] = auto
            report["tokenizers"][name] = entry
            log(f"tokenizer {name}: {entry['vocab_size_with_added']} tokens, auto: {auto.get('class')} "
                f"diffs {auto.get('cases_where_auto_ids_differ_from_tokenizers_with_special')}")
        except Exception:  # noqa: BLE001
            err(f"tokenizer {name}")
    wjson(os.path.join(OUT, "tokenizer_cases.json"), report)


# --------------------------------------------------------------------------------------------

def notes():
    """Source excerpts of the installed libraries, for the person writing docs/llama.md (not committed)."""
    if not NOTES:
        return
    parts = []

    def add(label, obj):
        try:
            parts.append(f"\n##### {label}\n" + inspect.getsource(obj))
        except Exception as e:  # noqa: BLE001
            parts.append(f"\n##### {label}: {e}\n")
    try:
        import transformers.models.llama.modeling_llama as ml
        import transformers.models.mistral.modeling_mistral as mm
        import transformers.models.qwen2.modeling_qwen2 as mq
        for n in ("LlamaRMSNorm", "LlamaRotaryEmbedding", "rotate_half", "apply_rotary_pos_emb", "repeat_kv",
                  "eager_attention_forward", "LlamaAttention", "LlamaMLP", "LlamaDecoderLayer", "LlamaModel",
                  "LlamaForCausalLM"):
            add("llama." + n, getattr(ml, n))
        for n in ("Qwen2Attention", "Qwen2RMSNorm", "Qwen2Model"):
            add("qwen2." + n, getattr(mq, n))
        for n in ("MistralAttention", "MistralModel"):
            add("mistral." + n, getattr(mm, n))
        import transformers.modeling_rope_utils as ru
        add("modeling_rope_utils", ru)
        from transformers import LlamaConfig, MistralConfig, Qwen2Config
        for c in (LlamaConfig, Qwen2Config, MistralConfig):
            add(c.__name__, c)
        import transformers.loss.loss_utils as lu
        add("loss_utils", lu)
        import transformers.masking_utils as mu
        add("masking_utils.sliding", mu.sliding_window_overlay)
    except Exception:  # noqa: BLE001
        parts.append(traceback.format_exc())
    for mod, names in (("transformers.models.llama.tokenization_llama", ("LlamaTokenizer",)),
                       ("transformers.models.gpt2.tokenization_gpt2", ("GPT2Tokenizer",)),
                       ("transformers.models.qwen2.tokenization_qwen2", ("Qwen2Tokenizer",)),
                       ("transformers.tokenization_utils_tokenizers", ("TokenizersBackend",))):
        try:
            m = __import__(mod, fromlist=list(names))
            for n in names:
                add(f"{mod}.{n}", getattr(m, n))
        except Exception as e:  # noqa: BLE001
            parts.append(f"\n##### {mod}: {e}\n")
    try:
        import peft.tuners.lora.layer as pl
        add("peft.lora.Linear.forward", pl.Linear.forward)
        add("peft.lora.LoraLayer.reset_lora_parameters", pl.LoraLayer.reset_lora_parameters)
    except Exception:  # noqa: BLE001
        parts.append(traceback.format_exc())
    with open(NOTES, "w", encoding="utf-8") as f:
        f.write("".join(parts))


def versions():
    import importlib.metadata as md
    v = {"python": platform.python_version(), "date": datetime.date.today().isoformat()}
    for p in ("torch", "transformers", "tokenizers", "peft", "safetensors", "numpy"):
        try:
            v[p] = md.version(p)
        except Exception:  # noqa: BLE001
            v[p] = None
    with open(os.path.abspath(__file__), "rb") as f:
        v["script_sha256"] = hashlib.sha256(f.read()).hexdigest()
    v["command"] = "python3 tests/make_llama_fixtures.py OUTDIR"
    return v


def main():
    log("versions", versions())
    config_defaults()
    tokenizers_fixtures()
    models = build_models()
    legacy_config()
    training(models)
    wjson(os.path.join(OUT, "VERSIONS.json"), versions(), indent=2)
    wjson(os.path.join(OUT, "ref.json"), REPORT)
    notes()
    log("errors:", len(REPORT["errors"]))


if __name__ == "__main__":
    main()
