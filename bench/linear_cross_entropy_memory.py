"""Time and peak memory of fastloss.linear_cross_entropy against the alternatives.

    python bench/linear_cross_entropy_memory.py            # 2048 x 1024 x 32000
    python bench/linear_cross_entropy_memory.py --large    # also 1024 x 1024 x 128256
    python bench/linear_cross_entropy_memory.py --shape 512x256x50000 --repeats 5

For each shape (N tokens x D features x V classes, float32) and each method, a fresh
Python process makes the inputs (x: N x D, W: V x D, int64 labels), calls the method
once on tiny inputs (code pages and thread pools resident), resets its peak resident
memory (VmHWM, by writing 5 to /proc/self/clear_refs), calls the method once untimed
and `--repeats` times timed, and reports the median wall time and the peak RSS above
what it held before, over the first call and (the peak reset again) over the later ones
(the returned gradients count: they are N x D + V x D in every loss + gradient method;
what the first call leaves resident, such as a BLAS's buffers, does not count again).
Methods:

  gemm1          x @ W.T into a touched buffer: the logits' product alone
  gemm3          the three products of loss + gradients alone (logits, then the
                 N x V matrix back to the input and to the weight), touched buffers
  fastloss       fastloss.linear_cross_entropy(x, W, y)              (loss)
  fastloss+grad  the same with return_grad=True                     (loss, dx, dW)
  unfused        z = x @ W.T; fastloss.cross_entropy(z, y)
  unfused+grad   z = x @ W.T; fastloss.cross_entropy(z, y, return_grad=True,
                 grad_out=z) in place; z @ W; z.T @ x
  torch          torch.nn.functional.linear_cross_entropy, reference path
                 (options=None), under torch.no_grad()
  torch+grad     the same with autograd (torch.autograd.grad to x and W)
  torch-chunk[+grad]  options=torch.nn.LinearCrossEntropyOptions(): its chunked path

fastloss.threads(n), torch.set_num_threads(n) and BLAS limited to n threads
(threadpoolctl) with n = --threads (default 2). Prints a Markdown table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = [(2048, 1024, 32000)]
LARGE_SHAPES = [(1024, 1024, 128256)]
METHODS = ("gemm1", "gemm3", "fastloss", "fastloss+grad", "unfused", "unfused+grad",
           "torch", "torch+grad", "torch-chunk", "torch-chunk+grad")
TORCH_METHODS = {m for m in METHODS if m.startswith("torch")}
MiB = 1 << 20


# --- the child: one method at one shape ---------------------------------------------------

def _status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_peak():
    """VmHWM := VmRSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _build(method, x, w, y, block_bytes=None):
    """A zero-argument callable running the method once and returning its loss (a float)
    and its results (dropped by the caller before the next call)."""
    import numpy as np

    import fastloss
    if method in ("gemm1", "gemm3"):
        z = np.empty((x.shape[0], w.shape[0]), dtype=x.dtype)
        gx, gw = (np.empty_like(x), np.empty_like(w)) if method == "gemm3" else (None, None)
        for b in (z, gx, gw):
            if b is not None:
                b.fill(0)                        # touched: no page faults while timed

        def gemms():
            np.matmul(x, w.T, out=z)
            if method == "gemm3":
                np.matmul(z, w, out=gx)
                np.matmul(z.T, x, out=gw)
            return float("nan"), None
        return gemms
    if method == "fastloss":
        return lambda: (float(fastloss.linear_cross_entropy(x, w, y, block_bytes=block_bytes)),
                        None)
    if method == "fastloss+grad":
        def fl_grad():
            loss, grads = fastloss.linear_cross_entropy(x, w, y, return_grad=True,
                                                        block_bytes=block_bytes)
            return float(loss), grads
        return fl_grad
    if method == "unfused":
        return lambda: (float(fastloss.cross_entropy(x @ w.T, y)), None)
    if method == "unfused+grad":
        def unfused_grad():
            z = x @ w.T
            loss, g = fastloss.cross_entropy(z, y, return_grad=True, grad_out=z)
            return float(loss), (g @ w, g.T @ x)
        return unfused_grad

    import torch
    F = torch.nn.functional
    opts = torch.nn.LinearCrossEntropyOptions() if method.startswith("torch-chunk") else None
    tx, tw, ty = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(y)
    if not method.endswith("+grad"):
        def t_loss():
            with torch.no_grad():
                return float(F.linear_cross_entropy(tx, tw, ty, options=opts)), None
        return t_loss

    def t_grad():
        xs, ws = tx.detach().requires_grad_(True), tw.detach().requires_grad_(True)
        loss = F.linear_cross_entropy(xs, ws, ty, options=opts)
        grads = torch.autograd.grad(loss, [xs, ws])
        return float(loss.detach()), grads
    return t_grad


