# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels for the classification losses.

Each function takes already-checked, C-contiguous arrays (fastloss/_checks.py
does the checking) and runs its blocks of rows or elements on the thread pool
(_runtime.run_blocks): a job struct holds the loop's arguments and a block
function does one block's work, a C function from csrc/fl_classification.h
picked for this CPU's SIMD level. Per-row losses come back in float64;
elementwise losses are summed in float64 per fixed-size block, and the partial
sums are added in block order, so results are identical for any number of threads.
"""
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t, uint16_t

from ._blocks cimport ELEMENT_BLOCK as EBLK, ROW_WORK, n_blocks, ordered_sum, rows_per_block, scratch_row
from ._half cimport fl_float_to_half, fl_half_to_float
from ._runtime cimport block_fn, run_blocks

import numpy as np

cdef extern from "fl_classification.h" nogil:
    ctypedef struct fl_xent_params:
        int64_t C
        int64_t ignore_index
        const void *class_weight
        double weight_sum
        double smoothing
        double z_loss
        double softcap
        double gscale
    ctypedef struct fl_xent_stats:
        double *lse
        int64_t *argmax
        unsigned char *correct
    int FL_MID_C
    int FL_CHUNK
    int FL_MAX_CHUNKS
    double fl_label_row_loss(const fl_xent_params *p, double wy, double m, double logs,
                             double xy, double sd, double *a)
    void fl_classification_set_half_level(int level)
    # One declaration per kernel for both dtypes (csrc/fl_common.h's FL_CALL): the
    # kernel's T pointers are void pointers here, its T scalars doubles.
    void fl_xent_label_rows(const void *x, void *g, int64_t n, const int64_t *y, const fl_xent_params *p,
                            double *loss, void *scratch, const fl_xent_stats *st)
    void fl_xent_label_cols(const void *x, void *g, int64_t C, int64_t D, int64_t d0, int64_t d1,
                            const int64_t *y, const fl_xent_params *p, double *loss,
                            const fl_xent_stats *st)
    void fl_xent_prob_rows(const void *x, const void *t, void *g, int64_t n, const fl_xent_params *p,
                           double *loss, void *scratch, const fl_xent_stats *st)
    void fl_softmax_rows(const void *x, void *out, int64_t n, int64_t C, int log_out, double *lse,
                         double *shift)
    # float32 only: label rows of half values, read without a float32 copy of the block
    void fl_xent_label_half(int kind, const uint16_t *x, uint16_t *g, int64_t n, const int64_t *y,
                            const fl_xent_params *p, double *loss, float *scratch,
                            const fl_xent_stats *st)
    void fl_softmax_half(int kind, const uint16_t *x, uint16_t *out, int64_t n, int64_t C, int log_out,
                         double *lse, float *scratch)
    int64_t fl_label_scan(const int64_t *y, int64_t n, int64_t C, int64_t ignore, int64_t *counted)
    double fl_bce_block(const void *x, const void *t, const void *w, const void *pw, const uint8_t *m,
                        void *lout, void *g, int64_t n, double gscale)
    double fl_focal_block(const void *x, const void *t, const uint8_t *m, void *lout, void *g,
                          int64_t n, double alpha, double gamma, double gscale)
    void fl_exp_array(const void *x, void *y, int64_t n)
    void fl_exp_le0_array(const void *x, void *y, int64_t n)
    void fl_log_array(const void *x, void *y, int64_t n)
    void fl_log1p_array(const void *x, void *y, int64_t n)
    void fl_log1p_unit_array(const void *x, void *y, int64_t n)


def set_level(int level):
    fl_classification_set_half_level(level)


def label_scan(const int64_t[::1] y, int64_t C, int64_t ignore_index):
    """(the number of labels != ignore_index, the index of the first of them outside [0, C)
    or -1): _checks.check_label_array's test in one pass."""
    cdef int64_t counted = 0, bad = -1
    if y.shape[0]:
        with nogil:
            bad = fl_label_scan(&y[0], y.shape[0], C, ignore_index, &counted)
    return counted, bad


def _scratch(x, int n_threads, double softcap):
    """Per-thread rows for the soft-capped logits (None without softcap), allocated
    here so no kernel allocates."""
    return np.empty((n_threads, x.shape[1]), dtype=np.asarray(x).dtype) if softcap > 0 else None


