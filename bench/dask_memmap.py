"""fastloss.dask against one in-memory call: float32 cross_entropy loss (no gradient).

Run from the checkout's root with PYTHONPATH=. (or with fastloss installed):
    python bench/dask_memmap.py                      # 256 MB: 2048 x 32768 in 1024-row chunks
    python bench/dask_memmap.py --mb 2048            # the >= 2 GB memory-mapped case
    python bench/dask_memmap.py --mb 64 --chunk-rows 128 --repeats 5

Two cases, each the median of --repeats timed calls (interleaved) after one untimed call:
  memory   logits in RAM: fastloss.cross_entropy(x, y) against
           fastloss.dask.cross_entropy(da.from_array(x, chunks=(R, -1)), y) on the
           threaded scheduler (one worker thread per core, one kernel thread per block);
  memmap   the same logits written to a .npy file (--dir, default a temporary folder)
           and opened with np.load(mmap_mode="r"): the in-memory call on the memmap (it
           reads every page) against the Dask graph over it. The file was just written,
           so its pages are usually in the page cache: a warm-cache comparison.
Prints the times and the ratio Dask / in-memory (the target: <= 1.3 in memory).
"""
import argparse
import os
import statistics
import tempfile
import time

import numpy as np

import dask
import dask.array as da

import fastloss
import fastloss.dask as fld


def median_times(fns, repeats):
    """Median wall time of each function, the calls interleaved (a busy neighbour slows
    both alike), after one untimed call of each."""
    times = [[] for _ in fns]
    for r in range(repeats + 1):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            if r:
                ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def compare(name, x, y, chunk_rows, repeats, workers):
    dx = da.from_array(x, chunks=(chunk_rows, -1))
    dy = da.from_array(y, chunks=chunk_rows)
    want = fastloss.cross_entropy(x, y)
    got = fld.cross_entropy(dx, dy).compute(scheduler="threads", num_workers=workers)
    assert abs(float(got) - float(want)) <= 1e-6 * abs(float(want)), (got, want)
    t_mem, t_dask = median_times(
        [lambda: fastloss.cross_entropy(x, y),
         lambda: fld.cross_entropy(dx, dy).compute(scheduler="threads", num_workers=workers)],
        repeats)
    print(f"| {name} | {x.shape[0]} x {x.shape[1]} | {x.nbytes / 2**20:.0f} MB | {chunk_rows} | "
          f"{t_mem * 1e3:.1f} ms | {t_dask * 1e3:.1f} ms | {t_dask / t_mem:.2f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=256, help="size of the float32 logits in MiB")
    p.add_argument("--classes", type=int, default=32768)
    p.add_argument("--chunk-rows", type=int, default=1024,
                   help="rows per chunk (1024: dask's auto size, 128 MiB, at 32768 classes)")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--dir", default=None, help="folder of the memory-mapped file")
    p.add_argument("--skip-memory", action="store_true", help="only the memmap case")
    a = p.parse_args()
    workers = os.cpu_count()
    rows = max(1, int(a.mb * 2**20) // (4 * a.classes))
    rng = np.random.default_rng(0)
    y = rng.integers(0, a.classes, rows)
    print(f"fastloss {fastloss.__version__}, dask {dask.__version__}, {workers} CPUs, "
          f"fastloss threads {fastloss.get_num_threads()}, BLOCK_THREADS {fld.BLOCK_THREADS}\n")
    print("| case | logits | size | chunk rows | in-memory call | fastloss.dask | ratio |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=a.dir) as tmp:
        path = os.path.join(tmp, "logits.npy")
        out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, a.classes))
        step = max(1, (64 << 20) // (4 * a.classes))
        for r in range(0, rows, step):           # written in pieces: never all in RAM here
            out[r:r + step] = rng.standard_normal((min(step, rows - r), a.classes), np.float32)
        out.flush()
        del out
        x = np.load(path, mmap_mode="r")
        if not a.skip_memory:
            compare("memory", np.array(x), y, a.chunk_rows, a.repeats, workers)
        compare("memmap", x, y, a.chunk_rows, a.repeats, workers)
        del x


if __name__ == "__main__":
    main()
