"""The pieces every benchmark case is made of: the Case type, the peers (NumPy,
SciPy, PyTorch, JAX, each imported only when a case needs it), the inputs a case
hands to its implementations, timing, the copy-bandwidth floor, and the
description of the machine.

A case is one public function in one variant ("loss": the loss alone, "grad":
loss and gradient into a fresh array, "grad_out": loss and gradient into a
reused buffer) at one size. It says how to make its inputs, how many bytes a
memory-bound kernel must move for them, and, per implementation, how to build a
zero-argument callable that runs the computation once and returns its result.
The command line (cli.py) and the pytest-benchmark suite (bench/) both run the
cases listed by the family modules next to this one; no case is written twice.
"""
import datetime
import importlib
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

IMPLS = ("fastloss", "numpy", "scipy", "torch", "jax")
PEERS = IMPLS[1:]
VARIANTS = ("loss", "grad", "grad_out")
DTYPES = ("float32", "float64")


# --- cases --------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Case:
    """One benchmark: a public function, a variant, a size.

    func, family: the public function's name and its module (fastloss.<family>).
    tag: names the size when a function has several ("v32k"); "" when it has one.
    variant: "loss", "grad" (fresh gradient array each call) or "grad_out" (into a
      reused, already-touched buffer). Peers have no grad_out: a grad_out case times
      them as its "grad" case does (the same measurement, shared).
    shape, quick_shape: input shape of a normal run and of --quick.
    make(shape, dtype, rng): dict of NumPy input arrays.
    impls: implementation name -> build(inputs) returning a callable that runs once.
    nbytes(shape, itemsize): bytes the kernel must read and write (None: the case is
      not memory-bound, no floor); bytes_formula says it in words.
    large: only run with --large, or when --filter names this case's size or id.
    scale(shape, f): the shape f times as large (for the scaling sweep); None: the
      case is not part of it.
    peer_notes: implementation -> what it runs, where that needs saying (e.g. numpy:
      "the float64 oracle from fastloss.reference"); marked * in the table.
    dtype: the one dtype the case runs at whatever --dtype says (the half-precision
      cases: "float16", "bfloat16"); None: each --dtype.
    products(shape): the matrix products (m, k, n) the case's math needs, for a case
      dominated by them (None: it is not); products_formula says them in words. The
      report divides fastloss's time by theirs through NumPy's matmul (products_impl).
    """
    func: str
    family: str
    variant: str
    shape: tuple
    quick_shape: tuple
    make: Callable
    impls: dict
    tag: str = ""
    nbytes: Callable = None
    bytes_formula: str = ""
    large: bool = False
    scale: Callable = None
    peer_notes: dict = field(default_factory=dict)
    dtype: str = None
    products: Callable = None
    products_formula: str = ""

    @property
    def sized(self):
        """func:tag, the name of the function at this size."""
        return f"{self.func}:{self.tag}" if self.tag else self.func

    @property
    def id(self):
        return f"{self.sized}:{self.variant}"

    @property
    def peer_variant(self):
        """The variant the peers are timed as (grad_out: as grad)."""
        return "grad" if self.variant == "grad_out" else self.variant

    @property
    def group(self):
        """pytest-benchmark group: peers and both fastloss gradient variants together."""
        return f"{self.sized}:{self.peer_variant}"

    def data_key(self, shape, dtype):
        """Cases with the same key share their inputs (made once)."""
        return (self.make, tuple(shape), np.dtype(dtype).name)

    def shape_for(self, quick):
        return tuple(self.quick_shape if quick else self.shape)


def shape_label(shape):
    return "x".join(str(s) for s in shape)


def scale_rows(shape, f):
    """Shape with the first axis scaled by f (at least 1 row)."""
    return (max(1, int(round(shape[0] * f))),) + tuple(shape[1:])


# --- peers --------------------------------------------------------------------------

_modules = {}