cdef fl_xent_stats _stats(tuple stats):
    """The kernels' view of (lse, argmax, correct) row arrays (float64, int64, uint8), or of
    None: NULL pointers, no statistics."""
    cdef double[::1] lse
    cdef int64_t[::1] am
    cdef unsigned char[::1] ok
    if stats is None or stats[0].shape[0] == 0:
        return fl_xent_stats(lse=NULL, argmax=NULL, correct=NULL)
    lse, am, ok = stats
    return fl_xent_stats(lse=&lse[0], argmax=&am[0], correct=&ok[0])


cdef inline const fl_xent_stats *_stats_at(const fl_xent_stats *st, int64_t r0,
                                           fl_xent_stats *out) noexcept nogil:
    """st's arrays from row r0 on, in out (NULL when st holds none)."""
    if st.lse == NULL:
        return NULL
    out[0] = fl_xent_stats(lse=st.lse + r0, argmax=st.argmax + r0, correct=st.correct + r0)
    return out


cdef struct XentJob:
    int64_t n, C, rows_per_block
    const void *x
    const int64_t *y             # labels, or NULL: target rows t
    const void *t
    void *g
    const fl_xent_params *p
    double *loss
    void *scratch                # per-thread rows of `width` items (or NULL)
    int64_t width
    int kind                     # xent_half: the half format
    int64_t slot                 # xent_half: float32 items per block of rows in scratch
    bint direct                  # xent_half: rows read as half (fl_xent_label_half), no block copy
    fl_xent_stats st             # per-row statistics (NULL pointers: none)


cdef void _xent_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef XentJob *j = <XentJob *>job
    cdef int64_t r0 = b * j.rows_per_block, C = j.C
    cdef int64_t nr = min(j.rows_per_block, j.n - r0)
    cdef const floating *x = <const floating *>j.x + r0 * C
    cdef floating *g = <floating *>j.g
    cdef floating *sp = <floating *>j.scratch
    cdef fl_xent_stats sb
    cdef const fl_xent_stats *st = _stats_at(&j.st, r0, &sb)
    if j.y:
        fl_xent_label_rows(x, g + r0 * C if g else NULL, nr, j.y + r0, j.p, j.loss + r0,
                           sp + tid * j.width if sp else NULL, st)
    else:
        fl_xent_prob_rows(x, <const floating *>j.t + r0 * C, g + r0 * C if g else NULL, nr, j.p,
                          j.loss + r0, sp + tid * j.width if sp else NULL, st)


cdef _xent_rows(const floating[:, ::1] x, const int64_t *y, const floating *t, floating[:, ::1] g,
                const floating[::1] class_weight, fl_xent_params p, double[::1] loss, tuple stats,
                int n_threads):
    """The row loop of xent_label (labels y) and xent_prob (target rows t, y NULL) for
    n > 0 rows; p's class_weight is set here."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C)
    cdef floating *gp = &g[0, 0] if g is not None else NULL
    cdef floating[:, ::1] scratch = _scratch(x, n_threads, p.softcap)
    cdef floating *sp = &scratch[0, 0] if scratch is not None else NULL
    p.class_weight = &class_weight[0] if class_weight is not None else NULL
    cdef XentJob job = XentJob(n=n, C=C, rows_per_block=rpb, x=&x[0, 0], y=y, t=t, g=gp, p=&p,
                               loss=&loss[0], scratch=sp, width=C, kind=0, slot=0, direct=False,
                               st=_stats(stats))
    with nogil:
        run_blocks(<block_fn>_xent_block[floating], &job, n_blocks(n, rpb), n_threads)


def xent_label(const floating[:, ::1] x, const int64_t[::1] y, floating[:, ::1] g,
               const floating[::1] class_weight, double weight_sum, int64_t ignore_index,
               double smoothing, double z_loss, double softcap, double gscale,
               double[::1] loss, tuple stats, int n_threads):
    """Per-row softmax cross-entropy with integer labels into `loss`; gradient into g (or None);
    per-row statistics into stats (lse, argmax, correct), or None."""
    if x.shape[0] > 0:
        _xent_rows(x, &y[0], NULL, g, class_weight,
                   fl_xent_params(C=x.shape[1], ignore_index=ignore_index, class_weight=NULL,
                                  weight_sum=weight_sum, smoothing=smoothing, z_loss=z_loss, softcap=softcap,
                                  gscale=gscale), loss, stats, n_threads)


def xent_prob(const floating[:, ::1] x, const floating[:, ::1] t, floating[:, ::1] g,
              const floating[::1] class_weight, double smoothing, double z_loss,
              double softcap, double gscale, double[::1] loss, tuple stats, int n_threads):
    """Per-row softmax cross-entropy with probability targets into `loss`; gradient into g (or None);
    stats as xent_label's."""
    if x.shape[0] > 0:
        _xent_rows(x, NULL, &t[0, 0], g, class_weight,
                   fl_xent_params(C=x.shape[1], ignore_index=0, class_weight=NULL, weight_sum=0,
                                  smoothing=smoothing, z_loss=z_loss, softcap=softcap, gscale=gscale),
                   loss, stats, n_threads)


