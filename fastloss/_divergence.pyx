# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Kernels for the divergences between softmax rows (entropy, KL, JS).

Each function takes already-checked, C-contiguous arrays (fastloss/_checks.py
does the checking) and runs its blocks of rows on the thread pool
(_runtime.run_blocks): a job struct holds the loop's arguments and a block
function does one block's work, a C function from csrc/fl_divergence.h picked
for this CPU's SIMD level. Per-row losses come back in float64; rows are
independent, so results are identical for any number of threads. The elementwise
Gaussian losses are in fastloss/_gaussian.pyx.
"""
from cython cimport floating
from libc.stdint cimport int64_t, uint16_t

from ._blocks cimport n_blocks, rows_per_block, scratch_row
from ._half cimport fl_float_to_half, fl_half_to_float
from ._runtime cimport block_fn, run_blocks, stream_output

import numpy as np

cdef extern from "fl_divergence.h" nogil:
    ctypedef struct fl_div_params:
        int64_t C
        double inv_t
        double beta
        double gscale_p
        double gscale_q
        int64_t ignore_index
        int stream
        double ce_scale
        const void *next_a
        const void *next_b
    int FL_DIV_ROW_CACHE_BYTES
    int FL_MID_C
    void fl_divergence_set_half_level(int level)
    # One declaration per kernel for both dtypes (csrc/fl_common.h's FL_CALL): the
    # kernel's T pointers are void pointers here.
    void fl_entropy_rows(const void *x, void *g, int64_t n, int64_t C, double gscale, double *loss,
                         void *scratch, int stream, const void *next)
    void fl_kl_rows(const void *a, const void *b, void *ga, void *gb, int64_t n, const int64_t *labels,
                    const fl_div_params *p, double *loss, double *ce_loss, void *scratch, int64_t *am_a,
                    int64_t *am_b)
    void fl_js_rows(const void *a, const void *b, void *ga, void *gb, int64_t n, const fl_div_params *p,
                    double *loss, void *scratch)
    # float32 only: KL without gradients of half row pairs, read without a float32 copy
    void fl_kl_rows_half(int kind, const uint16_t *a, const uint16_t *b, int64_t n, const int64_t *labels,
                         const fl_div_params *p, double *loss, float *scratch, int64_t *am_a,
                         int64_t *am_b)

def set_level(int level):
    fl_divergence_set_half_level(level)


cdef inline int64_t _pair_cache_rows(bint js, bint ce, double inv_t) noexcept nogil:
    """Rows of C items the pair kernels keep per thread: JS 4, KL 3 (4 with the
    cross-entropy at a temperature other than 1)."""
    return 4 if js or (ce and inv_t != 1.0) else 3


cdef inline bint _cached(int64_t C, size_t itemsize) noexcept nogil:
    return C * <int64_t> itemsize <= FL_DIV_ROW_CACHE_BYTES


cdef _thread_rows(int n_threads, int64_t width, size_t itemsize):
    """Per-thread scratch (fastloss/_blocks.pxd): a row of at least `width` elements per thread."""
    return np.empty((n_threads, scratch_row(width * itemsize, itemsize)),
                    dtype=np.float32 if itemsize == 4 else np.float64)


# --- softmax rows ---------------------------------------------------------------------

cdef struct EntropyJob:
    int64_t n, C, rows_per_block
    const void *x
    void *g
    double gscale
    double *loss
    void *scratch                # per-thread rows of `width` items (or NULL)
    int64_t width
    int stream
    int kind                     # entropy_half: the half format
    int64_t slot                 # entropy_half: float32 items per block of rows in scratch
    int cache                    # entropy_half: the kernel's row cache follows the first slot


cdef void _entropy_block(void *job, int64_t b, int tid, const floating *tag) noexcept nogil:
    cdef EntropyJob *j = <EntropyJob *>job
    cdef int64_t r0 = b * j.rows_per_block, C = j.C
    cdef floating *g = <floating *>j.g
    cdef floating *sp = <floating *>j.scratch
    fl_entropy_rows(<const floating *>j.x + r0 * C, g + r0 * C if g else NULL,
                    min(j.rows_per_block, j.n - r0), C, j.gscale, j.loss + r0,
                    sp + tid * j.width if sp else NULL, j.stream, NULL)


def entropy(const floating[:, ::1] x, floating[:, ::1] g, double gscale, double[::1] loss,
            int n_threads):
    """Per-row entropy of softmax(x) into `loss`; gradient of gscale * sum into g (or None)."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C)
    cdef floating[:, ::1] scratch = None
    if n == 0:
        return
    cdef floating *gp = &g[0, 0] if g is not None else NULL
    cdef int stream = gp != NULL and stream_output(n * C * <int64_t> sizeof(floating))
    if _cached(C, sizeof(floating)) and gp != NULL:
        scratch = _thread_rows(n_threads, 2 * C, sizeof(floating))
    cdef floating *sp = &scratch[0, 0] if scratch is not None else NULL
    cdef EntropyJob job = EntropyJob(n=n, C=C, rows_per_block=rpb, x=&x[0, 0], g=gp, gscale=gscale,
                                     loss=&loss[0], scratch=sp,
                                     width=scratch.shape[1] if scratch is not None else 0,
                                     stream=stream, kind=0, slot=0, cache=0)
    with nogil:
        run_blocks(<block_fn>_entropy_block[floating], &job, n_blocks(n, rpb), n_threads)