def child(method, shape, repeats, threads, block_bytes=None, seed=0):
    """Runs in the fresh process: returns the measurement as a dict."""
    import contextlib
    import warnings

    import numpy as np

    import fastloss
    stack = contextlib.ExitStack()
    stack.enter_context(fastloss.threads(threads))
    try:
        from threadpoolctl import threadpool_limits
        stack.enter_context(threadpool_limits(limits=threads, user_api="blas"))
    except ImportError:
        pass
    if method in TORCH_METHODS:
        import torch
        torch.set_num_threads(threads)
    n, d, v = shape
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((v, d), dtype=np.float32)
    w *= np.float32(2 / np.sqrt(d))              # logits about N(0, 2^2)
    x = rng.standard_normal((n, d), dtype=np.float32)
    y = rng.integers(0, v, n)
    caught = []
    with stack, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # a tiny call first: code pages, thread pools and caches resident before the base
        # (two blocks of 4 tokens: fastloss's accumulating product and its BLAS loaded too)
        k = min(16, v)
        _build(method, x[:8].copy(), w[:k].copy(), y[:8] % k, block_bytes=4 * k * 4)()
        base_kib = _status_kib("VmRSS")
        reset = _reset_peak()
        if not reset:
            base_kib = _status_kib("VmHWM")     # the peak so far: an upper bound of the base
        fn = _build(method, x, w, y, block_bytes)     # (gemm buffers: counted)
        loss, out = fn()                         # untimed first call (counts for the peak)
        del out
        first_kib = _status_kib("VmHWM") - base_kib
        # the later calls' peak, above what the first left resident (a BLAS's buffers, a
        # lazily imported module): what each step of a training loop adds
        base_kib = _status_kib("VmRSS") if reset and _reset_peak() else base_kib
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            _, out = fn()
            times.append(time.perf_counter() - t0)
            del out                              # never two results alive at once
        peak_kib = _status_kib("VmHWM")
    return {"method": method, "shape": list(shape), "loss": loss, "times": times,
            "median_s": statistics.median(times), "peak_above_inputs": first_kib * 1024,
            "later_peak_above_inputs": (peak_kib - base_kib) * 1024,
            "peak_reset": reset, "warnings": sorted({str(c.message)[:160] for c in caught}),
            "fastloss": fastloss.__file__}


# --- the parent: one subprocess per method and shape, the table ---------------------------

