"""The gradient buffer pool (fastloss/_pool.py): a fresh gradient is never overwritten
while it or any view of it is alive, the pool stays under its limit, releases on request,
is shared safely by Python threads and is not shared with a forked child."""
import multiprocessing
import pickle
import resource
import threading

import numpy as np
import pytest

import fastloss as fl
from fastloss import _pool

N = 1 << 21          # float32 elements: an 8 MiB gradient, pooled


@pytest.fixture(autouse=True)
def fresh_pool():
    fl.release_memory()
    old = fl.set_pool_limit(_pool.DEFAULT_LIMIT)
    yield
    fl.set_pool_limit(old)
    fl.release_memory()


def _data(n=N, seed=0):
    return np.random.default_rng(seed).standard_normal(n, dtype=np.float32)


def _ptr(a):
    return a.__array_interface__["data"][0]


def _mse(x, t=None, **kw):
    """(loss, gradient) of mse_loss(x, t), t zeros by default."""
    return fl.mse_loss(x, np.zeros_like(x) if t is None else t, return_grad=True, **kw)


def _mse_grad(x):
    out = np.empty_like(x)
    _mse(x, grad_out=out)
    return out


# One function per way a fresh gradient is made: grad_buffers (mse_loss, triplet: three
# gradients), grad_rows (entropy, also along a non-last axis), BroadcastGrad (gaussian).
CALLS = {
    "mse_loss": lambda s: _mse(_data(seed=s))[1],
    "entropy": lambda s: fl.entropy(_data(seed=s).reshape(1024, -1), return_grad=True)[1],
    "entropy_axis0": lambda s: fl.entropy(_data(seed=s).reshape(1024, -1), axis=0,
                                          return_grad=True)[1],
    "triplet": lambda s: fl.triplet_margin_loss(*(_data(seed=s + k).reshape(4096, -1)
                                                  for k in range(3)), return_grad=True)[1][1],
    "gaussian_nll": lambda s: fl.gaussian_nll_loss(_data(seed=s), _data(seed=s + 1),
                                                   np.exp(_data(seed=s + 2)),
                                                   return_grad=True)[1][0],
}


@pytest.mark.parametrize("name", list(CALLS))
def test_later_calls_never_change_an_earlier_gradient_or_its_views(name):
    call = CALLS[name]
    g = call(0)
    assert g.flags.writeable and g.nbytes >= _pool.MIN_BYTES
    expect = g.copy()
    views = [g[1], g.reshape(-1)[::3], g.T, g.view(np.int32), np.frombuffer(g.copy(), g.dtype)]
    if g.flags.c_contiguous:
        views.append(np.frombuffer(memoryview(g), g.dtype).reshape(g.shape))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:                     # a tensor sharing the memory, seen as NumPy
        views.append(torch.from_numpy(g)[1:].numpy())
    kept = [v.copy() for v in views]
    mv = memoryview(g)
    del g                                    # only views (and a memoryview) still see it
    for seed in (10, 20, 30):
        g2 = call(seed)
        assert not any(np.shares_memory(g2, v) for v in views)
        np.testing.assert_array_equal(g2, call(seed).copy())   # a pooled buffer is exact
        del g2
    for v, k in zip(views, kept):
        np.testing.assert_array_equal(v, k)
    np.testing.assert_array_equal(np.asarray(mv), expect)


def test_the_previous_gradient_kept_alive_is_not_reused():
    x1, x2 = _data(seed=1), _data(seed=2)
    _, g1 = _mse(x1)
    _, g2 = _mse(x2)
    assert not np.shares_memory(g1, g2)
    np.testing.assert_array_equal(g1, _mse_grad(x1))
    np.testing.assert_array_equal(g2, _mse_grad(x2))


def test_a_dropped_gradient_is_reused_without_page_faults():
    x = _data(4 * N)                         # 32 MiB: a fresh mmap from glibc each call
    t = np.zeros_like(x)
    _, g = _mse(x, t)
    p = _ptr(g)
    del g
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    _, g = _mse(x, t)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    assert _ptr(g) == p
    # fresh memory: >= 16 faults even in 2 MiB huge pages (8192 in 4 KiB pages)
    assert faults < 8, faults
    np.testing.assert_array_equal(g, _mse_grad(x))


def test_several_mid_sized_gradients_are_reused_without_page_faults():
    """Below 4 MiB glibc's heap would serve one such gradient again, but not two freed
    together (it trims its top): gaussian_kl's two 1 MiB gradients come from the pool."""
    mu, lv = _data(1 << 18).reshape(8192, 32), _data(1 << 18, seed=1).reshape(8192, 32) * 0.5
    g = fl.gaussian_kl(mu, lv, return_grad=True)[1]
    ptrs = [_ptr(a) for a in g]
    want = [a.copy() for a in g]
    assert not any(a.flags.owndata for a in g)
    del g
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    g = fl.gaussian_kl(mu, lv, return_grad=True)[1]
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    assert [_ptr(a) for a in g] == ptrs
    assert faults < 64, faults                  # fresh memory: 512 faults (4 KiB pages)
    for a, w in zip(g, want):
        np.testing.assert_array_equal(a, w)


