#!/usr/bin/env python3
"""PyTorch's fp32 matrix products (MKL on the lent machine) on the shapes bench/bench_sgemm.c
times, for comparing qlora's own sgemm with the library PyTorch users run, in the same call:
    python3 bench/torch_mm.py THREADS
Prints one line per shape: GFLOP/s of the best of 5 timed products after one warm-up.
"""
import sys
import time

import torch

SHAPES = [  # name, M, N, K, B stored transposed ("nt")
    ("c_fc forward 1024x3072x768 (nt)", 1024, 3072, 768, True),
    ("c_fc input grad 1024x768x3072 (nn)", 1024, 768, 3072, False),
    ("logits 1024x50257x768 (nt)", 1024, 50257, 768, True),
    ("logits 512x50257x768 (nt)", 512, 50257, 768, True),
    ("logits dx 1024x768x50257 (nn)", 1024, 768, 50257, False),
    ("logits dx 512x768x50257 (nn)", 512, 768, 50257, False),
    ("c_attn forward 1024x2304x768 (nt)", 1024, 2304, 768, True),
    ("attn proj 1024x768x768 (nn)", 1024, 768, 768, False),
]


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    torch.set_num_threads(threads)
    for name, m, n, k, tb in SHAPES:
        a = torch.randn(m, k)
        b = torch.randn(n, k) if tb else torch.randn(k, n)
        best = float("inf")
        for rep in range(6):
            t0 = time.perf_counter()
            _ = a @ (b.T if tb else b)
            dt = time.perf_counter() - t0
            if rep:
                best = min(best, dt)
        print(f"torch {name:38s} {threads:3d} {2 * m * n * k / best / 1e9:8.1f} GF/s")


if __name__ == "__main__":
    main()
