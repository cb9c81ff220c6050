"""fastloss's thread pool (csrc/fl_threadpool.h): every block once, on a thread the job
asked for, from concurrent callers and in forked children."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastloss as fl
from fastloss import _runtime


@pytest.mark.parametrize("n_blocks", [0, 1, 2, 7, 300])
@pytest.mark.parametrize("n_threads", [1, 2, 3, 8])
def test_every_block_runs_once_on_a_thread_of_the_job(n_blocks, n_threads):
    rec = _runtime.pool_record(n_blocks, n_threads)      # (runs, tid) per block
    assert rec.shape == (n_blocks, 2)
    assert np.all(rec[:, 0] == 1)
    assert np.all((rec[:, 1] >= 0) & (rec[:, 1] < n_threads))


def test_fewer_threads_after_more():
    """Pool threads made for an 8-thread job stay out of a later 2-thread job (per-thread
    scratch has n_threads rows)."""
    _runtime.pool_record(400, 8)
    for nt in (2, 1, 3):
        rec = _runtime.pool_record(400, nt)
        assert np.all(rec[:, 0] == 1) and rec[:, 1].max() < nt


def test_pool_threads_take_part_in_a_long_job():
    rec = _runtime.pool_record(2000, 2)     # 20 us blocks: 40 ms on one thread
    assert set(rec[:, 1]) == {0, 1}


def test_concurrent_callers_each_get_every_block_once():
    """A call made while another thread's job runs does its blocks itself."""
    out = {}

    def run(i):
        out[i] = _runtime.pool_record(500, 2)
    ts = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for rec in out.values():
        assert np.all(rec[:, 0] == 1) and rec[:, 1].max() < 2


def test_kernels_from_concurrent_python_threads_match_one_thread(rng):
    x = rng.standard_normal((512, 1000)).astype(np.float32)
    y = rng.integers(0, 1000, 512)
    t = rng.standard_normal((512, 1000)).astype(np.float32)
    with fl.threads(1):
        want = (fl.cross_entropy(x, y, return_grad=True), fl.mse_loss(x, t, return_grad=True),
                fl.logsumexp(x, axis=1))
    got = {}

    def run(i):
        with fl.threads(2):
            for _ in range(5):
                got[i] = (fl.cross_entropy(x, y, return_grad=True), fl.mse_loss(x, t, return_grad=True),
                          fl.logsumexp(x, axis=1))
    ts = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    for res in got.values():
        for (a, ga), (b, gb) in zip(res[:2], want[:2]):
            assert a == b
            np.testing.assert_array_equal(ga, gb)
        np.testing.assert_array_equal(res[2], want[2])


FORK_CHILD = """
import multiprocessing as mp, numpy as np, fastloss
from fastloss import _runtime

def work(_):
    x = np.ones((256, 1000)); y = np.zeros(256, int)
    with fastloss.threads(2):
        tids = set(_runtime.pool_record(2000, 2)[:, 1].tolist())
        return fastloss.get_num_threads(), float(fastloss.cross_entropy(x, y)), sorted(tids)

if __name__ == "__main__":
    with fastloss.threads(2):           # the parent's pool threads exist now
        _runtime.pool_record(2000, 2)
        want = float(fastloss.cross_entropy(np.ones((256, 1000)), np.zeros(256, int)))
    with mp.get_context("fork").Pool(2) as pool:
        got = pool.map_async(work, range(4)).get(timeout=60)
    assert got == [(2, want, [0, 1])] * 4, got
    print("ok")
"""