def test_the_pool_keeps_at_most_max_owners():
    kept = []
    for k in range(_pool.MAX_OWNERS + 8):     # a new size each call, every third kept alive
        x = _data((64 << 10) // 4 + 1024 * k, seed=k)
        _, g = _mse(x)
        np.testing.assert_array_equal(g, _mse_grad(x))
        if k % 3 == 0:
            kept.append((x, g))
        assert len(_pool._owners) <= _pool.MAX_OWNERS
    for x, g in kept:
        np.testing.assert_array_equal(g, _mse_grad(x))


def test_small_gradients_are_plain_arrays():
    _, g = _mse(_data(1000))
    assert g.flags.owndata
    assert _pool.held_bytes() == 0


def test_the_limit_bounds_the_pool():
    fl.set_pool_limit(20 << 20)              # two 8 MiB buffers fit, a third does not
    xs = [_data(seed=s) for s in range(3)]
    gs = [_mse(x)[1] for x in xs]
    assert _pool.held_bytes() == 16 << 20
    assert gs[2].flags.owndata               # past the limit: np.empty
    for x, g in zip(xs, gs):
        np.testing.assert_array_equal(g, _mse_grad(x))
    del gs
    _, g = _mse(_data(3 * N))                # 24 MiB > the limit
    assert g.flags.owndata and _pool.held_bytes() <= 20 << 20
    _, g = _mse(_data(2 * N))                # 16 MiB: the free ones make room
    assert not g.flags.owndata and _pool.held_bytes() == 16 << 20
    fl.set_pool_limit(0)                     # off: everything forgotten, fresh arrays
    assert _pool.held_bytes() == 0
    _, g2 = _mse(_data(2 * N))
    assert g2.flags.owndata and not np.shares_memory(g, g2)


def test_release_memory_keeps_gradients_in_use_valid():
    x1, x2 = _data(seed=1), _data(seed=2)
    _, g1 = _mse(x1)
    _, g2 = _mse(x2)
    del g2
    assert fl.release_memory() == 8 << 20    # g2's buffer; g1's is in use
    assert _pool.held_bytes() == 0
    np.testing.assert_array_equal(g1, _mse_grad(x1))
    g1[...] = 7.0                             # still mapped and writable
    assert (g1 == 7.0).all()
    _, g3 = _mse(x2)
    assert not np.shares_memory(g1, g3)
    assert fl.release_memory() == 0


def test_set_pool_limit_checks_its_argument():
    for bad in (1.5, "1", True, None):
        with pytest.raises(TypeError, match="nbytes"):
            fl.set_pool_limit(bad)
    with pytest.raises(ValueError, match="nbytes"):
        fl.set_pool_limit(-1)
    assert fl.set_pool_limit(np.int64(1 << 20)) == _pool.DEFAULT_LIMIT


def test_pickled_gradient_is_an_independent_copy():
    x = _data()
    _, g = _mse(x)
    expect = g.copy()
    for proto in (2, pickle.HIGHEST_PROTOCOL):
        h = pickle.loads(pickle.dumps(g, protocol=proto))
        assert h.flags.c_contiguous and h.flags.writeable and not np.shares_memory(g, h)
        del g
        _, g = _mse(_data(seed=7))
        np.testing.assert_array_equal(h, expect)
        _, g = _mse(x)


def test_threads_share_the_pool_safely():
    xs = [_data(seed=s) for s in range(4)]
    want = [_mse_grad(x) for x in xs]
    errors = []

    def work(k):
        try:
            prev = None
            for i in range(12):
                j = (k + i) % 4
                _, g = _mse(xs[j])
                if prev is not None:             # the previous one, alive during the call
                    np.testing.assert_array_equal(prev[1], want[prev[0]])
                np.testing.assert_array_equal(g, want[j])
                prev = (j, g)
        except Exception as e:                  # reported in the main thread
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors[0]
    assert _pool.held_bytes() <= _pool.DEFAULT_LIMIT


def _child(conn, x, inherited):
    held_at_start = _pool.held_bytes()
    inherited[...] = -1.0                     # would show in the parent if memory were shared
    _, g = _mse(x)
    g[...] = -1.0
    del g
    _, g = _mse(x)
    conn.send((held_at_start, float(g[0]), float(2 * x[0] / x.size)))
    conn.close()


def test_a_forked_child_does_not_share_pooled_buffers():
    ctx = multiprocessing.get_context("fork")
    x = _data()
    _, g = _mse(x)
    _, spare = _mse(_data(seed=3))
    del spare                                  # a free buffer the child could have reused
    expect = g.copy()
    a, b = ctx.Pipe()
    p = ctx.Process(target=_child, args=(b, x, g))
    p.start()
    held, g0, want0 = a.recv()
    p.join(60)
    assert p.exitcode == 0
    assert held == 0                           # the child starts with an empty pool
    assert g0 == pytest.approx(want0, rel=1e-6)
    np.testing.assert_array_equal(g, expect)
    _, g2 = _mse(_data(seed=3))              # the parent's pool still works
    assert not np.shares_memory(g, g2)