cdef void _xent_half_block(void *job, int64_t b, int tid, const void *tag) noexcept nogil:
    cdef XentJob *j = <XentJob *>job
    cdef int64_t r0 = b * j.rows_per_block, C = j.C, w = j.slot
    cdef int64_t nr = min(j.rows_per_block, j.n - r0), m = nr * C
    cdef float *xs = <float *>j.scratch + tid * j.width
    cdef float *cap = xs + (2 if j.t else 1) * w if j.p.softcap > 0 else NULL
    cdef uint16_t *gp = <uint16_t *>j.g
    cdef fl_xent_stats sb
    cdef const fl_xent_stats *st = _stats_at(&j.st, r0, &sb)
    if j.direct:
        fl_xent_label_half(j.kind, <const uint16_t *>j.x + r0 * C, gp + r0 * C if gp else NULL, nr,
                           j.y + r0, j.p, j.loss + r0, xs, st)
        return
    fl_half_to_float(j.kind, <const uint16_t *>j.x + r0 * C, xs, m)
    if not j.t:
        fl_xent_label_rows(xs, xs if gp else NULL, nr, j.y + r0, j.p, j.loss + r0, cap, st)
    else:
        fl_half_to_float(j.kind, <const uint16_t *>j.t + r0 * C, xs + w, m)
        fl_xent_prob_rows(xs, xs + w, xs if gp else NULL, nr, j.p, j.loss + r0, cap, st)
    if gp:
        fl_float_to_half(j.kind, xs, gp + r0 * C, m)


