"""Fresh gradients against grad_out: time and minor page faults per call.

    python bench/fresh_gradients.py [--threads 2] [--rounds 7] [--calls 10]

Variants, interleaved round by round (one round: `calls` calls of each variant):
- grad_out: into one reused, already-touched buffer;
- grad: `loss, g = f(..., return_grad=True); del g` (the training loop: the previous
  gradient is dropped before the next call);
- keep: the same without `del g` (the previous gradient is alive during the call).
Prints the median time per call and the mean minor page faults per call (getrusage).
"""
import argparse
import resource
import time

import numpy as np

import fastloss


def cases():
    rng = np.random.default_rng(0)

    def f32(*shape):
        return rng.standard_normal(shape, dtype=np.float32)

    e1, e2 = f32(2048, 4096), f32(4096, 8192)
    a, b = f32(1 << 24), f32(1 << 24)
    s, t = f32(1 << 21), f32(1 << 21)
    ce = f32(2048, 32000)
    lab = rng.integers(0, 32000, 2048)
    return [
        ("entropy (2048, 4096)", lambda **k: fastloss.entropy(e1, **k), e1),
        ("entropy (4096, 8192)", lambda **k: fastloss.entropy(e2, **k), e2),
        ("mse_loss 2M", lambda **k: fastloss.mse_loss(s, t, **k), s),
        ("mse_loss 16M", lambda **k: fastloss.mse_loss(a, b, **k), a),
        ("log_cosh_loss 16M", lambda **k: fastloss.log_cosh_loss(a, b, **k), a),
        ("cross_entropy (2048, 32000)", lambda **k: fastloss.cross_entropy(ce, lab, **k), ce),
    ]


def minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def run(variant, f, x, calls):
    """Per-call times and the mean minor faults per call of `calls` calls (after one
    untimed call)."""
    times = []
    f(return_grad=True)
    if variant == "grad_out":
        out = np.empty_like(x)
        out.fill(0)
        f0 = minflt()
        for _ in range(calls):
            t0 = time.perf_counter()
            f(return_grad=True, grad_out=out)
            times.append(time.perf_counter() - t0)
    elif variant == "grad":
        f0 = minflt()
        for _ in range(calls):
            t0 = time.perf_counter()
            loss, g = f(return_grad=True)
            del g
            times.append(time.perf_counter() - t0)
    else:
        g = None
        f0 = minflt()
        for _ in range(calls):
            t0 = time.perf_counter()
            loss, g = f(return_grad=True)
            times.append(time.perf_counter() - t0)
        del g
    return times, (minflt() - f0) / calls


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--only", default="")
    args = p.parse_args()
    variants = ("grad_out", "grad", "keep")
    with fastloss.threads(args.threads):
        for name, f, x in cases():
            if args.only and args.only not in name:
                continue
            f(return_grad=True)
            times = {v: [] for v in variants}
            faults = {v: [] for v in variants}
            for _ in range(args.rounds):
                for v in variants:
                    t, fl = run(v, f, x, args.calls)
                    times[v] += t
                    faults[v].append(fl)
            med = {v: 1e3 * float(np.median(times[v])) for v in variants}
            line = "  ".join(f"{v} {med[v]:7.2f} ms {np.mean(faults[v]):7.0f} flt"
                             for v in variants)
            print(f"{name:28s} {x.nbytes / 2**20:5.0f} MiB  {line}  "
                  f"grad/grad_out {med['grad'] / med['grad_out']:.2f}x "
                  f"keep/grad_out {med['keep'] / med['grad_out']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