def test_forked_child_gets_its_own_pool_threads(tmp_path):
    """A child made by fork() has no copy of the parent's pool threads: it makes its own
    and runs on 2 threads, instead of waiting for threads that are not there."""
    script = tmp_path / "fork_child.py"
    script.write_text(FORK_CHILD)
    here = os.path.dirname(os.path.dirname(fl.__file__))     # this fastloss, installed or not
    path = os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=180, env=dict(os.environ, PYTHONPATH=path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok"]


# --- _runtime.copy: the benchmark's multi-threaded copy floor --------------------------

@pytest.mark.parametrize("n", [0, 1, 63, 1001, _runtime.COPY_BLOCK, 3 * _runtime.COPY_BLOCK + 12345])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("stream", [False, True], ids=["memcpy", "stream"])
def test_copy_is_bit_equal(rng, n, n_threads, stream):
    """Both copies, from and to any alignment (streaming stores go to 16-byte-aligned
    addresses, memcpy around them); bytes outside dst stay untouched."""
    src = rng.integers(0, 256, n + 16, dtype=np.uint8)
    for so, do in ((0, 0), (3, 0), (0, 5), (7, 11)):
        dst = np.zeros(n + 32, dtype=np.uint8)
        _runtime.copy(src[so:so + n], dst[do:do + n], n_threads, stream)
        np.testing.assert_array_equal(dst[do:do + n], src[so:so + n])
        assert not dst[:do].any() and not dst[do + n:].any()


@pytest.mark.parametrize("src, dst, exc, match", [
    (np.zeros(8, np.uint8), np.zeros(9, np.uint8), ValueError, "src has 8 bytes, dst 9"),
    (np.zeros(8, np.float32), np.zeros(8, np.float32), ValueError, "src must be a 1-D"),
    (np.zeros(8, np.uint8), np.zeros((2, 4), np.uint8), ValueError, "dst must be a 1-D"),
    (np.zeros(8, np.uint8), np.zeros(16, np.uint8)[::2], ValueError, "dst must be a 1-D C-contiguous"),
    (bytearray(8), np.zeros(8, np.uint8), TypeError, "src must be a NumPy array, got bytearray"),
])
def test_copy_rejects_bad_input(src, dst, exc, match):
    with pytest.raises(exc, match=match):
        _runtime.copy(src, dst, 2)


def test_copy_rejects_read_only_dst_overlap_and_bad_thread_count():
    src = np.ones(8, np.uint8)
    dst = np.zeros(8, np.uint8)
    dst.setflags(write=False)
    with pytest.raises(ValueError, match="dst is read-only"):
        _runtime.copy(src, dst, 2)
    buf = np.zeros(16, np.uint8)
    with pytest.raises(ValueError, match="src and dst overlap"):
        _runtime.copy(buf[:8], buf[4:12], 2)
    with pytest.raises(ValueError, match="n_threads must be >= 1, got 0"):
        _runtime.copy(src, np.zeros(8, np.uint8), 0)


# --- _runtime.any_negative: the sign check of gaussian_nll_loss's var ---------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_any_negative_finds_one_entry_anywhere(dtype, n_threads):
    """One negative entry at a block's first or last element, in a vector's tail lanes or
    the last element, among NaN, -0.0 and +inf (none of which count), on 1-3 threads."""
    per = _runtime.COPY_BLOCK // np.dtype(dtype).itemsize
    n = 2 * per + 7
    a = np.ones(n, dtype)
    a[[3, per + 1, n - 3]] = [np.nan, -0.0, np.inf]
    assert not _runtime.any_negative(a, n_threads)
    for pos in [0, per - 1, per, 2 * per + 5, n - 1]:
        for v in [-np.finfo(dtype).tiny / 4, -1.0, -np.inf]:   # a subnormal too
            b = a.copy()
            b[pos] = v
            assert _runtime.any_negative(b, n_threads), (pos, v)
            assert _runtime.any_negative(b.reshape(1, n), n_threads)   # any C-contiguous shape
    assert not _runtime.any_negative(np.zeros(0, dtype), n_threads)


def test_any_negative_rejects_bad_input():
    for a in [np.zeros(8, np.int32), np.zeros(8, np.float16), np.zeros(16)[::2]]:
        with pytest.raises(ValueError, match="C-contiguous float32/float64"):
            _runtime.any_negative(a, 2)
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        _runtime.any_negative(np.zeros(8), 0)
