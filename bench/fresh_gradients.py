"""Fresh gradients against grad_out: time and minor page faults per call.

    PYTHONPATH=. python bench/fresh_gradients.py [--threads 2] [--rounds 5] [--filter entropy]

Every benchmark case with a grad_out variant (python -m fastloss bench --list), at its
default shape, float32, fastloss only, plus the larger shapes in EXTRA. Variants,
interleaved round by round:
- grad_out: into one reused, already-touched buffer;
- grad: `loss, g = f(..., return_grad=True); del g` (the training loop: the previous
  gradient is dropped before the next call), with the gradient pool (fastloss/_pool.py);
- keep: the same without `del g` (the previous gradient is alive during the call);
- nopool: grad with fastloss.set_pool_limit(0) (every gradient a plain np.empty).
Prints medians per call and the mean minor page faults per call (getrusage).
PYTHONPATH=. makes the checkout's fastloss the one imported.
"""
import argparse
import resource
import time

import numpy as np

import fastloss
from fastloss._bench import all_cases

VARIANTS = ("grad_out", "grad", "keep", "nopool")
EXTRA = {"entropy": [(2048, 4096), (4096, 8192)], "mse_loss": [(16384, 1024)]}


def minflt():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def block(variant, grad_call, out_call, calls):
    """Per-call times and the mean minor faults per call of `calls` calls after the
    untimed ones that touch the buffers first."""
    limit = fastloss.set_pool_limit(0) if variant == "nopool" else None
    try:
        f = out_call if variant == "grad_out" else grad_call
        g = f()                 # untimed: the buffers' first touch
        g = f() if variant == "keep" else None     # keep: and the second set's
        times = []
        f0 = minflt()
        for _ in range(calls):
            t0 = time.perf_counter()
            if variant == "keep":
                g = f()
            else:
                f()         # the result is dropped before the next call
            times.append(time.perf_counter() - t0)
        return times, (minflt() - f0) / calls
    finally:
        if limit is not None:
            fastloss.set_pool_limit(limit)


def jobs(names):
    """(label, grad_call, out_call, gradient bytes) for each grad_out case and EXTRA shape."""
    out = []
    for case in all_cases():
        if case.variant != "grad_out" or case.large or (names and case.func not in names):
            continue
        grad_case = next(c for c in all_cases() if c.sized == case.sized and c.variant == "grad")
        for shape in [case.shape] + EXTRA.get(case.func, []):
            d = case.make(shape, np.float32, np.random.default_rng(0))
            out_call = case.impls["fastloss"](d)
            grad_call = grad_case.impls["fastloss"](d)
            gb = sum(a.nbytes for a in _grads(out_call()))
            out.append((f"{case.sized} {'x'.join(map(str, shape))}", grad_call, out_call, gb))
    return out


def _grads(result):
    g = result[1]
    return g if isinstance(g, tuple) else (g,)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--budget", type=float, default=0.05, help="seconds per block")
    p.add_argument("--filter", default="", help="function names, comma-separated")
    args = p.parse_args()
    names = [n for n in args.filter.split(",") if n]
    print(f"{'case':40s} {'MiB':>5s}  " + "  ".join(f"{v:>17s}" for v in VARIANTS)
          + "  grad/out keep/out nopool/out")
    with fastloss.threads(args.threads):
        for label, grad_call, out_call, gb in jobs(names):
            t0 = time.perf_counter()
            out_call()
            calls = int(min(20, max(3, args.budget / (time.perf_counter() - t0))))
            times = {v: [] for v in VARIANTS}
            faults = {v: [] for v in VARIANTS}
            for _ in range(args.rounds):
                for v in VARIANTS:
                    t, f = block(v, grad_call, out_call, calls)
                    times[v] += t
                    faults[v].append(f)
            med = {v: 1e3 * float(np.median(times[v])) for v in VARIANTS}
            cells = "  ".join(f"{med[v]:7.2f} ms {np.mean(faults[v]):5.0f} f" for v in VARIANTS)
            ratios = " ".join(f"{med[v] / med['grad_out']:8.2f}" for v in VARIANTS[1:])
            print(f"{label:40s} {gb / 2**20:5.1f}  {cells}  {ratios}", flush=True)
            fastloss.release_memory()


if __name__ == "__main__":
    main()
