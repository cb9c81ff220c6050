# cython: language_level=3
"""Half-precision storage (float16, bfloat16) for the row kernels: the block conversions of
csrc/fl_half.h, cimported by the kernel modules with half paths (their set_level sets these
conversions' level too, through the family header's set_half_level). kind: 0 float16, 1 bfloat16 (_checks.half_kind)."""
from libc.stdint cimport int64_t, uint16_t

cdef extern from "fl_half.h" nogil:
    void fl_half_to_float(int kind, const uint16_t *src, float *dst, int64_t n)
    void fl_float_to_half(int kind, const float *src, uint16_t *dst, int64_t n)
