#!/usr/bin/env python3
"""PyTorch baseline for `make bench-compare`: what a user would otherwise run for LoRA on a
CPU. GPT-2 of a given shape (random weights) with its linears frozen in fp32, LoRA on every
linear (r, alpha = 2r, no dropout, B = 0, A kaiming-uniform as PEFT), AdamW on the LoRA
parameters only, one warm-up step then N timed steps on random tokens. --bf16 runs the
forward + loss under torch.autocast("cpu", dtype=torch.bfloat16) (fp32 weights rounded per
product, as a bf16 training run on a CPU does).
Needs only torch (Debian's python3-torch); prints the same last line as `qlora bench`:
tokens_per_s=<float> ms_per_step=<float> peak_rss_mib=<float>
"""
import argparse
import contextlib
import math
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {"gpt2": (12, 768, 12, 1024, 50257), "gpt2-medium": (24, 1024, 16, 1024, 50257),
           "tiny": (4, 128, 4, 256, 256)}


class LoraLinear(nn.Module):
    def __init__(self, nin, nout, r):
        super().__init__()
        self.base = nn.Linear(nin, nout)
        self.base.weight.requires_grad_(False)
        self.base.bias.requires_grad_(False)
        self.A = nn.Parameter(torch.empty(r, nin))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        self.B = nn.Parameter(torch.zeros(nout, r))
        self.s = 2.0

    def forward(self, x):
        return self.base(x) + self.s * F.linear(F.linear(x, self.A), self.B)


class Block(nn.Module):
    def __init__(self, c, nh, r):
        super().__init__()
        self.nh = nh
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.attn, self.proj = LoraLinear(c, 3 * c, r), LoraLinear(c, c, r)
        self.fc, self.mproj = LoraLinear(c, 4 * c, r), LoraLinear(4 * c, c, r)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.attn(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.nh, c // self.nh).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True) if hasattr(F, "scaled_dot_product_attention") \
            else torch.softmax((q @ k.transpose(-1, -2)) / math.sqrt(c // self.nh) +
                               torch.full((t, t), float("-inf")).triu(1), dim=-1) @ v
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mproj(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, L, C, NH, P, V, r):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(P, C)
        self.blocks = nn.ModuleList([Block(C, NH, r) for _ in range(L)])
        self.lnf = nn.LayerNorm(C)
        for p in [self.wte.weight, self.wpe.weight, *self.lnf.parameters()]:
            p.requires_grad_(False)
        for blk in self.blocks:
            for p in [*blk.ln1.parameters(), *blk.ln2.parameters()]:
                p.requires_grad_(False)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for blk in self.blocks:
            x = blk(x)
        logits = self.lnf(x) @ self.wte.weight.T
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def train_step(model, params, opt, idx, tgt, amp):
    """One AdamW step on the LoRA parameters, forward and loss under amp(), gradients clipped to 1."""
    opt.zero_grad(set_to_none=True)
    with amp():
        loss = model(idx, tgt)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def profile_step(model, params, opt, idx, tgt, amp):
    """One training step under torch.profiler; prints the 25 slowest operators by self time,
    grouped by input shapes (matrix products are aten::mm / addmm / bmm)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        train_step(model, params, opt, idx, tgt, amp)
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=25,
                                                           max_name_column_width=40, max_shapes_column_width=70))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--lora-r", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--bf16", action="store_true", help="forward + loss under torch.autocast(cpu, bfloat16)")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed steps, one more step under torch.profiler: its operators by input "
                         "shape, slowest first (ms for that step)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    L, C, NH, P, V = PRESETS[a.preset]
    model = GPT(L, C, NH, P, V, a.lora_r)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    idx = torch.randint(0, V, (a.batch, a.seq))
    tgt = torch.roll(idx, -1, dims=1)
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.bf16 else contextlib.nullcontext
    times = []
    for s in range(a.steps + 1):
        t0 = time.perf_counter()
        train_step(model, params, opt, idx, tgt, amp)
        if s:
            times.append(time.perf_counter() - t0)
    if a.profile:
        profile_step(model, params, opt, idx, tgt, amp)
    times.sort()
    med = times[len(times) // 2]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.preset} LoRA r={a.lora_r} "
          f"({sum(p.numel() for p in params)} trainable), batch {a.batch} x {a.seq}, "
          f"bf16 autocast {'on' if a.bf16 else 'off'}")
    print(f"tokens_per_s={a.batch * a.seq / med:.1f} ms_per_step={1e3 * med:.2f} peak_rss_mib={rss:.1f}")


if __name__ == "__main__":
    main()
