"""fastloss.jax against optax: cross-entropy loss + gradient, and a training step.

Run from the checkout's root with PYTHONPATH=. (or with fastloss installed):
    python bench/jax_training_step.py                 # (2048, 32000); heads at N = 512, 2048
    python bench/jax_training_step.py --repeats 9

1. Loss + gradient of the logits at (2048, 32000) float32, int labels, mean:
   fastloss        fastloss.cross_entropy(x, t, return_grad=True)   (NumPy, direct)
   fastloss.jax    jax.jit(jax.value_and_grad(fastloss.jax.cross_entropy))
                   (and the same through jax.pure_callback, its fallback for older jax)
   optax           jax.jit(jax.value_and_grad(mean of optax.softmax_cross_entropy_with_integer_labels))
2. One jitted SGD step of a linear LM head, h (N, 512) @ W (512, 32000) -> mean
   cross-entropy -> gradient of W -> W - lr * grad (donated), with the loss from optax or
   from fastloss.jax; N = 512 and 2048.
Each case: one untimed call (compile, pages), then the median of --repeats timed calls
(block_until_ready). XLA's CPU thread pool is sized when JAX starts (all cores);
fastloss uses its own OpenMP threads (fastloss.get_num_threads()).
"""
import argparse
import statistics
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import fastloss
import fastloss.jax as flj


def median_ms(f, repeats):
    jax.block_until_ready(f())
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f())
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def optax_ce(z, t):
    return optax.softmax_cross_entropy_with_integer_labels(z, t).mean()


def loss_and_grad(n, v, repeats):
    r = np.random.default_rng(0)
    x = r.standard_normal((n, v), dtype=np.float32)
    t = r.integers(0, v, n)
    xj, tj = jnp.asarray(x), jnp.asarray(t)
    rows = {}
    rows["fastloss"] = median_ms(lambda: fastloss.cross_entropy(x, t, return_grad=True), repeats)
    for name, loss in (("fastloss.jax", flj.cross_entropy), ("optax", optax_ce)):
        f = jax.jit(jax.value_and_grad(loss))   # once: a new jit per call would recompile
        rows[name] = median_ms(lambda: f(xj, tj), repeats)
    buffer_callback, flj._buffer_callback = flj._buffer_callback, None
    f = jax.jit(jax.value_and_grad(lambda x, t: flj.cross_entropy(x, t)))
    rows["fastloss.jax via pure_callback"] = median_ms(lambda: f(xj, tj), repeats)
    flj._buffer_callback = buffer_callback
    return rows


def training_step(n, d, v, loss, repeats):
    r = np.random.default_rng(1)
    h = jnp.asarray(r.standard_normal((n, d), dtype=np.float32))
    t = jnp.asarray(r.integers(0, v, n))

    @jax.jit
    def step(w):
        val, g = jax.value_and_grad(lambda w: loss(h @ w, t))(w)
        return w - 1e-3 * g, val

    w = [jnp.asarray(0.02 * r.standard_normal((d, v), dtype=np.float32))]

    def run():
        w[0], val = step(w[0])
        return val
    return median_ms(run, repeats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((ln.split(":", 1)[1].strip() for ln in cpu.splitlines()
                  if ln.startswith("Model name")), "?")
    print(f"# {model}, {len(jax.devices())} JAX CPU device, fastloss threads "
          f"{fastloss.get_num_threads()}, jax {jax.__version__}, optax {optax.__version__}")
    rows = loss_and_grad(2048, 32000, a.repeats)
    print("\n| (2048, 32000) f32 loss + grad | median ms | vs optax |\n|---|---|---|")
    for k, ms in rows.items():
        print(f"| {k} | {ms:.1f} | {rows['optax'] / ms:.2f}x |")
    print("\n| linear head 512 -> 32000, SGD step | optax ms | fastloss.jax ms | speed-up |")
    print("|---|---|---|---|")
    for n in (512, 2048):
        o = training_step(n, 512, 32000, optax_ce, a.repeats)
        f = training_step(n, 512, 32000, flj.cross_entropy, a.repeats)
        print(f"| N = {n} | {o:.1f} | {f:.1f} | {o / f:.2f}x |")


if __name__ == "__main__":
    main()