cdef struct PairJob:
    int64_t n, C, rows_per_block
    const void *a
    const void *b
    void *ga
    void *gb
    const int64_t *labels
    const fl_div_params *p
    int js                       # JS, else KL
    double *loss
    double *ce_loss              # KL: b's cross-entropy against labels (distillation; or NULL)
    int64_t *am_a                # KL: each row's argmax of a and of b (or NULL)
    int64_t *am_b
    void *scratch                # per-thread rows of `width` items (or NULL)
    int64_t width
    int kind                     # pair_rows_half: the half format
    int64_t slot                 # pair_rows_half: float32 items per block of rows in scratch
    int cache                    # pair_rows_half: the kernel's row cache follows the slots


cdef void _pair_block(void *job, int64_t blk, int tid, const floating *tag) noexcept nogil:
    cdef PairJob *j = <PairJob *>job
    cdef int64_t r0 = blk * j.rows_per_block, C = j.C
    cdef int64_t nr = min(j.rows_per_block, j.n - r0)
    cdef const floating *a = <const floating *>j.a + r0 * C
    cdef const floating *b = <const floating *>j.b + r0 * C
    cdef floating *ga = <floating *>j.ga
    cdef floating *gb = <floating *>j.gb
    cdef floating *sp = <floating *>j.scratch
    if sp:
        sp += tid * j.width
    _pair_kernel(j, a, b, ga + r0 * C if ga else NULL, gb + r0 * C if gb else NULL, r0, nr, j.p, sp)


cdef inline void _pair_kernel(const PairJob *j, const floating *a, const floating *b, floating *ga,
                              floating *gb, int64_t r0, int64_t nr, const fl_div_params *p,
                              floating *sp) noexcept nogil:
    """j's kernel on its rows r0 .. r0 + nr, found at a, b (gradients into ga, gb), with p."""
    if j.js:
        fl_js_rows(a, b, ga, gb, nr, p, j.loss + r0, sp)
    else:
        fl_kl_rows(a, b, ga, gb, nr, j.labels + r0 if j.labels else NULL, p, j.loss + r0,
                   j.ce_loss + r0 if j.ce_loss else NULL, sp,
                   j.am_a + r0 if j.am_a else NULL, j.am_b + r0 if j.am_b else NULL)


def pair_rows(str kind, const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] ga,
              floating[:, ::1] gb, double inv_t, double beta, double gscale_p, double gscale_q,
              const int64_t[::1] labels, int64_t ignore_index,
              double[::1] loss, int64_t[:, ::1] argmax, int n_threads, double[::1] ce_loss=None,
              double ce_scale=0.0):
    """Per-row KL(softmax(a/T) || softmax(b/T)) (kind "kl") or generalised JS (kind "js")
    into `loss`; gradients into ga / gb (either may be None). labels (or None): rows equal
    to ignore_index are skipped (KL only). argmax (KL; or
    None): (2, n), each row's argmax of a and of b, skipped rows too. ce_loss (KL with
    labels; or None): also b's cross-entropy against the labels at temperature 1 per row,
    its gradient times ce_scale added to gb, in the same pass (distillation)."""
    cdef int64_t n = a.shape[0], C = a.shape[1]
    cdef int64_t rpb = rows_per_block(C)
    cdef floating[:, ::1] scratch = None
    cdef bint js = kind == "js"
    if n == 0:
        return
    cdef floating *gap = &ga[0, 0] if ga is not None else NULL
    cdef floating *gbp = &gb[0, 0] if gb is not None else NULL
    cdef const int64_t *lab = &labels[0] if labels is not None else NULL
    cdef int64_t *am = &argmax[0, 0] if argmax is not None else NULL
    cdef int64_t *am_b = am + n if am != NULL else NULL
    cdef double *cep = &ce_loss[0] if ce_loss is not None else NULL
    cdef fl_div_params p = fl_div_params(
        C=C, inv_t=inv_t, beta=beta, gscale_p=gscale_p, gscale_q=gscale_q, ignore_index=ignore_index,
        stream=(gap != NULL or gbp != NULL) and stream_output(n * C * <int64_t> sizeof(floating)),
        ce_scale=ce_scale, next_a=NULL, next_b=NULL)
    if _cached(C, sizeof(floating)) and (gap != NULL or gbp != NULL or js):
        scratch = _thread_rows(n_threads, _pair_cache_rows(js, cep != NULL, inv_t) * C, sizeof(floating))
    cdef floating *sp = &scratch[0, 0] if scratch is not None else NULL
    cdef PairJob job = PairJob(n=n, C=C, rows_per_block=rpb, a=&a[0, 0], b=&b[0, 0], ga=gap, gb=gbp,
                               labels=lab, p=&p, js=js, loss=&loss[0], ce_loss=cep, am_a=am, am_b=am_b,
                               scratch=sp,
                               width=scratch.shape[1] if scratch is not None else 0,
                               kind=0, slot=0, cache=0)
    with nogil:
        run_blocks(<block_fn>_pair_block[floating], &job, n_blocks(n, rpb), n_threads)


