"""cross_entropy with labels on rows of few classes: up to 48 classes in float32
(FL_SMALL_C), 32 in float64 (FL_SMALL_C_F64), the kernel that reads a block of W rows as
whole vectors, transposes it in registers (tiles of W classes) and writes the gradient back
the same way; above that up to 256 classes (FL_MID_C), the blocked row kernel (each step
across a block of W rows, the horizontal reductions by transposition), whose ignored rows
and rows with a NaN or an infinite max take the row path, which the classes above take.
Every row count around the vector widths (2, 4, 8, 16 rows), class counts below, at and
above one tile and each kernel's limits, every option, special values, in place, on every
SIMD level."""
import numpy as np
import pytest

import fastloss as fl
import fastloss.reference as ref
from helpers import assert_close

DTYPES = [np.float32, np.float64]
CLASSES = [1, 2, 3, 7, 8, 10, 16, 17, 31, 32, 33, 47, 48, 49, 63, 64, 65, 100, 255, 256, 257]
ROWS = [1, 3, 16, 17, 37]


def _case(rng, n, C, dtype, ignore):
    x = (rng.standard_normal((n, C)) * 3).astype(dtype)
    y = rng.integers(0, C, n)
    if ignore:
        y[::3] = -100
    return x, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", CLASSES)
@pytest.mark.parametrize("n", ROWS)
def test_small_rows_match_oracle(simd, rng, dtype, C, n):
    for opts in [dict(), dict(ignore=True, weighted=True, label_smoothing=0.2, z_loss=1e-2),
                 dict(ignore=True, label_smoothing=0.1), dict(weighted=True)]:
        opts = dict(opts)
        x, y = _case(rng, n, C, dtype, opts.pop("ignore", False))
        if opts.pop("weighted", False):
            opts["weight"] = rng.uniform(0.1, 2.0, C)
        kw = dict(reduction="none", return_grad=True, **opts)
        loss, g = fl.cross_entropy(x, y, **kw)
        rloss, rg = ref.cross_entropy(x, y, **kw)
        assert_close(loss, rloss, dtype)
        assert_close(g, rg, dtype, grad=True)
        assert np.all(loss[y == -100] == 0) and np.all(g[y == -100] == 0)
        # in place (grad_out=x): the same bits
        x2 = x.copy()
        loss2, g2 = fl.cross_entropy(x2, y, grad_out=x2, **kw)
        assert g2 is x2
        np.testing.assert_array_equal(loss2, loss)
        np.testing.assert_array_equal(g2, g)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [3, 10, 17, 32, 48, 49, 100, 256])
def test_small_rows_do_not_depend_on_their_block(simd, rng, dtype, C):
    """A row's loss and gradient are the same bits wherever it sits in a block of W rows
    (its lane), and for any thread count; the rows around it are left as they are."""
    x, y = _case(rng, 70, C, dtype, True)
    loss, g = fl.cross_entropy(x, y, reduction="none", return_grad=True)
    for k in [1, 5, 13]:
        lk, gk = fl.cross_entropy(x[k:k + 40], y[k:k + 40], reduction="none", return_grad=True)
        np.testing.assert_array_equal(lk, loss[k:k + 40])
        np.testing.assert_array_equal(gk, g[k:k + 40])
    big = np.tile(x, (600, 1))
    yb = np.tile(y, 600)
    with fl.threads(1):
        one = fl.cross_entropy(big, yb, return_grad=True)
    with fl.threads(2):
        two = fl.cross_entropy(big, yb, return_grad=True)
    assert one[0] == two[0]
    np.testing.assert_array_equal(one[1], two[1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [3, 10, 32, 49, 100, 256])
def test_small_rows_special_values(simd, dtype, C):
    """A NaN or +inf in a row, or a row of only -inf: that row's loss and gradient are NaN
    (its neighbours in the block are not touched), unless the row is ignored (zero); a -inf
    logit is a class of probability 0."""
    x = np.zeros((20, C), dtype)
    x[:, 0] = 1.0
    x[2, C - 1] = np.nan
    x[5, C // 2] = np.inf
    x[7] = -np.inf
    x[9, C - 1] = -np.inf
    x[11, 0] = np.nan
    y = np.zeros(20, np.int64)
    y[11] = -100
    loss, g = fl.cross_entropy(x, y, reduction="none", return_grad=True)
    bad = [2, 5, 7]
    assert np.all(np.isnan(loss[bad])) and np.all(np.isnan(g[bad]))
    assert loss[11] == 0 and np.all(g[11] == 0)
    good = [r for r in range(20) if r not in bad + [11]]
    rl, rg = ref.cross_entropy(x[good], y[good], reduction="none", return_grad=True)
    assert_close(loss[good], rl, dtype)
    assert_close(g[good], rg, dtype, grad=True)
    if C > 1:
        assert g[9, C - 1] == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [2, 10, 32, 49, 100, 256])
def test_small_rows_stats(simd, rng, dtype, C):
    x, y = _case(rng, 37, C, dtype, True)
    x[4, 1] = x[4, 0]
    x[6, [1, C - 1]] = x[6].max() + 1             # a tie at the max: the first maximum
    loss, g, st = fl.cross_entropy(x, y, reduction="none", return_grad=True, return_stats=True)
    x64 = x.astype(np.float64)
    m = x64.max(-1)
    lse = np.log(np.exp(x64 - m[:, None]).sum(-1)) + m
    assert_close(st.lse, lse, dtype)
    np.testing.assert_array_equal(st.argmax, np.argmax(x, -1))
    np.testing.assert_array_equal(st.correct, (np.argmax(x, -1) == y) & (y != -100))
    l2, g2 = fl.cross_entropy(x, y, reduction="none", return_grad=True)
    np.testing.assert_array_equal(l2, loss)
    np.testing.assert_array_equal(g2, g)
