# cython: language_level=3
"""What the compiled build can tell Python: OpenMP, its thread count, CPU SIMD level,
and the kernels' elementwise block size; the thread pools every kernel module runs its
parallel loops on (csrc/fl_threadpool.h, cimported through _runtime.pxd); and the two
parallel loops of its own: copy (the benchmark's floors) and any_negative (an input check)."""
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from ._blocks cimport ELEMENT_BLOCK as EBLK

# Elements per parallel work item of the elementwise losses (fastloss/_blocks.pxd):
# fixed, so float64 partial sums do not depend on the thread count; tiled weights
# must hold a contiguous run of this many entries per block.
ELEMENT_BLOCK = EBLK
cdef extern from "fl_common.h" nogil:
    int fl_cpu_best_level()
    int FL_X86_DISPATCH

cdef extern from *:
    """
    #ifdef _OPENMP
    #define FL_OPENMP_VERSION _OPENMP
    #else
    #define FL_OPENMP_VERSION 0
    #endif
    #ifdef _OPENMP
    #include <omp.h>
    static int fl_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    static int fl_omp_max_threads(void) { return 1; }
    #endif
    """
    int FL_OPENMP_VERSION
    int fl_omp_max_threads()

cdef extern from *:
    """
    #include <stdint.h>
    #if defined(__linux__)
    #include <sys/mman.h>
    #include <unistd.h>
    #endif
    /* madvise(MADV_HUGEPAGE) on the whole pages inside [p, p + n); 0 where there is
       no such call. */
    static int fl_advise_huge(uintptr_t p, size_t n) {
    #if defined(__linux__) && defined(MADV_HUGEPAGE)
        const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        const uintptr_t lo = (p + page - 1) / page * page, hi = (p + n) / page * page;
        return hi > lo ? madvise((void *)lo, hi - lo, MADV_HUGEPAGE) : 0;
    #else
        (void)p; (void)n;
        return 0;
    #endif
    }
    """
    int fl_advise_huge(size_t p, size_t n) nogil


cdef extern from "fl_threadpool.h" nogil:
    ctypedef void (*fl_block_fn)(void *ctx, int64_t block, int tid, const void *tag) noexcept nogil
    void fl_run_blocks(fl_block_fn fn, void *ctx, int64_t nblocks, int nthreads)


cdef void run_blocks(block_fn fn, void *ctx, int64_t n_blocks, int n_threads) noexcept nogil:
    fl_run_blocks(fn, ctx, n_blocks, n_threads)


# Outputs (gradients) of at least this many bytes are written with streaming stores: they
# cannot stay in cache anyway, and a streaming store does not read the line first.
cdef int64_t _stream_bytes = 16 * 1024 * 1024


cdef bint stream_output(int64_t nbytes) noexcept nogil:
    return nbytes >= _stream_bytes


def set_stream_bytes(int64_t nbytes):
    """Threshold (bytes per output array) for streaming stores (tests); returns the old one."""
    global _stream_bytes
    old = _stream_bytes
    _stream_bytes = nbytes
    return old


cdef void _record_block(void *ctx, int64_t b, int tid, const void *tag) noexcept nogil:
    cdef int64_t *out = <int64_t *>ctx
    cdef timespec t0, t
    clock_gettime(CLOCK_MONOTONIC, &t0)
    while True:                       # 20 us of work, so that pool threads take part
        clock_gettime(CLOCK_MONOTONIC, &t)
        if (t.tv_sec - t0.tv_sec) * 1000000000 + (t.tv_nsec - t0.tv_nsec) >= 20000:
            break
    out[2 * b] += 1
    out[2 * b + 1] = tid


def pool_record(int64_t n_blocks, int n_threads):
    """Run n_blocks blocks on the pool; (times each block ran, the tid that ran it) as an
    (n_blocks, 2) int64 array (tests)."""
    import numpy as np
    out = np.zeros((max(n_blocks, 1), 2), dtype=np.int64)
    cdef int64_t[:, ::1] o = out
    with nogil:
        run_blocks(_record_block, &o[0, 0], n_blocks, n_threads)
    return out[:n_blocks]


# Bytes per block of copy(): large enough that a block's cost dwarfs taking it, small
# enough that two threads share a few MiB evenly.
cdef enum:
    CBLK = 1 << 20
