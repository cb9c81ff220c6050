"""Running cases: make each input once, time every implementation at every thread
count, compare each peer's result with fastloss's, keep the numbers."""
import sys
from dataclasses import dataclass, field

import numpy as np

from . import core
from .core import IMPLS, Inputs, peer, time_calls

# The scaling sweep: each scalable case at these fractions of its size (256x span).
SCALING_FACTORS = (1 / 256, 1 / 64, 1 / 16, 1 / 4, 1.0)


@dataclass
class Result:
    """One case at one shape, dtype and thread count."""
    case: core.Case
    shape: tuple
    dtype: str
    threads: int
    times: dict = field(default_factory=dict)     # impl -> core.Timing
    # impl -> "ok" | "not installed" | "differs" | "error: ..."
    status: dict = field(default_factory=dict)
    nbytes: int = None
    # copy (core.floor_copies) -> median time of copying the case's bytes; the floor is
    # the fastest
    floor_times: dict = field(default_factory=dict)
    after: str = "hot"                            # core.AFTER: what ran before each call
    # Case.products at this shape, and their median time through NumPy's matmul at the
    # row's thread count (same run)
    products: list = None
    products_s: float = None

    def median(self, impl):
        t = self.times.get(impl)
        return t.median if t is not None else None

    def speedup(self, impl):
        """peer median / fastloss median (> 1: fastloss is faster)."""
        a, b = self.median("fastloss"), self.median(impl)
        return b / a if a and b else None

    @property
    def floor_s(self):
        """The fastest copy's time (None: the case has no floor)."""
        return min(self.floor_times.values()) if self.floor_times else None

    @property
    def floor_copy(self):
        """Which copy the floor is (a name of core.floor_copies)."""
        return min(self.floor_times, key=self.floor_times.get) if self.floor_times else None

    @property
    def x_floor(self):
        """fastloss median / the time the fastest copy takes to move the case's bytes."""
        a = self.median("fastloss")
        return a / self.floor_s if a and self.floor_s else None

    @property
    def x_products(self):
        """fastloss median / the time of the case's matrix products alone."""
        a = self.median("fastloss")
        return a / self.products_s if a and self.products_s else None

    @property
    def elements(self):
        return int(np.prod(self.shape))


