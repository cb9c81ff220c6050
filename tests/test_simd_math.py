"""Error bounds of the vectorised exp/log/log1p in csrc/fl_vec.h (documented there),
on every SIMD path: float32 against float64 math, float64 against long double."""
import numpy as np
import pytest

from fastloss import _classification as _k

ULP_BOUND = {"exp": 2.0, "exp_le0": 2.0, "log": 2.0, "log1p": 3.0, "log1p_unit": 2.0}   # as documented in csrc/fl_vec.h


def _run(fn, x):
    y = np.empty_like(x)
    _k.vector_math(fn, x, y)
    return y


def _max_ulp(x, y, fn):
    ref_fn = {"exp": np.exp, "exp_le0": np.exp, "log": np.log, "log1p": np.log1p, "log1p_unit": np.log1p}[fn]
    if x.dtype == np.float32:
        ref = ref_fn(x.astype(np.float64))
    else:
        if np.finfo(np.longdouble).nmant <= 52:
            pytest.skip("long double is not wider than double on this platform")
        ref = ref_fn(x.astype(np.longdouble))
    ulp = np.spacing(np.abs(ref).astype(x.dtype)).astype(np.float64)
    err = np.abs(y.astype(np.float64) - ref.astype(np.float64)) / ulp
    return float(err.max())


def _grid(lo, hi, dtype, n=200_001, seed=0):
    rng = np.random.default_rng(seed)
    x = np.concatenate([np.linspace(lo, hi, n), rng.uniform(lo, hi, n)])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_ulp(simd, dtype):
    lo, hi = (-87.33, 88.72) if dtype == np.float32 else (-708.39, 709.78)
    x = _grid(lo, hi, dtype)
    assert _max_ulp(x, _run("exp", x), "exp") <= ULP_BOUND["exp"]
    small = _grid(-1.0, 1.0, dtype, seed=1)
    assert _max_ulp(small, _run("exp", small), "exp") <= ULP_BOUND["exp"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_le0_ulp(simd, dtype):
    """exp for x <= 0 (softmax rows; a table form at AVX-512 float32) over [log(smallest
    normal), 0], around 0, and flushed to +0 below, -inf included."""
    lo = -87.33 if dtype == np.float32 else -708.39
    for x in (_grid(lo, 0.0, dtype), _grid(-1.0, 0.0, dtype, seed=1), -np.abs(_grid(-1e-3, 1e-3, dtype))):
        assert _max_ulp(x, _run("exp_le0", x), "exp_le0") <= ULP_BOUND["exp_le0"]
    under = np.array([-87.4, -100.0, -1e30, -np.inf] if dtype == np.float32 else [-708.5, -1e300, -np.inf],
                     dtype=dtype)
    np.testing.assert_array_equal(_run("exp_le0", under), 0.0)
    np.testing.assert_array_equal(_run("exp_le0", np.array([0.0, -0.0], dtype=dtype)), 1.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_ulp(simd, dtype):
    info = np.finfo(dtype)
    rng = np.random.default_rng(2)
    # every binade, subnormals included, plus the region around 1
    e = rng.uniform(np.log2(float(info.smallest_subnormal)), np.log2(float(info.max)), 400_000)
    x = np.concatenate([np.exp2(e), rng.uniform(0.5, 2.0, 200_000)]).astype(dtype)
    x = x[(x > 0) & np.isfinite(x)]
    assert _max_ulp(x, _run("log", x), "log") <= ULP_BOUND["log"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_ulp(simd, dtype):
    rng = np.random.default_rng(3)
    tiny = np.exp2(rng.uniform(-120, -1, 200_000)) * rng.choice([-1, 1], 200_000)
    x = np.concatenate([tiny, rng.uniform(-0.999, 0, 100_000), np.exp2(rng.uniform(-1, 100, 200_000))])
    x = x.astype(dtype)
    assert _max_ulp(x, _run("log1p", x), "log1p") <= ULP_BOUND["log1p"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_unit_ulp(simd, dtype):
    rng = np.random.default_rng(4)
    x = np.concatenate([np.exp2(rng.uniform(-140, 0, 200_000)), rng.uniform(0, 1, 200_000), [0.0, 1.0]])
    x = x.astype(dtype)
    assert _max_ulp(x, _run("log1p_unit", x), "log1p_unit") <= ULP_BOUND["log1p_unit"]
    assert np.isnan(_run("log1p_unit", np.array([np.nan], dtype=dtype))[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values(simd, dtype):
    inf, nan = np.inf, np.nan
    cases = {
        "exp": ([-inf, inf, nan, 0.0, -0.0, -1e6, 1e6], [0.0, inf, nan, 1.0, 1.0, 0.0, inf]),
        "log": ([-inf, inf, nan, 0.0, -0.0, -1.0, 1.0], [nan, inf, nan, -inf, -inf, nan, 0.0]),
        "log1p": ([-inf, inf, nan, 0.0, -0.0, -1.0, -2.0], [nan, inf, nan, 0.0, -0.0, -inf, nan]),
    }
    for fn, (x, expected) in cases.items():
        got, expected = _run(fn, np.array(x, dtype=dtype)), np.array(expected, dtype=dtype)
        np.testing.assert_array_equal(got, expected, err_msg=fn)
        signed = ~np.isnan(expected)   # e.g. log1p(-0) is -0
        np.testing.assert_array_equal(np.signbit(got[signed]), np.signbit(expected[signed]), err_msg=fn)


@pytest.mark.parametrize("fn", ["exp", "log", "log1p"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lane_bits_do_not_depend_on_the_vector(simd, fn, dtype):
    """exp and log take a short path for vectors of ordinary lanes (all in exp's plain
    range; all positive normal numbers for log): a lane's bits must not change when a
    special value (0, inf, NaN, a subnormal, a negative) shares its vector."""
    rng = np.random.default_rng(5)
    x = (rng.uniform(-20, 20, 4096) if fn == "exp" else np.exp2(rng.uniform(-60, 60, 4096))).astype(dtype)
    specials = np.array([0.0, np.inf, -np.inf, np.nan, -1.0, 1e-310 if dtype == np.float64 else 1e-40,
                         1e4], dtype=dtype)
    mixed = x.copy()
    mixed[::7] = np.resize(specials, mixed[::7].shape)
    keep = np.ones(x.shape, bool)
    keep[::7] = False
    np.testing.assert_array_equal(_run(fn, mixed)[keep], _run(fn, x)[keep])


def test_exp_flushes_below_smallest_normal(simd):
    x = np.array([-87.4, -100.0, -1e30], dtype=np.float32)
    np.testing.assert_array_equal(_run("exp", x), 0.0)
    x = np.array([-708.5, -745.2], dtype=np.float64)
    np.testing.assert_array_equal(_run("exp", x), 0.0)


def test_tail_lengths(simd):
    """Every length 0..40 exercises the partial-vector tail code."""
    for n in range(41):
        x = np.linspace(-3, 3, n)
        np.testing.assert_allclose(_run("exp", x), np.exp(x), rtol=1e-15)
        xf = x.astype(np.float32)
        np.testing.assert_allclose(_run("exp", xf), np.exp(xf.astype(np.float64)), rtol=3e-7)
