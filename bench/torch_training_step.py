"""fastloss.torch in a PyTorch training step, against PyTorch's own losses.

    python bench/torch_training_step.py                 # 2 threads, hidden 1024
    python bench/torch_training_step.py --threads 1 --hidden 512 --repeats 9

(a) Cross-entropy forward + backward at 2048 x 32000 float32: F.cross_entropy,
    fastloss.torch.cross_entropy, and fastloss.cross_entropy(..., return_grad=True)
    called directly on the NumPy arrays (what the op wraps).
(b) One training step of a linear LM head (hidden -> V = 32000, N = 512 and 2048 tokens,
    float32): loss, backward to the hidden states, the weight and the bias, and an SGD
    update, with the loss taken by F.cross_entropy or fastloss.torch.cross_entropy on the
    (N, V) logits of torch's matmul, or by F.linear_cross_entropy /
    fastloss.torch.linear_cross_entropy without them.
(c) Small batches, where per-call overhead is most of the time: cross-entropy forward +
    backward at (64, 10) and (512, 1000), 200 calls per timing, microseconds per call.
Each row runs in a fresh Python process (a step right after F.cross_entropy's in the
same process is sometimes several times slower: the memory it frees is reclaimed while
the next step faults in its own): one untimed call, then --repeats timed
ones; the median wall time and the process's peak RSS (VmHWM, the inputs included; not
ru_maxrss, which a child inherits from its parent) are printed. --part a, b or c runs one part.
torch.set_num_threads(n) and fastloss.set_num_threads(n) with n = --threads.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this fastloss
V = 32000


SMALL_CALLS = 200        # part (c): calls per timing


def _case(method, n, hidden, classes=V):
    """A no-argument function that runs one step of `method` (part (c): SMALL_CALLS steps)."""
    import torch
    import torch.nn.functional as F
    import fastloss
    import fastloss.torch as flt
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, classes, (n,), generator=g)
    if method.startswith(("xent", "small")):
        x = torch.randn(n, classes, generator=g)
        calls = SMALL_CALLS if method.startswith("small") else 1
        method = "xent:" + method.split(":", 1)[1]
        if method == "xent:fastloss-numpy":
            xn, tn = x.numpy(), target.numpy()
            def direct():
                for _ in range(calls):
                    fastloss.cross_entropy(xn, tn, return_grad=True)
            return direct
        fn = F.cross_entropy if method == "xent:F.cross_entropy" else flt.cross_entropy
        x.requires_grad_()

        def step():
            for _ in range(calls):
                fn(x, target).backward()
                x.grad = None
        return step
    h = torch.randn(n, hidden, generator=g, requires_grad=True)
    w = (torch.randn(V, hidden, generator=g) * hidden ** -0.5).requires_grad_()
    b = torch.zeros(V, requires_grad=True)
    loss = {
        "step:F.cross_entropy": lambda: F.cross_entropy(F.linear(h, w, b), target),
        "step:fastloss.torch.cross_entropy": lambda: flt.cross_entropy(F.linear(h, w, b),
                                                                       target),
        "step:F.linear_cross_entropy": lambda: F.linear_cross_entropy(h, w, target,
                                                                      linear_bias=b),
        "step:fastloss.torch.linear_cross_entropy": lambda: flt.linear_cross_entropy(
            h, w, target, linear_bias=b),
    }[method]

    def step():
        loss().backward()
        with torch.no_grad():
            for p in (w, b):
                p -= 1e-3 * p.grad
                p.grad = None
        h.grad = None
    return step


def _run_one(method, n, hidden, threads, repeats, classes):
    import torch
    import fastloss
    torch.set_num_threads(threads)
    fastloss.set_num_threads(threads)
    step = _case(method, n, hidden, classes)
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    with open("/proc/self/status") as f:
        rss_mb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    print(json.dumps(dict(ms=1e3 * statistics.median(times), rss_mb=rss_mb)))


def _measure(method, n, args, classes=V):
    out = subprocess.run([sys.executable, __file__, "--one", method, "--n", str(n),
                          "--classes", str(classes),
                          "--hidden", str(args.hidden), "--threads", str(args.threads),
                          "--repeats", str(args.repeats)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _xent_rows(part, n, args, classes=V):
    """Part (a)'s or (c)'s ("xent", "small") three cross-entropy rows at (n, classes), and
    fastloss.torch's time."""
    rows = {m: _measure(f"{part}:{m}", n, args, classes)
            for m in ("F.cross_entropy", "fastloss.torch.cross_entropy", "fastloss-numpy")}
    return rows, rows["fastloss.torch.cross_entropy"]["ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--part", choices=("a", "b", "c", "all"), default="all")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=2048, help=argparse.SUPPRESS)
    ap.add_argument("--classes", type=int, default=V, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return _run_one(args.one, args.n, args.hidden, args.threads, args.repeats, args.classes)

    print(f"threads {args.threads}, float32, V = {V}, medians of {args.repeats}\n")
    if args.part in ("a", "all"):
        print("(a) cross-entropy forward + backward, 2048 x 32000")
        rows, ours = _xent_rows("xent", 2048, args)
        for m, r in rows.items():
            print(f"  {m:34s} {r['ms']:8.1f} ms  {r['ms'] / ours:5.2f}x fastloss.torch's"
                  f" time  peak RSS {r['rss_mb']:6.0f} MB")
    if args.part in ("c", "all"):
        print(f"(c) small batches: cross-entropy forward + backward, per call ({SMALL_CALLS} "
              "calls a timing)")
        for n, c in ((64, 10), (512, 1000)):
            rows, ours = _xent_rows("small", n, args, c)
            for m, r in rows.items():
                print(f"  {f'({n}, {c})':12s} {m:34s} {1e3 * r['ms'] / SMALL_CALLS:8.1f} us  "
                      f"{r['ms'] / ours:5.2f}x fastloss.torch's time")
    if args.part in ("a", "c"):
        return
    print(f"(b) training step of a linear LM head, hidden {args.hidden}")
    for n in (512, 2048):
        rows = {m: _measure(m, n, args) for m in
                ("step:F.cross_entropy", "step:fastloss.torch.cross_entropy",
                 "step:F.linear_cross_entropy", "step:fastloss.torch.linear_cross_entropy")}
        base = rows["step:F.cross_entropy"]["ms"]
        for m, r in rows.items():
            print(f"  N={n:5d} {m[5:]:40s} {r['ms']:8.1f} ms  {base / r['ms']:5.2f}x faster"
                  f" than F.cross_entropy  peak RSS {r['rss_mb']:6.0f} MB")


if __name__ == "__main__":
    main()
