"""float16 and bfloat16 logits read natively against float32: cross_entropy (loss only)
and kl_divergence between two arrays (loss only), issue #14's targets.

Run from the checkout's root with PYTHONPATH=. (or with fastloss installed):
    python bench/half_precision.py                   # (8, 512, 32000), the issue's shape
    python bench/half_precision.py --shape 8,128,32000 --repeats 5 --threads 1

For each dtype (float32, float16, bfloat16 when ml_dtypes is installed): the median of
--repeats timed calls (the dtypes interleaved, so a busy neighbour slows them alike)
after one untimed call; the floor, the bytes the call reads (the logits at their own
itemsize, the labels) over the machine's copy bandwidth (read + write, the faster of
np.copyto on one thread and fastloss._runtime.copy on fastloss's threads); the time over float32's (the target: <= 0.7); and the peak memory allocated
during one call beyond its inputs (tracemalloc, which NumPy reports to; the target:
<= 64 MiB).
"""
import argparse
import statistics
import tracemalloc

import numpy as np

import fastloss
from fastloss._bench.core import copy_bandwidth, machine, time_calls


def median_times(fns, repeats):
    """Median wall time of each function over `repeats` rounds of one call each (the calls
    interleaved: a busy neighbour slows them alike), after one untimed call of each."""
    for fn in fns:
        fn()
    rounds = [[time_calls(fn, 1, 1, 0.0, warm_up=False)[1].median for fn in fns] for _ in range(repeats)]
    return [statistics.median(ts) for ts in zip(*rounds)]


def peak_bytes(fn):
    """Peak bytes allocated (tracemalloc) during one call of fn."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def half_dtypes():
    out = [np.dtype(np.float32), np.dtype(np.float16)]
    try:
        import ml_dtypes
    except ImportError:
        print("(ml_dtypes is not installed: no bfloat16)")
    else:
        out.append(np.dtype(ml_dtypes.bfloat16))
    return out


def report(title, calls, nbytes, repeats, bandwidth):
    """calls: dtype -> zero-argument call; nbytes: dtype -> bytes it reads."""
    dts = list(calls)
    times = median_times([calls[d] for d in dts], repeats)
    print(f"\n{title}\n| dtype | median | floor | / floor | / float32 | peak beyond inputs |")
    print("|---|---|---|---|---|---|")
    for d, t in zip(dts, times):
        floor = nbytes[d] / bandwidth
        print(f"| {d.name} | {t * 1e3:.1f} ms | {floor * 1e3:.1f} ms | {t / floor:.2f} | "
              f"{t / times[0]:.2f} | {peak_bytes(calls[d]) / 2**20:.1f} MiB |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", default="8,512,32000", help="logits' shape, classes last")
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--threads", type=int, default=None, help="fastloss's threads (default: all)")
    args = p.parse_args()
    with fastloss.threads(args.threads or fastloss.get_num_threads()):
        run(tuple(int(s) for s in args.shape.split(",")), args.repeats)


def run(shape, repeats):
    """Both tables for logits of `shape`."""
    rng = np.random.default_rng(0)
    m = machine()
    print(f"{m['cpu']}, {m['usable_cpus']} usable CPUs; fastloss {fastloss.__version__}, "
          f"SIMD {m['fastloss_simd']}, {fastloss.get_num_threads()} threads; numpy {m['versions']['numpy']}")
    bandwidth = max(copy_bandwidth(threads=fastloss.get_num_threads()).values())
    print(f"copy bandwidth (read + write): {bandwidth / 1e9:.1f} GB/s")
    dts = half_dtypes()
    p32 = rng.standard_normal(shape, dtype=np.float32) * np.float32(2)
    q32 = rng.standard_normal(shape, dtype=np.float32) * np.float32(2)
    y = rng.integers(0, shape[-1], shape[:-1])
    ps = {d: p32 if d == np.float32 else p32.astype(d) for d in dts}
    report(f"cross_entropy(logits, labels), loss only, {shape}",
           {d: (lambda x=ps[d]: fastloss.cross_entropy(x, y)) for d in dts},
           {d: ps[d].nbytes + y.nbytes for d in dts}, repeats, bandwidth)
    qs = {d: q32 if d == np.float32 else q32.astype(d) for d in dts}
    del q32
    report(f"kl_divergence(p_logits, q_logits), loss only, {shape}",
           {d: (lambda a=ps[d], b=qs[d]: fastloss.kl_divergence(a, b)) for d in dts},
           {d: 2 * ps[d].nbytes for d in dts}, repeats, bandwidth)


if __name__ == "__main__":
    main()
