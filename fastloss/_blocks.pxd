# cython: language_level=3, boundscheck=False, wraparound=False
"""How the kernel modules split their work: the one definition of every block size
and of the helpers built on them, cimported by each fastloss/_*.pyx.

Sizes of reductions (ELEMENT_BLOCK, BOX_BLOCK) are fixed, never derived from the
thread count, so float64 partial sums, added in block order, are the same for any
number of threads. The others only bound scheduling overhead: any value gives the
same result.
"""
from libc.stdint cimport int64_t

cdef enum:
    # Elements per parallel work item of the elementwise losses (a reduction block).
    ELEMENT_BLOCK = 16384
    # Box pairs per parallel work item of the box losses (a reduction block).
    BOX_BLOCK = 4096
    # Elements per work item of the row kernels (rows are independent).
    ROW_WORK = 32768
    # Columns per work item of the batch-hard gradient scatter.
    SCATTER_COLS = 256
    # Anchors per work item of the batch-hard column part.
    HARD_COLS = 256
    # Columns per work item of the column log-sum-exp merge.
    COMBINE_COLS = 1024
    # Bytes per cache line: per-thread scratch rows are padded to whole lines.
    CACHE_LINE = 64
    # Fewest elements a kernel call streams out (a row kernel's row): shorter runs spent more
    # on each call's writer than streaming saved (gaussian_kl, reduction="none", 2 threads:
    # rows of 128 took 5.5 -> 11 ms streamed, of 512 no faster, of 1024 3.3-3.7 -> 3.1-3.2).
    STREAM_RUN = 1024


cdef inline int64_t n_blocks(int64_t n, int64_t size) noexcept nogil:
    """Blocks of `size` covering n items."""
    return (n + size - 1) // size


cdef inline int64_t scratch_row(int64_t nbytes, int64_t itemsize) noexcept nogil:
    """Items of `itemsize` bytes per row of per-thread scratch holding nbytes: whole
    cache lines, so no two threads write the same line. Per-thread scratch is a NumPy
    array of n_threads such rows, allocated by the def before its parallel loop and
    indexed with the block function's tid; no kernel allocates."""
    return n_blocks(nbytes, CACHE_LINE) * CACHE_LINE // itemsize


cdef inline int64_t rows_per_block(int64_t width) noexcept nogil:
    """Rows of `width` elements per work item of a row kernel (at least 1)."""
    return ROW_WORK // width if 0 < width < ROW_WORK else 1


cdef inline double ordered_sum(const double[::1] part) noexcept nogil:
    """The per-block partial sums added in block order."""
    cdef double s = 0.0
    cdef Py_ssize_t i
    for i in range(part.shape[0]):
        s += part[i]
    return s