class Progress:
    """One line on stderr saying what runs now (rewritten in place on a terminal)."""

    def __init__(self, stream=None, enabled=True):
        self.stream = sys.stderr if stream is None else stream
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.width = 0

    def __call__(self, text):
        if not self.enabled:
            return
        if self.tty:
            pad = max(0, self.width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.width = len(text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self):
        if self.enabled and self.tty and self.width:
            self.stream.write("\r" + " " * self.width + "\r")
            self.stream.flush()
        self.width = 0


class Runner:
    """Times cases; measurements of the same implementation, variant, shape, dtype and
    thread count are made once and shared (a grad_out case's peers are its grad case's,
    the scaling sweep's largest size is the main run's)."""

    def __init__(self, quick=False, seed=0, progress=None, bandwidth=None):
        self.quick = quick
        self.after = "hot"          # core.AFTER; set between run() calls
        self.repeats = core.REPEATS["quick" if quick else "default"]
        self.settle = 0.0 if quick else core.SETTLE_S
        self.seed = seed
        self.progress = progress or Progress(enabled=False)
        self.bandwidth = bandwidth
        self._cache = {}
        self._floors = {}
        self._products = {}

    def measure_bandwidth(self, threads=1):
        """core.copy_bandwidth ({copy: bytes/s}) of the copies of a row at `threads` threads."""
        self.progress(f"measuring copy bandwidth (np.copyto; fastloss's copies on 1 and {threads} threads)")
        self.bandwidth = core.copy_bandwidth(core.COPY_BYTES["quick" if self.quick else "default"],
                                             threads=threads)
        return self.bandwidth

    def floor(self, nbytes, copy="np.copyto"):
        """Median time of copying nbytes (nbytes / 2 read, nbytes / 2 written) into an
        already-touched buffer by `copy` (core.copy_floor_impl): the time the case's bytes
        take at copy speed, at the case's own size (so in cache where the case's data is)."""
        if (nbytes, copy) not in self._floors:
            build = core.copy_floor_impl(nbytes, copy)
            _, t = time_calls(build(None), 3, 20, self.repeats[2] / 3, settle=self.settle)
            self._floors[nbytes, copy] = t.median
        return self._floors[nbytes, copy]

    def products_time(self, shapes, dtype, threads):
        """Median time of the matrix products shapes [(m, k, n), ...] through NumPy's matmul
        on `threads` BLAS threads (core.products_impl), after one untimed call."""
        key = (tuple(shapes), dtype, threads)
        if key not in self._products:
            with core.thread_limits(threads):
                _, t = time_calls(core.products_impl(shapes, dtype)(None), *self.repeats,
                                  settle=self.settle)
            self._products[key] = t.median
        return self._products[key]

    def run(self, jobs, dtypes, threads, label=""):
        """jobs: list of (case, shape). Returns Results ordered job, dtype, threads.
        Inputs are made once per (make, shape, dtype) and shared by the jobs using them."""
        if self.bandwidth is None:
            self.measure_bandwidth(max(threads))
        groups = {}
        for j, (case, shape) in enumerate(jobs):
            groups.setdefault((case.make, tuple(shape)), []).append(j)
        total = sum(len(threads) * (1 if c.dtype else len(dtypes)) for c, _ in jobs)
        done = 0
        out = {}
        for (make, shape), members in groups.items():
            fixed = jobs[members[0]][0].dtype       # one make: one case dtype (Case.dtype)
            for di, dtype in enumerate(dtypes):
                if fixed is not None:
                    if di > 0:
                        continue
                    dtype = fixed
                rng = np.random.default_rng(self.seed)
                self.progress(f"{label}making inputs {core.shape_label(shape)} {dtype}")
                inputs = Inputs(make(shape, dtype, rng), dtype)
                for j in members:
                    case = jobs[j][0]
                    for ti, t in enumerate(threads):
                        done += 1
                        head = (f"{label}[{done}/{total}] {case.id} {core.shape_label(shape)} "
                                f"{dtype} threads={t}")
                        out[(j, di, ti)] = self._one(case, shape, dtype, t, inputs, head)
                del inputs
        self.progress.done()
        return [out[k] for k in sorted(out)]

    def _one(self, case, shape, dtype, t, inputs, head):
        res = Result(case, tuple(shape), dtype, t, after=self.after)
        if case.nbytes is not None:
            res.nbytes = int(case.nbytes(shape, np.dtype(dtype).itemsize))
            self.progress(f"{head}: copy floor")
            res.floor_times = {c: self.floor(res.nbytes, c) for c in core.floor_copies(t)}
        if case.products is not None:
            res.products = [tuple(p) for p in case.products(shape)]
            self.progress(f"{head}: matrix products")
            res.products_s = self.products_time(res.products, dtype, t)
        ref = None
        with core.thread_limits(t):
            for impl in IMPLS:
                if impl not in case.impls:
                    continue
                if peer(impl) is None:
                    res.status[impl] = "not installed"
                    continue
                variant = case.variant if impl == "fastloss" else case.peer_variant
                key = (case.func, case.tag, variant, impl, tuple(shape), dtype, t, self.after)
                if key not in self._cache:
                    self.progress(f"{head}: {impl}")
                    self._cache[key] = self._time(case, impl, inputs)
                summary, timing, err = self._cache[key]
                if err:
                    res.status[impl] = err
                    continue
                res.times[impl] = timing
                if impl == "fastloss":
                    ref = summary
                    res.status[impl] = "ok"
                elif ref is None:
                    res.status[impl] = "ok"
                else:
                    res.status[impl] = "ok" if core.agree(ref, summary, dtype) else "differs"
        return res

    def _time(self, case, impl, inputs):
        lo, hi, budget = self.repeats if self.after != "idle" else core.IDLE_REPEATS
        try:
            fn = case.impls[impl](inputs)
            first, timing = time_calls(fn, lo, hi, budget, warm_up=impl in core.WARM_UP,
                                       before=core.before_call(self.after), settle=self.settle)
            summary = core.summarize(first)
            del first, fn
            return summary, timing, None
        except Exception as e:     # a peer's failure is reported, not fatal
            msg = str(e).splitlines()[0] if str(e) else ""
            return None, None, f"error: {type(e).__name__}: {msg}"[:200]


def scaling_jobs(cases, quick):
    """(case, shape) for every scalable case at each SCALING_FACTORS fraction of its size."""
    jobs = []
    for c in cases:
        if c.scale is None:
            continue
        base = c.shape_for(quick)
        shapes = []
        for f in SCALING_FACTORS:
            s = tuple(c.scale(base, f))
            if s not in shapes:
                shapes.append(s)
        jobs.extend((c, s) for s in shapes)
    return jobs