def xent_half(int kind, const uint16_t[:, ::1] x, const int64_t[::1] y, const uint16_t[:, ::1] t,
              uint16_t[:, ::1] g, const float[::1] class_weight, double weight_sum, int64_t ignore_index,
              double smoothing, double z_loss, double softcap, double gscale, double[::1] loss,
              tuple stats, int n_threads):
    """xent_label (labels y, t None) or xent_prob (targets t, y None) on half rows (kind:
    fastloss/_half.pxd): each block of rows is converted into per-thread float32 scratch,
    the float32 kernel runs there (its gradient in place), and the gradient block is
    converted back into g (or None). g may be x: a block is written after it is read.
    Label rows of more than FL_MID_C classes without softcap are read as half directly
    (fl_xent_label_half), with no pass that only converts: loss only (without smoothing) in
    registers, with a gradient (at most FL_MAX_CHUNKS * FL_CHUNK classes) a chunk at a time."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C)
    cdef int64_t w = scratch_row(rpb * C * 4, 4), slots = 1 if t is None else 2
    cdef float[:, ::1] scratch
    cdef const float *cw = &class_weight[0] if class_weight is not None else NULL
    cdef fl_xent_params p = fl_xent_params(
        C=C, ignore_index=ignore_index, class_weight=cw, weight_sum=weight_sum, smoothing=smoothing,
        z_loss=z_loss, softcap=softcap, gscale=gscale)
    if n == 0:
        return
    cdef const int64_t *yp = &y[0] if y is not None else NULL
    cdef const uint16_t *tp = &t[0, 0] if t is not None else NULL
    cdef uint16_t *gp = &g[0, 0] if g is not None else NULL
    # per thread: the block, the target block (t), the soft-capped row (softcap)
    scratch = np.empty((n_threads, slots * w + (scratch_row(C * 4, 4) if softcap > 0 else 0)), np.float32)
    cdef XentJob job = XentJob(n=n, C=C, rows_per_block=rpb, x=&x[0, 0], y=yp, t=tp, g=gp, p=&p,
                               loss=&loss[0], scratch=&scratch[0, 0], width=scratch.shape[1],
                               kind=kind, slot=w, st=_stats(stats),
                               direct=t is None and softcap == 0 and C > FL_MID_C
                                      and (smoothing == 0 if g is None
                                           else C <= <int64_t>FL_MAX_CHUNKS * FL_CHUNK))
    with nogil:
        run_blocks(_xent_half_block, &job, n_blocks(n, rpb), n_threads)


cdef struct StridedJob:
    int64_t C, D, cols_per_block, blocks_per_slice
    const void *x
    const int64_t *y
    void *g
    const fl_xent_params *p
    double *loss
    fl_xent_stats st


cdef void _strided_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef StridedJob *j = <StridedJob *>job
    cdef int64_t a = b // j.blocks_per_slice, C = j.C, D = j.D
    cdef int64_t d0 = (b % j.blocks_per_slice) * j.cols_per_block
    cdef floating *g = <floating *>j.g
    cdef fl_xent_stats sb
    fl_xent_label_cols(<const floating *>j.x + a * C * D, g + a * C * D if g else NULL, C, D, d0,
                       min(D, d0 + j.cols_per_block), j.y + a * D, j.p, j.loss + a * D,
                       _stats_at(&j.st, a * D, &sb))


def xent_label_strided(const floating[:, :, ::1] x, const int64_t[:, ::1] y, floating[:, :, ::1] g,
                       const floating[::1] class_weight, double weight_sum, int64_t ignore_index,
                       double smoothing, double z_loss, double gscale, double[:, ::1] loss,
                       tuple stats, int n_threads):
    """As xent_label for x of shape (A, C, D): the classes on the middle axis (PyTorch's
    layout), labels and losses (A, D), statistics (or None) A * D flat, gradient (or None) of
    x's shape."""
    cdef int64_t A = x.shape[0], C = x.shape[1], D = x.shape[2]
    # columns per work item: about ROW_WORK elements, whole cache lines
    cdef int64_t db = max(64, (ROW_WORK // C) // 64 * 64)
    cdef const floating *cw = &class_weight[0] if class_weight is not None else NULL
    cdef fl_xent_params p = fl_xent_params(
        C=C, ignore_index=ignore_index, class_weight=cw,
        weight_sum=weight_sum, smoothing=smoothing, z_loss=z_loss, softcap=0, gscale=gscale)
    if A * D == 0:
        return
    cdef floating *gp = &g[0, 0, 0] if g is not None else NULL
    cdef StridedJob job = StridedJob(C=C, D=D, cols_per_block=db, blocks_per_slice=n_blocks(D, db),
                                     x=&x[0, 0, 0], y=&y[0, 0], g=gp, p=&p, loss=&loss[0, 0],
                                     st=_stats(stats))
    with nogil:
        run_blocks(<block_fn>_strided_block[floating], &job, A * job.blocks_per_slice, n_threads)


cdef struct SoftmaxJob:
    int64_t n, C, rows_per_block
    const void *x
    void *out
    int log_out
    double *lse
    double *shift                # NULL, or the rows' max (lse relative to it)
    float *scratch               # softmax_rows_half: per-thread rows of `width` items
    int64_t width
    int kind                     # softmax_rows_half: the half format
    bint direct                  # softmax_rows_half: rows read as half (fl_softmax_half), no block copy


cdef void _softmax_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef SoftmaxJob *j = <SoftmaxJob *>job
    cdef int64_t r0 = b * j.rows_per_block, C = j.C
    cdef floating *op = <floating *>j.out
    fl_softmax_rows(<const floating *>j.x + r0 * C, op + r0 * C if op else NULL,
                    min(j.rows_per_block, j.n - r0), C, j.log_out, j.lse + r0,
                    j.shift + r0 if j.shift else NULL)


def softmax_rows(const floating[:, ::1] x, floating[:, ::1] out, bint log_out,
                 double[::1] lse, int n_threads, double[::1] shift=None):
    """lse[r] = logsumexp(x[r]); with out (or None), softmax or log-softmax of each row. With
    shift: shift[r] = the row max (0 if all -inf), lse[r] relative to it."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C)
    if n == 0:
        return
    cdef floating *op = &out[0, 0] if out is not None else NULL
    cdef double *sp = NULL
    if shift is not None:
        sp = &shift[0]
    cdef SoftmaxJob job = SoftmaxJob(n=n, C=C, rows_per_block=rpb, x=&x[0, 0], out=op, log_out=log_out,
                                     lse=&lse[0], shift=sp,
                                     scratch=NULL, width=0, kind=0, direct=False)
    with nogil:
        run_blocks(<block_fn>_softmax_block[floating], &job, n_blocks(n, rpb), n_threads)


cdef void _softmax_half_block(void *job, int64_t b, int tid, const void *tag) noexcept nogil:
    cdef SoftmaxJob *j = <SoftmaxJob *>job
    cdef int64_t r0 = b * j.rows_per_block, C = j.C
    cdef int64_t nr = min(j.rows_per_block, j.n - r0)
    cdef float *xs = j.scratch + tid * j.width
    cdef uint16_t *op = <uint16_t *>j.out
    if j.direct:
        fl_softmax_half(j.kind, <const uint16_t *>j.x + r0 * C, op + r0 * C if op else NULL, nr, C,
                        j.log_out, j.lse + r0, xs)
        return
    fl_half_to_float(j.kind, <const uint16_t *>j.x + r0 * C, xs, nr * C)
    fl_softmax_rows(xs, xs if op else NULL, nr, C, j.log_out, j.lse + r0, NULL)
    if op:
        fl_float_to_half(j.kind, xs, op + r0 * C, nr * C)


def softmax_rows_half(int kind, const uint16_t[:, ::1] x, uint16_t[:, ::1] out, bint log_out,
                      double[::1] lse, int n_threads):
    """softmax_rows on half rows, a block at a time through float32 scratch (as xent_half);
    rows of more than FL_MID_C (and at most FL_MAX_CHUNKS * FL_CHUNK) elements are read as
    half directly (fl_softmax_half)."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C)
    cdef float[:, ::1] scratch
    if n == 0:
        return
    scratch = np.empty((n_threads, scratch_row(rpb * C * 4, 4)), np.float32)
    cdef uint16_t *op = &out[0, 0] if out is not None else NULL
    cdef SoftmaxJob job = SoftmaxJob(n=n, C=C, rows_per_block=rpb, x=&x[0, 0], out=op, log_out=log_out,
                                     lse=&lse[0], shift=NULL, scratch=&scratch[0, 0], width=scratch.shape[1],
                                     kind=kind, direct=FL_MID_C < C <= <int64_t>FL_MAX_CHUNKS * FL_CHUNK)
    with nogil:
        run_blocks(_softmax_half_block, &job, n_blocks(n, rpb), n_threads)


def half_convert(int kind, uint16_t[::1] h, float[::1] f, bint to_half):
    """f = float32(h) (to_half False) or h = half(f) (True) with the kernels' own conversions
    (tests); h holds the half values' bits."""
    cdef int64_t n = h.shape[0]
    if n == 0:
        return
    if to_half:
        fl_float_to_half(kind, &f[0], &h[0], n)
    else:
        fl_half_to_float(kind, &h[0], &f[0], n)


cdef struct SigmoidJob:
    int64_t n, w_period, pw_period
    const void *x
    const void *t
    const void *w
    const void *pw
    const uint8_t *m
    void *lout
    void *g
    double alpha, gamma, gscale
    double *part


cdef void _bce_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef SigmoidJob *j = <SigmoidJob *>job
    cdef int64_t s = b * EBLK
    cdef const floating *w = <const floating *>j.w
    cdef const floating *pw = <const floating *>j.pw
    cdef floating *lp = <floating *>j.lout
    cdef floating *gp = <floating *>j.g
    j.part[b] = fl_bce_block(<const floating *>j.x + s, <const floating *>j.t + s,
                             w + s % j.w_period if w else NULL, pw + s % j.pw_period if pw else NULL,
                             j.m + s if j.m else NULL, lp + s if lp else NULL, gp + s if gp else NULL,
                             min(EBLK, j.n - s), j.gscale)


def bce(const floating[::1] x, const floating[::1] t, const floating[::1] w, int64_t w_period,
        const floating[::1] pw, int64_t pw_period, const uint8_t[::1] m, floating[::1] lout,
        floating[::1] g, double gscale, int n_threads):
    """Sum of binary cross-entropy with logits over x (flat). w / pw are tiled weights:
    element i uses w[i % w_period]; each holds at least ELEMENT_BLOCK + period
    entries (or the whole array), so a block's weights are contiguous. m (or None): the
    where= mask, a byte per element; a 0 byte's element counts for nothing (loss and
    gradient 0, whatever x holds there)."""
    cdef int64_t n = x.shape[0]
    cdef double[::1] part = np.empty(n_blocks(n, EBLK), dtype=np.float64)
    if n == 0:
        return 0.0
    cdef const floating *wp = &w[0] if w is not None else NULL
    cdef const floating *pwp = &pw[0] if pw is not None else NULL
    cdef const uint8_t *mp = &m[0] if m is not None else NULL
    cdef floating *lp = &lout[0] if lout is not None else NULL
    cdef floating *gp = &g[0] if g is not None else NULL
    cdef SigmoidJob job = SigmoidJob(n=n, w_period=w_period, pw_period=pw_period, x=&x[0], t=&t[0], w=wp,
                                     pw=pwp, m=mp, lout=lp, g=gp, alpha=0, gamma=0, gscale=gscale,
                                     part=&part[0])
    with nogil:
        run_blocks(<block_fn>_bce_block[floating], &job, part.shape[0], n_threads)
    return ordered_sum(part)


cdef void _focal_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef SigmoidJob *j = <SigmoidJob *>job
    cdef int64_t s = b * EBLK
    cdef floating *lp = <floating *>j.lout
    cdef floating *gp = <floating *>j.g
    j.part[b] = fl_focal_block(<const floating *>j.x + s, <const floating *>j.t + s,
                               j.m + s if j.m else NULL, lp + s if lp else NULL,
                               gp + s if gp else NULL, min(EBLK, j.n - s), j.alpha, j.gamma, j.gscale)


def focal(const floating[::1] x, const floating[::1] t, double alpha, double gamma,
          const uint8_t[::1] m, floating[::1] lout, floating[::1] g, double gscale, int n_threads):
    """Sum of the sigmoid focal loss over x (flat); m: as bce's; per-element loss and
    gradient optional."""
    cdef int64_t n = x.shape[0]
    cdef double[::1] part = np.empty(n_blocks(n, EBLK), dtype=np.float64)
    if n == 0:
        return 0.0
    cdef const uint8_t *mp = &m[0] if m is not None else NULL
    cdef floating *lp = &lout[0] if lout is not None else NULL
    cdef floating *gp = &g[0] if g is not None else NULL
    cdef SigmoidJob job = SigmoidJob(n=n, w_period=1, pw_period=1, x=&x[0], t=&t[0], w=NULL, pw=NULL,
                                     m=mp, lout=lp, g=gp, alpha=alpha, gamma=gamma, gscale=gscale,
                                     part=&part[0])
    with nogil:
        run_blocks(<block_fn>_focal_block[floating], &job, part.shape[0], n_threads)
    return ordered_sum(part)


def label_losses(const double[::1] m, const double[::1] logs, const double[::1] xy,
                 const double[::1] sd, const double[::1] wy, const unsigned char[::1] counted,
                 int64_t C, double weight_sum, double smoothing, double z_loss, double[::1] loss):
    """Per-row cross-entropy from its statistics (a reference m, log sum exp(x - m), label
    logit, sum_k w_k (m - x_k), label weight) by the row kernels' own formula; rows not
    counted get 0. For rows whose statistics were gathered piecewise (linear_cross_entropy)."""
    cdef fl_xent_params p = fl_xent_params(C=C, ignore_index=0, class_weight=NULL,
                                           weight_sum=weight_sum, smoothing=smoothing,
                                           z_loss=z_loss, softcap=0, gscale=1)
    cdef double a
    cdef Py_ssize_t i
    for i in range(m.shape[0]):
        loss[i] = fl_label_row_loss(&p, wy[i], m[i], logs[i], xy[i], sd[i], &a) if counted[i] else 0.0


def vector_math(str fn, const floating[::1] x, floating[::1] y):
    """y = exp/exp_le0/log/log1p/log1p_unit(x) with the kernels' own vectorised functions (accuracy tests)."""
    cdef int64_t n = x.shape[0]
    if n == 0:
        return
    if fn == "exp":
        fl_exp_array(&x[0], &y[0], n)
    elif fn == "exp_le0":
        fl_exp_le0_array(&x[0], &y[0], n)
    elif fn == "log":
        fl_log_array(&x[0], &y[0], n)
    elif fn == "log1p":
        fl_log1p_array(&x[0], &y[0], n)
    elif fn == "log1p_unit":
        fl_log1p_unit_array(&x[0], &y[0], n)
    else:
        raise ValueError(f"unknown function {fn!r}")
