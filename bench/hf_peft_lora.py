#!/usr/bin/env python3
"""The LoRA baseline users actually run on a CPU: Hugging Face transformers' GPT2LMHeadModel
or LlamaForCausalLM / Qwen2ForCausalLM (random weights, built from the config of a preset)
with a peft LoRA adapter (r=8, alpha=16, no dropout) on every linear (GPT-2: c_attn, c_proj,
c_fc with fan_in_fan_out=True as its Conv1D needs; LLaMA family: q/k/v/o/gate/up/down_proj),
model dropouts 0, AdamW (lr 1e-4, no weight decay) on the
trainable parameters only, gradients clipped to norm 1.0 (as the Trainer does by default,
and as qlora and bench/torch_lora.py do). loss = model(input_ids, labels=input_ids).loss on
random tokens (fixed seed). One warm-up step, then --steps timed steps.
--bf16 runs forward + loss under torch.autocast("cpu", dtype=torch.bfloat16) (the base
weights stay fp32 and are rounded per product, as the Trainer's bf16=True does on a CPU).
Needs torch, transformers (4.4x or 5.x) and peft. Prints a first line with the versions,
the per-step times, and the same last line as `qlora bench`:
tokens_per_s=<float> ms_per_step=<float> peak_rss_mib=<float>
"""
import argparse
import contextlib
import resource
import time

import torch

PRESETS = {"gpt2": (12, 768, 12, 1024, 50257), "gpt2-medium": (24, 1024, 16, 1024, 50257),
           "tiny": (4, 128, 4, 256, 256)}
# LLaMA-family shapes as qlora's model_preset has them (docs/llama.md, section 1):
# (model_type, L, C, NH, NKV, I, P, V, tied, rms eps, rope theta)
LLAMA_PRESETS = {"smollm2-135m": ("llama", 30, 576, 9, 3, 1536, 8192, 49152, True, 1e-5, 100000.0),
                 "smollm2-360m": ("llama", 32, 960, 15, 5, 2560, 8192, 49152, True, 1e-5, 100000.0),
                 "qwen2.5-0.5b": ("qwen2", 24, 896, 14, 2, 4864, 32768, 151936, True, 1e-6, 1000000.0),
                 "tinyllama-1.1b": ("llama", 22, 2048, 32, 4, 5632, 2048, 32000, False, 1e-5, 10000.0)}


def build_llama(preset):
    """LlamaForCausalLM / Qwen2ForCausalLM of a LLaMA-family preset, random init, fp32, sdpa
    attention; returns (model, attention implementation, vocab, positions, target modules)."""
    import transformers
    mt, L, C, NH, NKV, I, P, V, tied, eps, theta = LLAMA_PRESETS[preset]
    kw = dict(hidden_size=C, intermediate_size=I, num_hidden_layers=L, num_attention_heads=NH,
              num_key_value_heads=NKV, max_position_embeddings=P, vocab_size=V, tie_word_embeddings=tied,
              rms_norm_eps=eps, rope_theta=theta, use_cache=False, attn_implementation="sdpa")
    cls = transformers.Qwen2Config if mt == "qwen2" else transformers.LlamaConfig
    arch = transformers.Qwen2ForCausalLM if mt == "qwen2" else transformers.LlamaForCausalLM
    model = arch(cls(**kw)).to(torch.float32)
    attn = getattr(model.config, "_attn_implementation", None) or "eager (default)"
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return model, attn, V, P, targets


def build_model(preset):
    """GPT2LMHeadModel of the preset, random init, fp32, dropouts 0, attention "sdpa" when
    this transformers accepts the request; returns (model, attention implementation used)."""
    import transformers
    L, C, NH, P, V = PRESETS[preset]
    kw = dict(n_layer=L, n_embd=C, n_head=NH, n_positions=P, vocab_size=V, resid_pdrop=0.0,
              embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
    model, note = None, ""
    try:
        cfg = transformers.GPT2Config(attn_implementation="sdpa", **kw)
        model = transformers.GPT2LMHeadModel(cfg)
    except Exception as e:  # no sdpa / no such argument / config validation: the library default
        note = f" (sdpa refused: {type(e).__name__}: {str(e).splitlines()[0][:80]})"
        model = transformers.GPT2LMHeadModel(transformers.GPT2Config(**kw))
    attn = getattr(model.config, "_attn_implementation", None) or "eager (default)"
    return model.to(torch.float32), f"{attn}{note}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpt2", choices=sorted(PRESETS) + sorted(LLAMA_PRESETS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="forward + loss under torch.autocast(cpu, bfloat16)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    import peft
    import transformers
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    t_setup = time.perf_counter()
    if a.preset in LLAMA_PRESETS:
        model, attn, V, P, targets = build_llama(a.preset)
        fifo = False
    else:
        model, attn = build_model(a.preset)
        V, P, targets, fifo = PRESETS[a.preset][4], PRESETS[a.preset][3], ["c_attn", "c_proj", "c_fc"], True
    lcfg = peft.LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0, bias="none",
                           target_modules=targets, fan_in_fan_out=fifo, task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, lcfg)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    t_setup = time.perf_counter() - t_setup
    assert a.seq <= P, f"--seq {a.seq} exceeds n_positions {P}"
    idx = torch.randint(0, V, (a.batch, a.seq), generator=torch.Generator().manual_seed(1))
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
    print(f"hf+peft: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
          f"{torch.get_num_threads()} threads, bf16 autocast {'on' if a.bf16 else 'off'}, attention {attn}; "
          f"{a.preset} LoRA r={a.lora_r} ({n_train} trainable), batch {a.batch} x {a.seq}; set up in {t_setup:.1f} s",
          flush=True)
    times = []
    for s in range(a.steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with amp():
            loss = model(input_ids=idx, labels=idx).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        print(f"step {s}{' (warm-up)' if s == 0 else ''}: {1e3 * dt:.1f} ms, loss {loss.item():.4f}", flush=True)
        if s:
            times.append(dt)
    times.sort()
    med = times[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"tokens_per_s={a.batch * a.seq / med:.1f} ms_per_step={1e3 * med:.2f} peak_rss_mib={rss:.1f}")


if __name__ == "__main__":
    main()
