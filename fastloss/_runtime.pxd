from libc.stdint cimport int64_t

# A block of a parallel loop: fn(ctx, block, tid, tag) with tid in [0, n_threads). `tag`
# is always NULL; a kernel module's block function declares it `const floating *` so that
# Cython makes one specialisation per dtype (`fn[floating]`, cast to block_fn).
ctypedef void (*block_fn)(void *ctx, int64_t block, int tid, const void *tag) noexcept nogil

# Run fn for every block in [0, n_blocks) on up to n_threads threads, the caller one of
# them (csrc/fl_threadpool.h); returns when all are done.
cdef void run_blocks(block_fn fn, void *ctx, int64_t n_blocks, int n_threads) noexcept nogil

# Whether an output of nbytes is written with streaming stores (set_stream_bytes).
cdef bint stream_output(int64_t nbytes) noexcept nogil