def _import_peer(name):
    if name == "numpy":
        return np
    if name == "scipy":
        return importlib.import_module("scipy.special")
    if name == "torch":
        return importlib.import_module("torch")
    if name == "jax":
        jax = importlib.import_module("jax")
        # float64 inputs stay float64 (JAX computes in float32 otherwise).
        jax.config.update("jax_enable_x64", True)
        return jax
    if name == "fastloss":
        return importlib.import_module("fastloss")
    raise KeyError(name)


def peer(name):
    """The peer's module, or None when it is not installed (imported once)."""
    if name not in _modules:
        try:
            _modules[name] = _import_peer(name)
        except ImportError:
            _modules[name] = None
    return _modules[name]


def version(name):
    """Installed version of a package, or None (without importing it)."""
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


JAX_THREADS_NOTE = ("JAX's thread count is fixed at start-up by XLA (XLA_FLAGS); "
                    "--threads does not change it")


# --- inputs -------------------------------------------------------------------------

class Inputs:
    """A case's input arrays, with each peer's view of them made once and kept.

    np: dict name -> NumPy array. torch(name): a torch tensor sharing the memory;
    jax(name): a JAX array on the CPU device (a copy, made before any timing)."""

    def __init__(self, arrays, dtype):
        self.np = arrays
        self.dtype = np.dtype(dtype)
        self._torch = {}
        self._jax = {}

    def __getitem__(self, name):
        return self.np[name]

    def torch(self, name):
        if name not in self._torch:
            torch, a = peer("torch"), self.np[name]
            if a.dtype.name == "bfloat16":     # ml_dtypes: torch.from_numpy takes no bfloat16
                self._torch[name] = torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
            else:
                self._torch[name] = torch.from_numpy(a)
        return self._torch[name]

    def jax(self, name):
        if name not in self._jax:
            jax = peer("jax")
            self._jax[name] = jax.block_until_ready(jax.numpy.asarray(self.np[name]))
        return self._jax[name]


# --- timing -------------------------------------------------------------------------

@dataclass
class Timing:
    times: list = field(default_factory=list)

    @property
    def median(self):
        return float(np.median(self.times))

    @property
    def min(self):
        return float(np.min(self.times))


# repeats: (at least, at most, stop once the timed calls add up to this many seconds)
REPEATS = {"default": (5, 100, 0.15), "quick": (3, 20, 0.02)}
# Implementations whose first call is not like the others (JIT compilation, thread
# pools, autograd set-up): one untimed call first. NumPy and SciPy are timed from the
# first call on (their temporaries are new arrays on every call anyway).
WARM_UP = ("fastloss", "torch", "jax")
# Idle seconds before each implementation's (and each floor's and product's) calls, the
# quick run's excepted: the threads the previous one left spinning go to sleep first, so
# none is timed while another library's threads hold the cores. OpenBLAS's spin for 2^28
# cycles (about 0.1 s) after a product: PyTorch's InfoNCE and NT-Xent gradients right after
# NumPy's products took 1.5x and 1.9x their time with OpenBLAS's threads asleep.
SETTLE_S = 0.15


# What runs, untimed, before each timed call (--after). "hot": nothing, calls back to
# back. "matmul": a 256 x 256 float32 NumPy matmul, whose BLAS threads are still
# spinning when the timed call starts (a training step: matmul -> loss -> matmul).
# "idle": 0.3 s of sleep, whose idle cores a virtual machine takes milliseconds to wake
# (an evaluation loop waiting on I/O). Each call of every implementation gets the same.
AFTER = ("hot", "matmul", "idle")
AFTER_TEXT = {"hot": "calls back to back",
              "matmul": "a 256x256 float32 NumPy matmul (untimed) before each call",
              "idle": "0.3 s of sleep (untimed) before each call"}
# "idle" repeats: (at least, at most, seconds) as REPEATS; 0.3 s per call bounds them.
IDLE_REPEATS = (5, 5, 0.0)


def before_call(after):
    """The untimed function time_calls runs before each timed call under `after`."""
    if after == "hot":
        return None
    if after == "idle":
        return lambda: time.sleep(0.3)
    a = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)
    out = np.empty_like(a)
    return lambda: np.matmul(a, a, out=out)


