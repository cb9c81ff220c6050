"""Tolerances, result checks, finite differences and PyTorch leaves shared by the tests."""
import numpy as np
import pytest

# Tolerances against the float64 oracles.
TOL = {
    np.dtype(np.float64): dict(rtol=1e-12, atol=1e-13),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
}
# Gradients of float32 kernels: elementwise, relative to the largest entry.
GRAD_TOL = {
    np.dtype(np.float64): dict(rtol=1e-11, atol=1e-13),
    np.dtype(np.float32): dict(rtol=1e-5, atol=1e-6),
}


def assert_close(actual, expected, dtype, grad=False):
    """Compare a kernel result (any float dtype) against a float64 oracle."""
    tol = (GRAD_TOL if grad else TOL)[np.dtype(dtype)]
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0) if grad else 0.0
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] + tol["rtol"] * scale)


def fd_grad(f, x, h=1e-3):
    """4th-order central finite differences of the scalar function f at float64 x,
    one element at a time: (-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / 12h."""
    x = np.array(x, dtype=np.float64)
    g = np.empty_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        v = flat[i]
        vals = []
        for s in (2, 1, -1, -2):
            flat[i] = v + s * h
            vals.append(float(f(x)))
        flat[i] = v
        gflat[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return g


def check_loss_and_grads(fast, oracle, dtype):
    """(loss, grad or tuple of grads) of a kernel against the oracle's: dtypes and values."""
    loss, grads = fast
    rloss, rgrads = oracle
    assert np.asarray(loss).dtype == dtype
    assert_close(loss, rloss, dtype)
    if not isinstance(grads, tuple):
        grads, rgrads = (grads,), (rgrads,)
    assert len(grads) == len(rgrads)
    for g, rg in zip(grads, rgrads):
        assert g.dtype == dtype
        assert_close(g, rg, dtype, grad=True)


def torch_leaf(a, grad=True):
    """a as a float64 torch tensor (skips the test when torch is not installed)."""
    torch = pytest.importorskip("torch")
    return torch.tensor(np.asarray(a), dtype=torch.float64, requires_grad=grad)


def special_rows(C):
    """Ten float64 rows of C classes for np.argmax's rule and logsumexp's special values:
    ties, -inf, +inf, NaN, a maximum in a middle chunk and a rising row, each on either side."""
    far = C - 1
    x = np.zeros((10, C))
    x[0, [1, far]] = 3.0                          # a tie: the first
    x[1, :] = -np.inf                             # all -inf: index 0, lse -inf
    x[2, ::2] = -np.inf                           # -inf entries are legal
    x[2, far] = 5.0
    x[3, [2, far]] = np.nan                       # the first NaN
    x[3, 1] = 7.0
    x[4, far] = np.nan                            # a NaN after the maximum
    x[4, 0] = 9.0
    x[5, [1, far]] = np.inf                       # +inf: the first, lse inf
    x[6, far // 2] = 2.0                          # the maximum in a middle chunk, tied later
    x[6, far] = 2.0
    x[7, 0] = -np.inf                             # -inf first, then the zeros: index 1
    x[8] = np.linspace(-5, 5, C)                  # rising: the running max grows every group
    x[8, far // 3] = 5.0                          # ... tied with the last, earlier
    x[9, :C // 2 + 1] = -np.inf                   # a first group of -inf (the exact path)
    x[9, far] = 1.0
    return x


def check_streamed_grads(call, shapes, dtype):
    """call(grad_out) -> (loss, gradients), grad_out None or arrays of the gradients'
    `shapes` (a tuple; one array where there is one shape): with every output streamed (the
    threshold at 0), the same bits as the plain stores of the default threshold, each buffer
    at several offsets from a 64-byte line (and not all at the same one), nothing written
    outside a buffer."""
    from fastloss import _runtime
    want = call(None)
    want_g = want[1] if isinstance(want[1], tuple) else (want[1],)
    item = np.dtype(dtype).itemsize
    sizes = [int(np.prod(s)) for s in shapes]
    old = _runtime.set_stream_bytes(0)
    try:
        for off in range(64 // item + 1):
            mems, bufs = [], []
            for i, (s, n) in enumerate(zip(shapes, sizes)):
                mem = np.full(n + 256 // item, 7, dtype)
                o = (-mem.ctypes.data % 64) // item + (off + 3 * i) % (64 // item + 1)
                mems.append((mem, o, n))
                bufs.append(mem[o:o + n].reshape(s))
            got = call(tuple(bufs) if len(bufs) > 1 else bufs[0])
            got_g = got[1] if isinstance(got[1], tuple) else (got[1],)
            np.testing.assert_array_equal(got[0], want[0])
            for g, w, (mem, o, n) in zip(got_g, want_g, mems):
                np.testing.assert_array_equal(g, w)
                assert (mem[:o] == 7).all() and (mem[o + n:] == 7).all()
    finally:
        _runtime.set_stream_bytes(old)