def run_one(method, shape, repeats, threads, timeout, block_mib=None):
    cmd = [sys.executable, os.path.abspath(__file__), "--child", method,
           "--shape", "x".join(map(str, shape)), "--repeats", str(repeats),
           "--threads", str(threads)] + (["--block-mib", str(block_mib)] if block_mib else [])
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"over {timeout} s"}
    if p.returncode != 0:
        lines = (p.stderr or p.stdout).strip().splitlines() or [f"exit {p.returncode}"]
        return {"method": method, "error": lines[-1][:200]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _mib(b):
    return f"{b / MiB:,.0f}"


def _ratio(a, b):
    return f"{a / b:.2f}" if a and b else "-"


def table(shape, rows):
    n, d, v = shape
    logits, inputs = n * v * 4, (n * d + v * d) * 4 + n * 8
    t = {r["method"]: r.get("median_s") for r in rows}
    lines = [f"### {n} x {d} x {v} (N x D x V), float32: inputs {_mib(inputs)} MiB, "
             f"N x V logits {_mib(logits)} MiB, gradients (N x D + V x D) "
             f"{_mib((n * d + v * d) * 4)} MiB", "",
             "| method | median | vs fastloss (same variant) | peak RSS above inputs (MiB), "
             "first / later calls | peak / logits | loss |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r["method"]
        if "error" in r:
            lines.append(f"| {m} | error: {r['error']} | | | | |")
            continue
        ref = "fastloss+grad" if m.endswith("+grad") or m == "gemm3" else "fastloss"
        vs = _ratio(t[m], t.get(ref)) if m not in ("fastloss", "fastloss+grad") else ""
        peak = r["peak_above_inputs"]
        lines.append(f"| {m} | {r['median_s']:.3f} s | {vs} | {_mib(peak)} / "
                     f"{_mib(r['later_peak_above_inputs'])} "
                     f"| {peak / logits:.2f} | {r['loss']:.6g} |")
    lines.append("")
    pairs = [("fastloss+grad", "gemm3"), ("fastloss", "gemm1"), ("torch+grad", "fastloss+grad"),
             ("torch-chunk+grad", "fastloss+grad"), ("torch-chunk", "fastloss")]
    lines.append("; ".join(f"{a} / {b} = {_ratio(t.get(a), t.get(b))}" for a, b in pairs))
    lines += [f"warning ({r['method']}): {w}" for r in rows for w in r.get("warnings", ())]
    return "\n".join(lines)


def _shape(text):
    try:
        s = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        s = ()
    if len(s) != 3 or min(s) < 1:
        raise argparse.ArgumentTypeError(f"a shape is NxDxV (three positive integers), "
                                         f"got {text!r}")
    return s


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--large", action="store_true", help="also 1024 x 1024 x 128256")
    p.add_argument("--shape", type=_shape, action="append", help="NxDxV instead of the defaults")
    p.add_argument("--methods", default=",".join(METHODS),
                   help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--repeats", type=int, default=3, help="timed calls (after one untimed)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--block-mib", type=int,
                   help="fastloss's block_bytes in MiB (default: LINEAR_BLOCK_BYTES, 128 MiB)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per method")
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    sys.path.insert(0, ROOT)                     # this checkout's fastloss
    if a.child:
        print(json.dumps(child(a.child, a.shape[0], a.repeats, a.threads,
                                None if a.block_mib is None else a.block_mib * MiB)), flush=True)
        return 0
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {bad}; choose from {', '.join(METHODS)}")
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
        methods = [m for m in methods if m not in TORCH_METHODS]
    import numpy as np

    import fastloss
    shapes = a.shape or (SHAPES + (LARGE_SHAPES if a.large else []))
    print(f"fastloss {fastloss.__version__} ({fastloss.__file__}), numpy {np.__version__}, "
          f"torch {torch_version or 'not installed'}; {a.threads} threads; median of "
          f"{a.repeats} calls after 1 untimed; one process per method; fastloss block_bytes "
          f"{f'{a.block_mib} MiB' if a.block_mib else 'default (128 MiB)'}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    for shape in shapes:
        rows = []
        for m in methods:
            print(f"  {'x'.join(map(str, shape))} {m} ...", file=sys.stderr, flush=True)
            rows.append(run_one(m, shape, a.repeats, a.threads, a.timeout, a.block_mib))
        print()
        print(table(shape, rows), flush=True)
    print()
    print("peak RSS above inputs: VmHWM (reset after the inputs were made) minus VmRSS then, "
          "over the first call, and over the later calls with the peak reset again after the "
          "first; it includes the returned gradients. vs fastloss: method time / fastloss time of "
          "the same variant (gemm3: / fastloss+grad, gemm1: / fastloss).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
