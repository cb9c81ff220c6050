"""SciPy's BLAS, where NumPy's matmul is not enough: out += a @ b (gemm with beta = 1),
x @ x.T as one triangle (syrk: half the products) and a product by such a triangle (symm).

linear_cross_entropy: out = a @ b, or out += a @ b, through one BLAS library.

With SciPy installed (an optional dependency) every product goes through SciPy's BLAS
wrappers: the weight's gradient accumulates over blocks of tokens in one call, and no
product alternates with NumPy's BLAS, a second OpenBLAS whose idle threads keep spinning
for a while after each product and so take cores from the other library's threads.
Without SciPy: NumPy's matmul, accumulating a few rows of out at a time through a small
temporary (an extra pass over out and many small products: the whole call with gradients
measured 1.10x slower at 1024 x 1024 x 128256, default blocks)."""
import collections
import functools

import numpy as np

# Rows of out per product of the NumPy fallback: a (rows, n) temporary of this many bytes
# stays in the last-level cache until it is added.
_ACCUMULATE_BYTES = 4 << 20


Blas = collections.namedtuple("Blas", "gemm syrk symm")


@functools.lru_cache(maxsize=None)
def scipy_blas(dtype):
    """SciPy's ?gemm, ?syrk and ?symm for dtype, or None without SciPy."""
    try:
        from scipy.linalg import blas
    except ImportError:
        return None
    return Blas(*blas.get_blas_funcs(("gemm", "syrk", "symm"), dtype=np.dtype(dtype)))


def _fortran(m):
    """(f, trans): a Fortran-ordered array f with op(f) = m (f = m.T of a C-ordered m,
    transposed back by the BLAS call), copying only when m is neither."""
    if m.flags.f_contiguous:
        return m, False
    if m.flags.c_contiguous:
        return m.T, True
    return np.asfortranarray(m), False


def product(out, a, b, accumulate=False):
    """out = a @ b (accumulate: out += a @ b) for a (m, k), b (k, n), out (m, n) of one dtype."""
    if out.size == 0 or a.shape[1] == 0:        # f2py rejects empty operands
        if not accumulate:
            out[...] = 0
        return
    funcs = scipy_blas(out.dtype)
    if funcs is not None:
        # BLAS is column-major: a C-ordered out is the Fortran array out.T = b.T @ a.T
        c, x, y = (out.T, b.T, a.T) if out.flags.c_contiguous else (out, a, b)
        (fx, tx), (fy, ty) = _fortran(x), _fortran(y)
        res = funcs.gemm(1.0, fx, fy, beta=1.0 if accumulate else 0.0, c=c, overwrite_c=True,
                         trans_a=tx, trans_b=ty)
        _into(c, res)
        return
    if not accumulate:
        np.matmul(a, b, out=out)
        return
    step = max(1, _ACCUMULATE_BYTES // (max(1, out.shape[1]) * out.itemsize))
    tmp = np.empty((min(step, out.shape[0]), out.shape[1]), dtype=out.dtype)
    for i in range(0, out.shape[0], step):
        t = tmp[:min(step, out.shape[0] - i)]
        np.matmul(a[i:i + step], b, out=t)
        out[i:i + step] += t


def lower_gram(syrk, x, out):
    """out's lower triangle (diagonal included) = x @ x.T's, by syrk (half the products of
    a gemm; NumPy sends x @ x.T to syrk too but then mirrors the triangle serially); out's
    other entries are left as they were. out: C-ordered."""
    if x.shape[1] == 0 or out.size == 0:         # empty vectors: zeros (BLAS rejects k = 0)
        out[...] = 0
        return
    # in Fortran order out.T's upper triangle is out's lower one, and x x^T = (x^T)^T x^T
    _into(out.T, syrk(1.0, x.T, trans=1, lower=0, c=out.T, overwrite_c=True, beta=0.0))


def lower_symm(symm, s, x, out):
    """out = S @ x for the symmetric S whose lower triangle s holds (lower_gram's); s, x and
    out C-ordered."""
    if out.size == 0:                            # f2py rejects empty operands
        return
    # in Fortran order out.T = x^T S, S's lower triangle being s.T's upper one
    _into(out.T, symm(1.0, s.T, x.T, side=1, lower=0, c=out.T, overwrite_c=True, beta=0.0))


def _into(c, res):
    """c = res where f2py had to work on a copy of c (c neither C- nor Fortran-ordered)."""
    if not np.shares_memory(res, c):
        c[...] = res
