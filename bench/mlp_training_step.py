"""A NumPy MLP training step with fastloss's cross-entropy between the matrix products
(issue #18: a fastloss call right after NumPy's BLAS must not stall behind its threads).

    python bench/mlp_training_step.py                   # 2 threads, 1024 x 512 -> 1024 -> 1000
    python bench/mlp_training_step.py --threads 1 --repeats 30

One SGD step of relu(x W1 + b1) W2 + b2 with softmax cross-entropy, float32: a forward
matmul, the loss and its gradient with respect to the logits, three backward matmuls,
the update. The loss step is
  fastloss      fastloss.cross_entropy(z, y, return_grad=True, grad_out=z) (in place)
  oracle        fastloss.reference.cross_entropy(z, y, return_grad=True) (plain NumPy, float64)
  numpy-f32     the same formula in float32 NumPy (max shift, exp, sum, log; softmax - onehot)
and, as a whole step on PyTorch's ops, torch (the same MLP, F.cross_entropy, autograd,
torch.set_num_threads(--threads)), and fastloss.cross_entropy alone, each call right after a
256x256 matmul ("loss after matmul") and back to back ("loss hot"). Each runs in blocks of
consecutive calls, as a training loop does: before a block, the benchmark's SETTLE_S of
sleep lets the threads the previous one left spinning go idle (OpenBLAS's, after a product:
PyTorch's step right after NumPy's products took up to 2.3x its time), then one untimed
call, then --block timed ones; they take turns in a rotating order for --repeats rounds.
Medians.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this fastloss
import fastloss  # noqa: E402
import fastloss.reference as ref  # noqa: E402

from fastloss._bench.core import SETTLE_S  # noqa: E402


def numpy_f32_xent(z, y):
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    s = e.sum(axis=1, keepdims=True)
    loss = float(np.mean(np.log(s[:, 0]) + m[:, 0] - z[np.arange(len(y)), y]))
    g = e / s
    g[np.arange(len(y)), y] -= 1
    g /= len(y)
    return loss, g


LOSSES = {
    "fastloss": lambda z, y: fastloss.cross_entropy(z, y, return_grad=True, grad_out=z),
    "oracle": lambda z, y: ref.cross_entropy(z, y, return_grad=True),
    "numpy-f32": numpy_f32_xent,
}


def numpy_step(params, x, y, loss_fn, lr=1e-3):
    W1, b1, W2, b2 = params
    h = x @ W1
    h += b1
    np.maximum(h, 0, out=h)
    z = h @ W2
    z += b2
    loss, dz = loss_fn(z, y)
    dz = dz.astype(np.float32, copy=False)
    dW2 = h.T @ dz
    db2 = dz.sum(axis=0)
    dh = dz @ W2.T
    dh[h <= 0] = 0
    dW1 = x.T @ dh
    db1 = dh.sum(axis=0)
    for p, g in zip(params, (dW1, db1, dW2, db2)):
        p -= lr * g
    return loss


def torch_step(torch):
    F = torch.nn.functional

    def make(params, x, y):
        tp = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.SGD(tp, lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(F.relu(tx @ tp[0] + tp[1]) @ tp[2] + tp[3], ty)
            loss.backward()
            opt.step()
            return float(loss.detach())
        return step
    return make


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=10, help="rounds")
    ap.add_argument("--block", type=int, default=3, help="timed steps a variant runs in a row")
    ap.add_argument("--shape", default="1024,512,1024,1000", help="N,D,H,C")
    args = ap.parse_args()
    N, D, H, C = (int(v) for v in args.shape.split(","))
    fastloss.set_num_threads(args.threads)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads, user_api="blas")
    except ImportError:
        pass
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, D)).astype(np.float32)
    y = rng.integers(0, C, N)
    params0 = [(rng.standard_normal((D, H)) * D ** -0.5).astype(np.float32), np.zeros(H, np.float32),
               (rng.standard_normal((H, C)) * H ** -0.5).astype(np.float32), np.zeros(C, np.float32)]
    steps = {}
    for name, fn in LOSSES.items():
        params = [p.copy() for p in params0]
        steps[name] = (lambda params=params, fn=fn: numpy_step(params, x, y, fn))
    try:
        import torch
        torch.set_num_threads(args.threads)
        steps["torch"] = torch_step(torch)(params0, x, y)
    except ImportError:
        print("torch not installed: no torch row")
    z = (np.maximum(x @ params0[0], 0) @ params0[2]).astype(np.float32)
    a = rng.standard_normal((256, 256)).astype(np.float32)
    zc = z.copy()

    def loss_after_matmul():
        np.matmul(a, a)
        np.copyto(zc, z)
        t0 = time.perf_counter()
        fastloss.cross_entropy(zc, y, return_grad=True, grad_out=zc)
        return time.perf_counter() - t0

    def loss_hot():
        np.copyto(zc, z)
        t0 = time.perf_counter()
        fastloss.cross_entropy(zc, y, return_grad=True, grad_out=zc)
        return time.perf_counter() - t0

    def timed(step):
        def run():
            t0 = time.perf_counter()
            step()
            return time.perf_counter() - t0
        return run

    runs = {name: timed(step) for name, step in steps.items()}
    runs.update({"loss after matmul": loss_after_matmul, "loss hot": loss_hot})
    times = {k: [] for k in runs}
    names = list(runs)
    for r in range(args.repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            time.sleep(SETTLE_S)
            runs[name]()
            times[name] += [runs[name]() for _ in range(args.block)]
    print(f"MLP step N={N} D={D} H={H} C={C} float32, {args.threads} threads, median of "
          f"{args.repeats} rounds of {args.block} consecutive timed calls each")
    base = statistics.median(times["fastloss"])
    for name, ts in times.items():
        med = statistics.median(ts)
        rel = f"  ({med / base:.2f}x the fastloss step)" if name in steps else ""
        print(f"  {name:18s} {med * 1e3:8.3f} ms{rel}")


if __name__ == "__main__":
    main()
