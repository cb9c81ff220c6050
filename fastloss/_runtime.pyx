# cython: language_level=3
"""What the compiled build can tell Python: OpenMP, its thread count, CPU SIMD level,
and the kernels' elementwise block size."""
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


def openmp_version():
    """The _OPENMP date macro the kernels were compiled with (0: built without OpenMP)."""
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