def time_calls(fn, min_repeats=5, max_repeats=100, budget_s=0.15, warm_up=True, before=None,
               settle=0.0):
    """Sleep `settle` seconds (SETTLE_S), call fn once untimed (warm_up: JIT
    compilation, first touch, caches), then time it with time.perf_counter until it ran
    at least min_repeats times and the timed calls add up to budget_s, or max_repeats
    times (or, for slow calls, 3 times adding up to 2.5 budget_s). `before` (or None)
    runs untimed ahead of every call (before_call). Returns (first result, Timing)."""
    if settle:
        time.sleep(settle)
    first = fn() if warm_up else None
    t = Timing()
    total = 0.0
    while True:
        if before is not None:
            before()
        t0 = time.perf_counter()
        if first is None:
            first = fn()
        else:
            fn()
        dt = time.perf_counter() - t0
        t.times.append(dt)
        total += dt
        n = len(t.times)
        if (n >= max_repeats or (n >= min_repeats and total >= budget_s)
                or (n >= 3 and total >= 2.5 * budget_s)):     # slow calls: 3 are enough
            return first, t


class thread_limits:
    """Context manager: n threads for fastloss (fastloss.threads), for BLAS (threadpoolctl,
    when installed: NumPy's matmul inside fastloss's metric losses and the NumPy peers)
    and for PyTorch (torch.set_num_threads). JAX cannot be changed after start-up."""

    def __init__(self, n):
        self.n = n
        self.stack = None

    def __enter__(self):
        import contextlib

        import fastloss
        self.stack = contextlib.ExitStack()
        self.stack.enter_context(fastloss.threads(self.n))
        self.stack.enter_context(torch_threads(self.n))
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            self.stack.enter_context(threadpool_limits(limits=self.n, user_api="blas"))
        return self

    def __exit__(self, *exc):
        return self.stack.__exit__(*exc)


def blas_limited():
    """Whether thread_limits can limit BLAS threads (threadpoolctl is installed)."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


class torch_threads:
    """Context manager: torch.set_num_threads(n) inside, the old value after (no-op
    without torch)."""

    def __init__(self, n):
        self.n = n
        self.old = None

    def __enter__(self):
        torch = _modules.get("torch")
        if torch is not None:
            self.old = torch.get_num_threads()
            torch.set_num_threads(self.n)
        return self

    def __exit__(self, *exc):
        if self.old is not None:
            _modules["torch"].set_num_threads(self.old)


# --- results: a small, comparable summary -----------------------------------------

SAMPLE = 1 << 20   # elements of each output compared between implementations


def summarize(result):
    """A result (scalar, array, tuple of them; NumPy, torch or JAX) as a list of small
    float64 NumPy arrays: scalars whole, arrays' first SAMPLE elements (flat)."""
    if isinstance(result, (tuple, list)):
        out = []
        for r in result:
            out.extend(summarize(r))
        return out
    if hasattr(result, "detach"):          # torch
        result = result.detach()
        if str(result.dtype) == "torch.bfloat16":      # no NumPy view of it
            result = result.float()
        result = result.numpy()
    a = np.asarray(result)
    return [np.array(a.reshape(-1)[:SAMPLE], dtype=np.float64)]


AGREE_RTOL = {"float16": 2e-2, "bfloat16": 5e-2, "float32": 2e-3, "float64": 1e-8}


def agree(ref, other, dtype):
    """Do two summaries hold the same numbers (each array to rtol of its largest
    entry)? Catches a peer computing something else, not rounding differences."""
    if len(ref) != len(other):
        return False
    rtol = AGREE_RTOL[np.dtype(dtype).name]
    for a, b in zip(ref, other):
        if a.shape != b.shape:
            return False
        scale = np.max(np.abs(a), initial=0.0)
        if not np.allclose(b, a, rtol=rtol, atol=rtol * scale + 1e-30, equal_nan=True):
            return False
    return True


# --- the copy-bandwidth floor ------------------------------------------------------

COPY_BYTES = {"default": 256 << 20, "quick": 64 << 20}


