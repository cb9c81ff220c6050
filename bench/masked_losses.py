"""The cost of where= masks: each loss with and without a mask that drops 10% of the rows,
calls interleaved (a busy neighbour slows both alike), medians.

Run from the checkout's root with PYTHONPATH=. (or with fastloss installed):
    python bench/masked_losses.py [--repeats 7]
"""
import argparse
import statistics
import time

import numpy as np

import fastloss


def cases(rng):
    x = rng.standard_normal((2048, 32000), dtype=np.float32)
    q = rng.standard_normal((2048, 32000), dtype=np.float32)
    y = rng.integers(0, 32000, 2048)
    keep = rng.random(2048) > 0.1
    e = rng.standard_normal((4096, 4096), dtype=np.float32)
    t = rng.standard_normal((4096, 4096), dtype=np.float32)
    rows = np.repeat(keep, 2)[:, None]              # (4096, 1): a mask per row of elements
    g1, g2, ge = np.empty_like(x), np.empty_like(q), np.empty_like(e)
    ce, kl, mse = fastloss.cross_entropy, fastloss.kl_divergence, fastloss.mse_loss
    return {
        "cross_entropy (2048, 32000) labels, grad_out":
            (lambda **w: ce(x, y, return_grad=True, grad_out=g1, **w), keep),
        "kl_divergence (2048, 32000), loss": (lambda **w: kl(x, q, **w), keep),
        "kl_divergence (2048, 32000), grad_out":
            (lambda **w: kl(x, q, return_grad=True, grad_out=(g1, g2), **w), keep),
        "mse_loss (4096, 4096) per-row mask, loss": (lambda **w: mse(e, t, **w), rows),
        "mse_loss (4096, 4096) per-row mask, grad_out":
            (lambda **w: mse(e, t, return_grad=True, grad_out=ge, **w), rows),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    print(f"fastloss {fastloss.__version__}, {fastloss.get_num_threads()} threads, float32")
    print("| call | no mask | where= | ratio |\n|---|---:|---:|---:|")
    for name, (fn, where) in cases(np.random.default_rng(0)).items():
        fn(), fn(where=where)
        plain, masked = [], []
        for _ in range(args.repeats):
            for out, kw in ((plain, {}), (masked, {"where": where})):
                t0 = time.perf_counter()
                fn(**kw)
                out.append(time.perf_counter() - t0)
        a, b = statistics.median(plain), statistics.median(masked)
        print(f"| {name} | {a * 1e3:.1f} ms | {b * 1e3:.1f} ms | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