# --- half-precision rows: a block at a time through float32 scratch --------------------
# Each block of rows is converted into per-thread float32 scratch (cache-resident), the
# float32 kernel runs there, writing its gradients in place, and the gradient blocks are
# converted back. An output may be an input: a block is written after it is read. Each
# thread's scratch ends with a block of padding: the kernels prefetch one row past the
# rows they read, which must not be another thread's scratch (its lines would bounce
# between the cores).

cdef inline int64_t _half_step(int64_t C, int64_t nr) noexcept nogil:
    """Rows converted and computed at a time in a half block of nr rows: one above FL_MID_C
    (the next row's half values prefetched while the float32 kernel runs on this one:
    converting the whole block first would be a pass over memory with no work beside it),
    the whole block for the kernels blocked across rows."""
    return 1 if C > FL_MID_C else nr


cdef void _entropy_half_block(void *job, int64_t b, int tid, const void *tag) noexcept nogil:
    cdef EntropyJob *j = <EntropyJob *>job
    cdef int64_t r0 = b * j.rows_per_block, C = j.C
    cdef int64_t nr = min(j.rows_per_block, j.n - r0), step = _half_step(C, nr)
    cdef float *xs = <float *>j.scratch + tid * j.width
    cdef const uint16_t *x = <const uint16_t *>j.x
    cdef uint16_t *gp = <uint16_t *>j.g
    cdef int64_t r = r0, k
    while r < r0 + nr:
        k = min(step, r0 + nr - r)
        fl_half_to_float(j.kind, x + r * C, xs, k * C)
        fl_entropy_rows(xs, xs if gp else NULL, k, C, j.gscale, j.loss + r,
                        xs + j.slot if j.cache else NULL, 0, x + (r + 1) * C if k == 1 else NULL)
        if gp:
            fl_float_to_half(j.kind, xs, gp + r * C, k * C)
        r += k


def entropy_half(int kind, const uint16_t[:, ::1] x, uint16_t[:, ::1] g, double gscale,
                 double[::1] loss, int n_threads):
    """entropy on half rows (kind: fastloss/_half.pxd)."""
    cdef int64_t n = x.shape[0], C = x.shape[1]
    cdef int64_t rpb = rows_per_block(C)
    cdef int64_t w = scratch_row(rpb * C * 4, 4)
    cdef float[:, ::1] scratch
    if n == 0:
        return
    cdef uint16_t *gp = &g[0, 0] if g is not None else NULL
    cdef bint cache = _cached(C, 4) and gp != NULL
    scratch = _thread_rows(n_threads, 2 * w + (2 * C if cache else 0), 4)
    cdef EntropyJob job = EntropyJob(n=n, C=C, rows_per_block=rpb, x=&x[0, 0], g=gp, gscale=gscale,
                                     loss=&loss[0], scratch=&scratch[0, 0], width=scratch.shape[1],
                                     stream=0, kind=kind, slot=w, cache=cache)
    with nogil:
        run_blocks(_entropy_half_block, &job, n_blocks(n, rpb), n_threads)