def floor_copies(threads):
    """The copies a row at `threads` threads is floored by, by name: "np.copyto" (one
    thread), "stream:N" (fastloss._runtime.copy's non-temporal stores on N threads of
    fastloss's pool; N = 1 and the row's) and "copy:N" (its memcpy blocks on the row's N
    threads, when more than one). Streaming is the fastest pass over memory larger than the
    caches (nothing read before it is written); memcpy, within them."""
    names = ["np.copyto"] + [f"stream:{t}" for t in sorted({1, threads})]
    return names + ([f"copy:{threads}"] if threads > 1 else [])


def copy_floor_impl(nbytes, copy="np.copyto"):
    """build(inputs) for a copy moving nbytes (nbytes / 2 read, nbytes / 2 written) between
    already-touched uint8 buffers, by the copy named `copy` (floor_copies). A case's floor
    is the fastest of its row's copies (the pytest suite shows each in the case's group)."""
    def build(_inputs):
        n = max(1, nbytes // 2)
        src = np.ones(n, dtype=np.uint8)
        dst = np.zeros(n, dtype=np.uint8)
        np.copyto(dst, src)
        if copy == "np.copyto":
            return lambda: np.copyto(dst, src)
        from fastloss import _runtime
        kind, threads = copy.split(":")
        return lambda: _runtime.copy(src, dst, int(threads), kind == "stream")
    return build


def products_impl(shapes, dtype):
    """build(inputs) for the matrix products shapes [(m, k, n), ...]: np.matmul of an
    (m, k) by a (k, n) array of dtype into a preallocated (m, n) output, one after the
    other: the time BLAS takes for a case's products alone (Case.products)."""
    def build(_inputs):
        rng = np.random.default_rng(0)
        ops = [(rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype),
                np.empty((m, n), dtype)) for m, k, n in shapes]

        def run():
            for a, b, c in ops:
                np.matmul(a, b, out=c)
        return run
    return build


def copy_bandwidth(nbytes=256 << 20, repeats=9, threads=1):
    """Read + write bandwidth in bytes/s of copying nbytes into an already-touched buffer
    (no page faults) by each copy of floor_copies(threads), as {name: bytes/s}. The
    largest is the speed at which one pass over memory can go with fastloss's threads."""
    out = {}
    for c in floor_copies(threads):
        _, tm = time_calls(copy_floor_impl(2 * nbytes, c)(None), repeats, repeats, 0.0)
        out[c] = 2 * nbytes / tm.median
    return out


# --- the machine ---------------------------------------------------------------------

def _cpuinfo():
    """(model name, physical cores) from /proc/cpuinfo (None where not readable)."""
    model, cores = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            phys = core = None
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name" and model is None:
                    model = val
                elif key == "physical id":
                    phys = val
                elif key == "core id":
                    core = val
                elif not key and core is not None:
                    cores.add((phys, core))
                    phys = core = None
            if core is not None:
                cores.add((phys, core))
    except OSError:
        pass
    return model, (len(cores) or None)


def machine():
    """What the numbers were measured on: CPU, cores, OS, library versions, date."""
    model, physical = _cpuinfo()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    import fastloss
    from fastloss import _info
    cfg = _info.config()
    versions = {"python": platform.python_version(), "fastloss": fastloss.__version__,
                "numpy": np.__version__}
    for name, dist in (("scipy", "scipy"), ("torch", "torch"), ("jax", "jax"),
                       ("jaxlib", "jaxlib"), ("matplotlib", "matplotlib")):
        versions[name] = version(dist)
    return {
        "cpu": model or platform.processor() or platform.machine(),
        "physical_cores": physical,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "platform": platform.platform(),
        "versions": versions,
        "fastloss_simd": cfg["simd"],
        "fastloss_openmp": cfg["openmp_version"],
        "fastloss_threads": cfg["num_threads"],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]),
    }


def fmt_time(s):
    if s is None or not math.isfinite(s):
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms" if s < 0.1 else f"{s * 1e3:.0f} ms"
    return f"{s * 1e6:.3g} us" if s < 1e-4 else f"{s * 1e6:.0f} us"
