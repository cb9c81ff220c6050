"""The one BLAS product NumPy's matmul cannot do: out += a @ b in place (gemm with beta = 1).

linear_cross_entropy accumulates the weight's gradient over blocks of tokens. SciPy's BLAS
wrappers (an optional dependency) do it in one call; without SciPy a few rows of out at a
time go through a small temporary, which costs an extra pass over out and many small
products (the whole linear_cross_entropy call with gradients measured 1.10x slower at
1024 x 1024 x 128256, default blocks)."""
import numpy as np

# Rows of out per product of the NumPy fallback: a (rows, n) temporary of this many bytes
# stays in the last-level cache until it is added.
_ACCUMULATE_BYTES = 4 << 20


def _scipy_gemm(dtype):
    """SciPy's ?gemm for dtype, or None without SciPy."""
    try:
        from scipy.linalg import blas
    except ImportError:
        return None
    return blas.get_blas_funcs("gemm", dtype=dtype)


def add_product(out, a, b):
    """out += a @ b for C-contiguous out (m, n), F-contiguous a (m, k) (a transposed
    C-contiguous array) and C-contiguous b (k, n), all of out's dtype."""
    gemm = _scipy_gemm(out.dtype)
    if gemm is not None:
        # in Fortran order the call is out.T += b.T @ a.T, every operand without a copy
        res = gemm(1.0, b.T, a, beta=1.0, c=out.T, overwrite_c=True, trans_b=True)
        if not np.shares_memory(res, out):       # out not C-contiguous: f2py worked on a copy
            out[...] = res.T
        return
    step = max(1, _ACCUMULATE_BYTES // (out.shape[1] * out.itemsize))
    tmp = np.empty((min(step, out.shape[0]), out.shape[1]), dtype=out.dtype)
    for i in range(0, out.shape[0], step):
        t = tmp[:min(step, out.shape[0] - i)]
        np.matmul(a[i:i + step], b, out=t)
        out[i:i + step] += t
