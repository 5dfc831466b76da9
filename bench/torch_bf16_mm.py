#!/usr/bin/env python3
"""GFLOP/s of PyTorch's CPU matrix products on GPT-2 small's frozen-weight step shapes, the
same shapes and output format as bench/bench_bf16.c, so one run shows "what the library
gives" (PyTorch sends bf16 products to oneDNN, which uses AMX where the CPU has it):

  torch-bf16           torch.mm on bf16 tensors (inputs already bf16; output bf16)
  torch-autocast-bf16  torch.mm on fp32 tensors under torch.autocast("cpu", bfloat16):
                       the rounding of both inputs to bf16 is timed, as in qlora's bgemm
                       and in a --bf16 training step
  torch-fp32           torch.mm on fp32 tensors (MKL or OpenBLAS, as this torch was built)

err = max |C - C_fp32| / max |C_fp32|. Best of --reps calls after one warm-up, with
torch.inference_mode(). Set ONEDNN_VERBOSE=1 to see which oneDNN kernel (e.g. avx512_core_amx)
runs each product.
Usage: torch_bf16_mm.py [--reps N] [--quick] [--engines a,b] THREADS...   (default 1 2)
"""
import argparse
import re
import time

import torch

SHAPES = [  # (what, tb, M, N, K, calls per GPT-2 small step, in --quick)
    ("c_attn fwd 1024x2304x768 (nt)", True, 1024, 2304, 768, 12, False),
    ("attn c_proj fwd 1024x768x768 (nt)", True, 1024, 768, 768, 12, False),
    ("c_fc fwd 1024x3072x768 (nt)", True, 1024, 3072, 768, 12, True),
    ("mlp c_proj fwd 1024x768x3072 (nt)", True, 1024, 768, 3072, 12, False),
    ("c_attn dx 1024x768x2304 (nn)", False, 1024, 768, 2304, 11, False),
    ("attn c_proj dx 1024x768x768 (nn)", False, 1024, 768, 768, 12, False),
    ("c_fc dx 1024x768x3072 (nn)", False, 1024, 768, 3072, 12, False),
    ("mlp c_proj dx 1024x3072x768 (nn)", False, 1024, 3072, 768, 12, False),
    ("logits 512x50257x768 (nt)", True, 512, 50257, 768, 2, True),
    ("logits dx 512x768x50257 (nn)", False, 512, 768, 50257, 2, True),
]
ENGINES = ["torch-fp32", "torch-bf16", "torch-autocast-bf16"]


def describe():
    cfg = torch.__config__.show()
    dnn = re.search(r"(oneDNN|MKL-DNN)[^\n]*?(v[0-9][0-9.]*)", cfg)
    blas = re.search(r"BLAS_INFO=([^,\s]*)", cfg)
    cap = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") and \
        hasattr(torch.backends.cpu, "get_cpu_capability") else "?"
    print(f"torch_bf16_mm: torch {torch.__version__}, mkldnn {'on' if torch.backends.mkldnn.is_available() else 'off'}"
          f" ({dnn.group(1) + ' ' + dnn.group(2) if dnn else 'version ?'}), BLAS {blas.group(1) if blas else '?'}, "
          f"CPU capability {cap}")


def run(engine, tb, a, b, ab, bb, out, out_b):
    if engine == "torch-fp32":
        return torch.mm(a, b.t() if tb else b, out=out)
    if engine == "torch-bf16":
        return torch.mm(ab, bb.t() if tb else bb, out=out_b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return torch.mm(a, b.t() if tb else b)


def best_seconds(reps, fn):
    best = float("inf")
    for rep in range(reps + 1):
        t0 = time.perf_counter()
        c = fn()
        dt = time.perf_counter() - t0
        if rep and dt < best:
            best = dt
    return best, c


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="only the c_fc forward and the logits shapes")
    ap.add_argument("--engines", default=",".join(ENGINES))
    a = ap.parse_args()
    engines = [e for e in ENGINES if e in a.engines.split(",")]
    describe()
    g = torch.Generator().manual_seed(0)
    print(f"{'product':<36} {'engine':<24} {'threads':>7} {'GFLOP/s':>10} {'ms':>10} {'err':>8}")
    with torch.inference_mode():
        for t in a.threads:
            torch.set_num_threads(t)
            step_s, step_flops = {e: 0.0 for e in engines}, 0.0
            for what, tb, M, N, K, per_step, quick in SHAPES:
                if a.quick and not quick:
                    continue
                A = torch.rand(M, K, generator=g) * 2 - 1
                B = torch.rand(N, K, generator=g) * 2 - 1 if tb else torch.rand(K, N, generator=g) * 2 - 1
                Ab, Bb = A.to(torch.bfloat16), B.to(torch.bfloat16)
                out, out_b = torch.empty(M, N), torch.empty(M, N, dtype=torch.bfloat16)
                flops = 2.0 * M * N * K
                step_flops += flops * per_step
                ref = torch.mm(A.double(), (B.t() if tb else B).double()).float() if "torch-fp32" not in engines \
                    else None
                for e in engines:
                    sec, c = best_seconds(a.reps, lambda: run(e, tb, A, B, Ab, Bb, out, out_b))
                    if e == "torch-fp32":
                        ref = c.clone()
                    err = ((c.float() - ref).abs().max() / ref.abs().max()).item()
                    step_s[e] += sec * per_step
                    print(f"{what:<36} {e:<24} {t:>7} {flops / sec / 1e9:>10.1f} {1e3 * sec:>10.3f} {err:>8.1e}",
                          flush=True)
                del A, B, Ab, Bb, out, out_b, ref
            mix = "step mix (quick subset)" if a.quick else "step mix (GPT-2 small, 1 step)"
            for e in engines:
                if step_s[e] > 0:
                    print(f"{mix:<36} {e:<24} {t:>7} {step_flops / step_s[e] / 1e9:>10.1f} {1e3 * step_s[e]:>10.3f}")


if __name__ == "__main__":
    main()
