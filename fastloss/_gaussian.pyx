# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels for the elementwise Gaussian losses (diagonal Gaussian KL, VAE
reconstruction, Gaussian NLL) and for mvn_kl (one small pair of covariances per item).

Each function takes already-checked, C-contiguous flat arrays (fastloss/_checks.py
does the checking) and runs its blocks of rows or elements on the thread pool
(_runtime.run_blocks): a job struct holds the loop's arguments and a block function
does one block's work, C functions from csrc/fl_gaussian.h picked for this CPU's
SIMD level. Sums are float64 per fixed-size block, added in block order, so results
are identical for any number of threads.
"""
from cython cimport floating
from libc.stdint cimport int64_t

from ._blocks cimport ELEMENT_BLOCK as EBLK, STREAM_RUN, n_blocks, ordered_sum, rows_per_block, scratch_row
from ._runtime cimport block_fn, run_blocks, stream_output

import numpy as np

cdef extern from "fl_gaussian.h" nogil:
    void fl_gaussian_set_level(int level)
    # One declaration per kernel for both dtypes (csrc/fl_common.h's FL_CALL): the
    # kernel's T pointers are void pointers here, its T scalars doubles.
    double fl_gauss_kl_block(const void *mp, const void *lvp, const void *mq, const void *lvq,
                             void *gmp, void *glvp, void *gmq, void *glvq, void *lelem, int64_t n,
                             double gscale, int stream)
    double fl_recon_block(const void *r, const void *x, int mode, void *g, void *lelem, int64_t n,
                          double gscale, int stream)
    double fl_nll_block(const void *x, const void *t, const void *var, double vconst, void *gx, void *gv,
                        void *lelem, int64_t n, double eps, double cst, double gscale, double *gv_sum,
                        int *neg, int stream)
    ctypedef struct fl_mvn_out:
        void *g[4]
        int wide[4]
    int64_t fl_mvn_scratch(int64_t d)
    int fl_mvn_kl_one(const void *mp, const void *sp, const void *mq, const void *sq, int64_t d,
                      double tol_p, double tol_q, double gscale, const fl_mvn_out *out, int64_t e,
                      double *loss, double *scratch)


def set_level(int level):
    fl_gaussian_set_level(level)


# Which kernel _sum_items runs.
cdef enum _Kind:
    _KL
    _RECON
    _NLL


# The arguments of _sum_items (which see), its T pointers as void pointers.
cdef struct ItemsJob:
    _Kind kind
    int64_t n, width, count, per
    bint rows
    const void *a
    const void *b
    const void *c
    const void *d
    void *g0
    void *g1
    void *g2
    void *g3
    void *le
    double *row_loss
    int mode
    double eps, cst, gscale
    double *part
    unsigned char *neg
    int stream                          # write the gradients with streaming stores (stream_output)


cdef void _items_block(void *job, int64_t blk, int tid, const floating *tag) noexcept nogil:
    """Items blk * per .. of _sum_items; their sum into part[blk]."""
    cdef ItemsJob *j = <ItemsJob *>job
    cdef const floating *a = <const floating *>j.a
    cdef const floating *b = <const floating *>j.b
    cdef const floating *c = <const floating *>j.c
    cdef const floating *d = <const floating *>j.d
    cdef floating *g0 = <floating *>j.g0
    cdef floating *g1 = <floating *>j.g1
    cdef floating *g2 = <floating *>j.g2
    cdef floating *g3 = <floating *>j.g3
    cdef floating *le = <floating *>j.le
    cdef int64_t i, s, m
    cdef double acc = 0.0, v, gsum
    cdef int neg = 0
    for i in range(blk * j.per, min(blk * j.per + j.per, j.count)):
        s = i * j.width
        m = min(j.width, j.n - s)
        if j.kind == _KL:
            v = fl_gauss_kl_block(a + s, b + s, c + s if c else NULL, d + s if d else NULL,
                                  g0 + s if g0 else NULL, g1 + s if g1 else NULL, g2 + s if g2 else NULL,
                                  g3 + s if g3 else NULL, le + s if le else NULL, m, j.gscale, j.stream)
        elif j.kind == _RECON:
            v = fl_recon_block(a + s, b + s, j.mode, g0 + s if g0 else NULL, le + s if le else NULL, m,
                               j.gscale, j.stream)
        elif j.rows:
            gsum = 0.0
            v = fl_nll_block(a + s, b + s, NULL, c[i], g0 + s if g0 else NULL, NULL, le + s if le else NULL,
                             m, j.eps, j.cst, j.gscale, &gsum, NULL, j.stream)
            if g1:
                g1[i] = <floating> gsum
        else:
            v = fl_nll_block(a + s, b + s, c + s, 0, g0 + s if g0 else NULL, g1 + s if g1 else NULL,
                             le + s if le else NULL, m, j.eps, j.cst, j.gscale, NULL, &neg, j.stream)
            if neg and j.neg:
                j.neg[blk] = 1
        if j.row_loss:
            j.row_loss[i] = v
        acc = acc + v
    j.part[blk] = acc


cdef double _sum_items(_Kind kind, int64_t n, int64_t D, bint rows, const floating *a, const floating *b,
                       const floating *c, const floating *d, floating *g0, floating *g1, floating *g2,
                       floating *g3, floating *le, double *row_loss, int mode, double eps, double cst,
                       double gscale, int n_threads, bint *negative=NULL):
    """Sum of one Gaussian loss over flat arrays of n elements, in float64. The arrays are
    cut into items: rows of D elements (rows: a result per row, into row_loss when given)
    or blocks of ELEMENT_BLOCK elements. rows_per_block(D) rows (or one block) make a work
    item, whose sum goes to part[]; the parts are added in order, so the result does not
    depend on the thread count. Inputs a..d and gradients g0..g3 are the kernel's in its
    order; _NLL with rows: c holds one variance per row and g1 gets the row's sum; _NLL
    without: *negative (if given) gets whether an entry of c is below 0."""
    cdef int64_t width = D if rows else EBLK
    cdef int64_t count = (n // D if D > 0 else 0) if rows else n_blocks(n, EBLK)
    cdef int64_t per = rows_per_block(D) if rows else 1
    cdef double[::1] part = np.empty(n_blocks(count, per), dtype=np.float64)
    if count == 0:
        return 0.0
    cdef unsigned char[::1] neg = None
    cdef unsigned char *negp = NULL
    if negative:                        # a flag per work item: no write shared by threads
        neg = np.zeros(part.shape[0], dtype=np.uint8)
        negp = &neg[0]
    cdef ItemsJob job = ItemsJob(kind=kind, n=n, width=width, count=count, per=per, rows=rows, a=a, b=b, c=c,
                                 d=d, g0=g0, g1=g1, g2=g2, g3=g3, le=le, row_loss=row_loss, mode=mode, eps=eps,
                                 cst=cst, gscale=gscale, part=&part[0], neg=negp,
                                 stream=(g0 != NULL or g1 != NULL or g2 != NULL or g3 != NULL)
                                 and stream_output(n * sizeof(floating)) and width >= STREAM_RUN)
    with nogil:
        run_blocks(<block_fn>_items_block[floating], &job, part.shape[0], n_threads)
    if negative:
        negative[0] = np.any(neg)
    return ordered_sum(part)


def gauss_kl(const floating[::1] mp, const floating[::1] lvp, const floating[::1] mq,
             const floating[::1] lvq, floating[::1] gmp, floating[::1] glvp, floating[::1] gmq,
             floating[::1] glvq, int64_t D, double[::1] row_loss, floating[::1] elem_loss,
             double gscale, int n_threads):
    """Sum of the diagonal Gaussian KL over flat arrays (mq / lvq None: standard normal).
    row_loss (or None): per-row sums over rows of D elements; elem_loss (or None): per
    element. Gradients optional (None)."""
    cdef int64_t n = mp.shape[0]
    cdef bint rows = row_loss is not None
    if n == 0:
        return 0.0
    return _sum_items(_KL, n, D, rows, &mp[0], &lvp[0], &mq[0] if mq is not None else NULL,
                      &lvq[0] if lvq is not None else NULL, &gmp[0] if gmp is not None else NULL,
                      &glvp[0] if glvp is not None else NULL, &gmq[0] if gmq is not None else NULL,
                      &glvq[0] if glvq is not None else NULL,
                      &elem_loss[0] if elem_loss is not None and not rows else NULL,
                      &row_loss[0] if rows else NULL, 0, 0, 0, gscale, n_threads)


def recon(const floating[::1] r, const floating[::1] x, int mode, floating[::1] g, int64_t D,
          double[::1] row_loss, floating[::1] elem_loss, double gscale, int n_threads):
    """Sum of the reconstruction loss (mode 0: squared error, 1: BCE with logits) over flat
    arrays; row_loss / elem_loss as in gauss_kl; gradient into g (or None)."""
    cdef int64_t n = r.shape[0]
    cdef bint rows = row_loss is not None
    if n == 0:
        return 0.0
    return _sum_items(_RECON, n, D, rows, &r[0], &x[0], NULL, NULL, &g[0] if g is not None else NULL, NULL,
                      NULL, NULL, &elem_loss[0] if elem_loss is not None and not rows else NULL,
                      &row_loss[0] if rows else NULL, mode, 0, 0, gscale, n_threads)


def nll(const floating[::1] x, const floating[::1] t, const floating[::1] var, bint var_per_row,
        floating[::1] gx, floating[::1] gv, int64_t D, floating[::1] elem_loss, double eps,
        double cst, double gscale, int n_threads):
    """(Sum of PyTorch's Gaussian NLL over flat x / t, whether an entry of var is below 0).
    var: one per element, or (var_per_row, not checked) one per row of D elements, whose
    gradient gv is then the row's sum."""
    cdef int64_t n = x.shape[0]
    cdef bint negative = False
    if n == 0:
        return 0.0, False
    total = _sum_items(_NLL, n, D, var_per_row, &x[0], &t[0], &var[0], NULL, &gx[0] if gx is not None else NULL,
                       &gv[0] if gv is not None else NULL, NULL, NULL,
                       &elem_loss[0] if elem_loss is not None else NULL, NULL, 0, eps, cst, gscale, n_threads,
                       &negative)
    return total, negative


# The arguments of mvn_kl (which see), its T pointers as void pointers.
cdef struct MvnJob:
    const void *mp
    const void *sp
    const void *mq
    const void *sq
    const int64_t *idx[4]
    int64_t nb, d, per, width
    double tol_p, tol_q, gscale
    const fl_mvn_out *out
    double *loss
    signed char *status
    double *scratch


cdef void _mvn_block(void *job, int64_t blk, int tid, const floating *tag) noexcept nogil:
    """Batch elements blk * per .. of mvn_kl, each on its own."""
    cdef MvnJob *j = <MvnJob *>job
    cdef int64_t k[4]
    cdef int64_t e, m, d = j.d
    for e in range(blk * j.per, min(blk * j.per + j.per, j.nb)):
        for m in range(4):
            k[m] = j.idx[m][e] if j.idx[m] else e
        j.status[e] = fl_mvn_kl_one(<const floating *>j.mp + k[0] * d, <const floating *>j.sp + k[1] * d * d,
                                    <const floating *>j.mq + k[2] * d, <const floating *>j.sq + k[3] * d * d,
                                    d, j.tol_p, j.tol_q, j.gscale, j.out, e, &j.loss[e],
                                    j.scratch + tid * j.width)


cdef const floating *_start(const floating[::1] a):
    return &a[0] if a.shape[0] else NULL


cdef const int64_t *_index(const int64_t[::1] idx):
    return &idx[0] if idx is not None and idx.shape[0] else NULL


cdef void *_data(a):
    """Start of a C-contiguous array's data (NULL: None or empty)."""
    cdef unsigned char[::1] raw
    if a is None or a.size == 0:
        return NULL
    raw = a.reshape(-1).view(np.uint8)
    return &raw[0]


def mvn_kl(const floating[::1] mp, const floating[::1] sp, const floating[::1] mq, const floating[::1] sq,
           int64_t d, int64_t nb, idx, double tol_p, double tol_q, grads, double gscale,
           double[::1] loss, signed char[::1] status, int n_threads):
    """KL of nb pairs of d-dimensional normals (d small): per-element losses into loss,
    0 into status, or 1 / 2 where cov_p / cov_q is not finite, symmetric (to tol_p /
    tol_q times its largest entry) and positive definite (that element's loss and
    gradients are not written). Inputs are flat stacks of their own matrices (vectors);
    idx: four int64 arrays (or None: the batch element itself), per batch element the
    index of its matrix (vector) in each. grads: None, or four C-contiguous arrays (or None) of nb matrices
    (vectors), in the inputs' dtype or float64, that get the gradients times gscale."""
    cdef fl_mvn_out out
    cdef int m
    if nb == 0:
        return
    cdef MvnJob job
    job.mp, job.sp = <const floating *>_start(mp), <const floating *>_start(sp)
    job.mq, job.sq = <const floating *>_start(mq), <const floating *>_start(sq)
    job.nb, job.d, job.per = nb, d, rows_per_block(d * d * d)
    job.width = scratch_row(max(fl_mvn_scratch(d), 1) * 8, 8)
    job.tol_p, job.tol_q, job.gscale = tol_p, tol_q, gscale
    job.out, job.loss, job.status = NULL, &loss[0], &status[0]
    for m in range(4):
        job.idx[m] = _index(idx[m])
        if grads is not None:
            out.g[m] = _data(grads[m])
            out.wide[m] = grads[m] is not None and grads[m].dtype == np.float64
    if grads is not None:
        job.out = &out
    cdef double[:, ::1] scratch = np.empty((n_threads, job.width), dtype=np.float64)
    job.scratch = &scratch[0, 0]
    with nogil:
        run_blocks(<block_fn>_mvn_block[floating], &job, n_blocks(nb, job.per), n_threads)