COPY_BLOCK = CBLK

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__x86_64__) || defined(_M_X64)
    #include <emmintrin.h>
    #endif
    /* dst[0, n) = src[0, n) with non-temporal stores where x86-64 has them (SSE2: every
       such CPU; as fast as 64-byte ones, measured): dst's lines are written without
       being read first, a third less memory traffic than memcpy's stores when dst is not
       in cache (2 threads, 256 MiB, Zen 4: 44-48 GB/s against memcpy's 29). Elsewhere
       memcpy. */
    static void fl_copy_stream(uint8_t *dst, const uint8_t *src, int64_t n) {
    #if defined(__x86_64__) || defined(_M_X64)
        int64_t k = (int64_t)((16 - (uintptr_t)dst % 16) % 16);
        if (k > n) k = n;
        memcpy(dst, src, (size_t)k);
        for (; k + 64 <= n; k += 64) {
            const __m128i a = _mm_loadu_si128((const __m128i *)(src + k));
            const __m128i b = _mm_loadu_si128((const __m128i *)(src + k + 16));
            const __m128i c = _mm_loadu_si128((const __m128i *)(src + k + 32));
            const __m128i d = _mm_loadu_si128((const __m128i *)(src + k + 48));
            _mm_stream_si128((__m128i *)(dst + k), a);
            _mm_stream_si128((__m128i *)(dst + k + 16), b);
            _mm_stream_si128((__m128i *)(dst + k + 32), c);
            _mm_stream_si128((__m128i *)(dst + k + 48), d);
        }
        memcpy(dst + k, src + k, (size_t)(n - k));
        _mm_sfence();       /* the stores reach memory before another thread reads dst */
    #else
        memcpy(dst, src, (size_t)n);
    #endif
    }
    """
    void fl_copy_stream(uint8_t *dst, const uint8_t *src, int64_t n) nogil


cdef struct CopyJob:
    int64_t n
    const uint8_t *src
    uint8_t *dst
    bint stream


cdef void _copy_block(void *ctx, int64_t b, int tid, const void *tag) noexcept nogil:
    cdef CopyJob *j = <CopyJob *>ctx
    cdef int64_t s = b * CBLK
    if j.stream:
        fl_copy_stream(j.dst + s, j.src + s, min(<int64_t>CBLK, j.n - s))
    else:
        memcpy(j.dst + s, j.src + s, min(<int64_t>CBLK, j.n - s))


def copy(src, dst, int n_threads, bint stream=False):
    """dst[:] = src on n_threads threads of the pool, in 1 MiB blocks (COPY_BLOCK), each
    a memcpy or, with stream, non-temporal stores (fl_copy_stream): the benchmark's copy
    floors besides np.copyto. src, dst: 1-D C-contiguous uint8 arrays of the same length
    that do not overlap, dst writable."""
    import numpy as np
    for name, a in (("src", src), ("dst", dst)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"copy: {name} must be a NumPy array, got {type(a).__name__}")
        if a.dtype != np.uint8 or a.ndim != 1 or not a.flags.c_contiguous:
            raise ValueError(f"copy: {name} must be a 1-D C-contiguous uint8 array, got "
                             f"{a.dtype} with shape {a.shape}")
    if not dst.flags.writeable:
        raise ValueError("copy: dst is read-only")
    if src.shape != dst.shape:
        raise ValueError(f"copy: src has {src.shape[0]} bytes, dst {dst.shape[0]}")
    if np.may_share_memory(src, dst):              # memcpy of overlapping bytes is undefined
        raise ValueError("copy: src and dst overlap")
    if n_threads < 1:
        raise ValueError(f"copy: n_threads must be >= 1, got {n_threads}")
    if src.shape[0] == 0:
        return
    cdef const uint8_t[::1] s = src
    cdef uint8_t[::1] d = dst
    cdef CopyJob job = CopyJob(s.shape[0], &s[0], &d[0], stream)
    with nogil:
        run_blocks(_copy_block, &job, (job.n + CBLK - 1) // CBLK, n_threads)


cdef extern from *:
    """
    #include <string.h>
    /* Whether an element of x[0, n) is below 0 (NaN and -0 are not): a compare and an or
       a 16-byte vector (GCC's vector extensions, so float64 is vectorised too), no early
       exit (the rare case). */
    #define FL_ANY_NEG(name, T, TI)                                                       \
    static int name(const T *x, int64_t n) {                                              \
        typedef T V __attribute__((vector_size(16)));                                     \
        typedef TI VI __attribute__((vector_size(16)));                                   \
        const int w = 16 / sizeof(T);                                                     \
        VI r = {0};                                                                       \
        int64_t i = 0;                                                                    \
        for (; i + w <= n; i += w) {                                                      \
            V v;                                                                          \
            memcpy(&v, x + i, sizeof v);                                                  \
            r |= v < 0;                                                                   \
        }                                                                                 \
        int any = 0;                                                                      \
        for (int j = 0; j < w; j++) any |= r[j] != 0;                                     \
        for (; i < n; i++) any |= x[i] < 0;                                               \
        return any;                                                                       \
    }
    FL_ANY_NEG(fl_any_neg_f32, float, int32_t)
    FL_ANY_NEG(fl_any_neg_f64, double, int64_t)
    """
    int fl_any_neg_f32(const float *x, int64_t n) nogil
    int fl_any_neg_f64(const double *x, int64_t n) nogil


cdef struct SignJob:
    int64_t n, per_block        # elements, elements per block
    const void *x
    bint f64
    uint8_t *hit                # a flag per block: no two threads write one byte


cdef void _neg_block(void *ctx, int64_t b, int tid, const void *tag) noexcept nogil:
    cdef SignJob *j = <SignJob *>ctx
    cdef int64_t s = b * j.per_block, m = min(j.per_block, j.n - s)
    j.hit[b] = (fl_any_neg_f64(<const double *>j.x + s, m) if j.f64
                else fl_any_neg_f32(<const float *>j.x + s, m))


def any_negative(a, int n_threads):
    """Whether the C-contiguous float32/float64 array a holds an entry below 0 (NaN and -0
    do not count), read once on n_threads threads of the pool in 1 MiB blocks: the check
    of an input's sign before a kernel (gaussian_nll_loss's var), where np.min reads on
    one thread."""
    import numpy as np
    if a.dtype not in (np.float32, np.float64) or not a.flags.c_contiguous:
        raise ValueError(f"any_negative: a must be a C-contiguous float32/float64 array, got "
                         f"{a.dtype} with strides {a.strides}")
    if n_threads < 1:
        raise ValueError(f"any_negative: n_threads must be >= 1, got {n_threads}")
    cdef const uint8_t[::1] bytes_ = a.reshape(-1).view(np.uint8)
    if bytes_.shape[0] == 0:
        return False
    cdef int64_t per = CBLK // a.dtype.itemsize
    hit = np.zeros((a.size + per - 1) // per, dtype=np.uint8)
    cdef uint8_t[::1] h = hit
    cdef SignJob job = SignJob(a.size, per, &bytes_[0], a.dtype == np.float64, &h[0])
    with nogil:
        run_blocks(_neg_block, &job, h.shape[0], n_threads)
    return bool(hit.any())


def openmp_version():
    """The _OPENMP date macro of the build (0: built without OpenMP, whose
    omp_get_max_threads() gives the default thread count)."""
    return FL_OPENMP_VERSION


def omp_max_threads():
    """omp_get_max_threads() of the calling thread: OMP_NUM_THREADS and
    threadpoolctl's "openmp" limit both act on it."""
    return fl_omp_max_threads()


def cpu_best_level():
    """0 baseline, 1 AVX2+FMA, 2 AVX-512 (F, DQ, BW, VL): the best this CPU runs."""
    return fl_cpu_best_level()


def has_x86_dispatch():
    return bool(FL_X86_DISPATCH)


def advise_hugepages(a):
    """Ask Linux for transparent huge pages under the writable array a (if 4 MiB or more)
    before its first write: memory another library just allocated (an XLA output
    buffer) then costs a fault per 2 MiB instead of per 4 KiB page; NumPy does this for
    its own large arrays. Where the kernel does not allow it, nothing happens."""
    if a.nbytes >= (4 << 20):
        fl_advise_huge(a.__array_interface__["data"][0], a.nbytes)