cdef void _pair_half_block(void *job, int64_t b, int tid, const void *tag) noexcept nogil:
    cdef PairJob *j = <PairJob *>job
    cdef int64_t r0 = b * j.rows_per_block, C = j.C, w = j.slot
    cdef int64_t nr = min(j.rows_per_block, j.n - r0)
    cdef float *s = <float *>j.scratch + tid * j.width
    cdef float *cache = s + 2 * w if j.cache else NULL
    cdef uint16_t *gap = <uint16_t *>j.ga
    cdef uint16_t *gbp = <uint16_t *>j.gb
    # loss-only KL reads the half rows directly where the float32 kernel takes the same
    # one-pass rows (kl_row1): not the blocked rows of kl_small and kl_mid (at most FL_MID_C)
    if not j.js and not gap and not gbp and not j.ce_loss and C > FL_MID_C:
        fl_kl_rows_half(j.kind, <const uint16_t *>j.a + r0 * C, <const uint16_t *>j.b + r0 * C, nr,
                        j.labels + r0 if j.labels else NULL, j.p, j.loss + r0, s,
                        j.am_a + r0 if j.am_a else NULL, j.am_b + r0 if j.am_b else NULL)
        return
    cdef const uint16_t *a = <const uint16_t *>j.a
    cdef const uint16_t *bh = <const uint16_t *>j.b
    cdef int64_t step = _half_step(C, nr), r = r0, k
    cdef fl_div_params p = j.p[0]
    while r < r0 + nr:
        k = min(step, r0 + nr - r)
        fl_half_to_float(j.kind, a + r * C, s, k * C)
        fl_half_to_float(j.kind, bh + r * C, s + w, k * C)
        if k == 1:
            p.next_a, p.next_b = a + (r + 1) * C, bh + (r + 1) * C
        _pair_kernel(j, s, s + w, s if gap else NULL, s + w if gbp else NULL, r, k, &p, cache)
        if gap:
            fl_float_to_half(j.kind, s, gap + r * C, k * C)
        if gbp:
            fl_float_to_half(j.kind, s + w, gbp + r * C, k * C)
        r += k


def pair_rows_half(int kind, str loss_kind, const uint16_t[:, ::1] a, const uint16_t[:, ::1] b,
                   uint16_t[:, ::1] ga, uint16_t[:, ::1] gb, double inv_t, double beta, double gscale_p,
                   double gscale_q, const int64_t[::1] labels, int64_t ignore_index,
                   double[::1] loss, int64_t[:, ::1] argmax, int n_threads, double[::1] ce_loss=None,
                   double ce_scale=0.0):
    """pair_rows on half rows (kind: fastloss/_half.pxd). KL without gradients (and without
    ce_loss) of more than FL_MID_C classes reads the half rows directly (fl_kl_rows_half;
    the scratch only for rows holding NaN or inf)."""
    cdef int64_t n = a.shape[0], C = a.shape[1]
    cdef int64_t rpb = rows_per_block(C)
    cdef int64_t w = scratch_row(rpb * C * 4, 4)
    cdef bint js = loss_kind == "js"
    cdef float[:, ::1] scratch
    cdef double *cep = &ce_loss[0] if ce_loss is not None else NULL
    cdef fl_div_params p = fl_div_params(
        C=C, inv_t=inv_t, beta=beta, gscale_p=gscale_p, gscale_q=gscale_q, ignore_index=ignore_index,
        stream=0, ce_scale=ce_scale, next_a=NULL, next_b=NULL)
    if n == 0:
        return
    cdef uint16_t *gap = &ga[0, 0] if ga is not None else NULL
    cdef uint16_t *gbp = &gb[0, 0] if gb is not None else NULL
    cdef const int64_t *lab = &labels[0] if labels is not None else NULL
    cdef int64_t *am = &argmax[0, 0] if argmax is not None else NULL
    cdef int64_t *am_b = am + n if am != NULL else NULL
    cdef bint cache = _cached(C, 4) and (gap != NULL or gbp != NULL or js)
    # per thread: a's and b's blocks (the gradients written over them), the kernel's row
    # cache, and a block of padding
    scratch = _thread_rows(n_threads, 3 * w + (_pair_cache_rows(js, cep != NULL, inv_t) * C if cache else 0), 4)
    cdef PairJob job = PairJob(n=n, C=C, rows_per_block=rpb, a=&a[0, 0], b=&b[0, 0], ga=gap, gb=gbp,
                               labels=lab, p=&p, js=js, loss=&loss[0], ce_loss=cep, am_a=am, am_b=am_b,
                               scratch=&scratch[0, 0],
                               width=scratch.shape[1], kind=kind, slot=w, cache=cache)
    with nogil:
        run_blocks(_pair_half_block, &job, n_blocks(n, rpb), n_threads)
