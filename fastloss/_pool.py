"""Fresh gradient buffers without fresh page faults: a bounded pool of reusable memory.

A gradient of 32 MiB or more is a fresh mmap from glibc on every call (its largest heap
block is 32 MiB) that the kernel then faults in, zeroing every page: a training loop that
drops the previous gradient paid ~2x the time of writing into grad_out. Smaller ones fare
no better once several are alive at once: glibc gives the top of its heap back when they
are freed together (two fresh 1 MiB arrays took 0.72 ms a call against 0.02 ms for one,
and gaussian_kl (8192, 32) 0.78 ms fresh against 0.10-0.14 ms into grad_out; three of
192 KiB already paid). Instead, each gradient of MIN_BYTES or more lives in an anonymous
private mapping (an mmap.mmap, the "owner") that the pool keeps; a later call reuses an
owner of the same size once no array can see it.

Safety: the returned array and every view derived from it (g[0], g.reshape(...),
np.frombuffer(g), a torch.from_numpy tensor) hold a reference to the owner through their
.base chain (np.frombuffer keeps a memoryview of the mmap), so the owner's reference count
is the pool's own exactly when nothing else can see the memory; that is checked under the
lock before an owner is handed out again. The pool never closes an owner: dropping its
reference unmaps the memory only when the last array goes.

Bound: the owners the pool tracks (in use or free) total at most the limit
(set_pool_limit, 1 GiB by default) and number at most MAX_OWNERS (each claim scans them);
beyond either a gradient is a plain np.empty. Free owners are dropped oldest first to make
room, and release_memory() forgets every owner.

fork: the mappings are private (copy-on-write), so parent and child never see each
other's writes; the child starts with an empty pool and a new lock (a lock held by
another thread at fork time would never be released there).
"""
import math
import mmap
import os
import sys
import threading

import numpy as np

# Below this a gradient is np.empty: glibc's heap keeps such blocks (three fresh 128 KiB
# arrays, filled and freed together: 8 us a call; three of 192 KiB: 187 us, faulted in).
MIN_BYTES = 64 << 10
DEFAULT_LIMIT = 1 << 30
MAX_OWNERS = 64
_HUGE = 2 << 20     # transparent huge page size on x86-64 and arm64 (4 KiB base pages)

_lock = threading.Lock()
_owners = []        # mmap.mmap objects, least recently used first
_held = 0           # bytes of _owners
_limit = DEFAULT_LIMIT
_enabled = hasattr(mmap, "MAP_PRIVATE")     # POSIX; elsewhere every gradient is np.empty


def _refs(owners, i):
    """Reference count of owners[i] seen from here (the list's, the argument's, any array's)."""
    return sys.getrefcount(owners[i])


_POOL_ONLY = _refs([object()], 0)   # what _refs reports when only the pool holds an owner


def _after_fork_in_child():
    global _lock, _owners, _held
    _lock, _owners, _held = threading.Lock(), [], 0


os.register_at_fork(after_in_child=_after_fork_in_child)


def _drop_free(need):
    """Drop free owners, oldest first, until one more of `need` bytes fits the limits."""
    global _held
    i = 0
    while (_held + need > _limit or len(_owners) >= MAX_OWNERS) and i < len(_owners):
        if _refs(_owners, i) == _POOL_ONLY:
            _held -= len(_owners.pop(i))
        else:
            i += 1
    return _held + need <= _limit and len(_owners) < MAX_OWNERS


def _claim(size):
    """A free owner of `size` bytes (made if needed, None if it would not fit); the caller
    holds the lock. The returned reference marks it in use for every other caller."""
    global _held
    for i in range(len(_owners)):
        if len(_owners[i]) == size and _refs(_owners, i) == _POOL_ONLY:
            owner = _owners.pop(i)
            _owners.append(owner)
            return owner
    if not _drop_free(size):
        return None
    try:
        owner = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    except OSError:                         # no address space: np.empty says MemoryError
        return None
    if size >= _HUGE and hasattr(mmap, "MADV_HUGEPAGE"):
        owner.madvise(mmap.MADV_HUGEPAGE)    # a fault per 2 MiB on first use, as NumPy asks
    _owners.append(owner)
    _held += size
    return owner


def empty(shape, dtype):
    """An uninitialised, writable, C-contiguous array (np.empty's contract) that no other
    live array shares memory with; large ones come from the pool."""
    dtype = np.dtype(dtype)
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    if not _enabled or nbytes < MIN_BYTES or nbytes > _limit:
        return np.empty(shape, dtype=dtype)
    # whole huge pages (the kernel aligns such a mapping), or whole pages below one
    unit = _HUGE if nbytes >= _HUGE else mmap.PAGESIZE
    size = -(-nbytes // unit) * unit
    with _lock:
        owner = _claim(size)
    if owner is None:
        return np.empty(shape, dtype=dtype)
    return np.frombuffer(owner, dtype=dtype, count=count).reshape(shape)


def held_bytes():
    """Bytes of the owners the pool tracks now (in use or free)."""
    return _held


def release_memory():
    """Forget every pooled gradient buffer; free ones are unmapped now, the ones an array
    still uses when their last array goes. Returns the bytes unmapped now.

    Returns
    -------
    int
        Bytes of the buffers no array was using (given back to the operating system).

    Examples
    --------
    >>> x = np.ones(1 << 21, np.float32)                 # an 8 MiB gradient
    >>> loss, g = fastloss.mse_loss(x, np.zeros_like(x), return_grad=True)
    >>> del g                                            # its buffer is free for reuse
    >>> fastloss.release_memory() >= 8 << 20
    True
    """
    global _owners, _held
    with _lock:
        free = sum(len(_owners[i]) for i in range(len(_owners)) if _refs(_owners, i) == _POOL_ONLY)
        _owners, _held = [], 0
    return free


def set_pool_limit(nbytes):
    """Set how many bytes of gradient buffers fastloss may keep for reuse; returns the old limit.

    Fresh gradients (``return_grad=True`` without ``grad_out``) of 64 KiB or more come from
    a pool of buffers that a later call reuses once no array (nor any view of one) uses
    them, so a training loop pays no page faults for its gradients. The pool tracks at
    most ``nbytes`` (default 1 GiB) in at most 64 buffers, in use or free; beyond that
    gradients are plain ``np.empty`` arrays. 0 turns the pool off (and releases it).

    Parameters
    ----------
    nbytes : int
        The new limit, >= 0.

    Returns
    -------
    int
        The previous limit.

    See Also
    --------
    release_memory

    Examples
    --------
    >>> old = fastloss.set_pool_limit(256 << 20)
    >>> fastloss.set_pool_limit(old) == 256 << 20
    True
    """
    global _limit, _owners, _held
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)):
        raise TypeError(f"nbytes must be an int, got {type(nbytes).__name__}")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    with _lock:
        old, _limit = _limit, int(nbytes)
        if not _drop_free(0):       # buffers in use: forget them, they go with their arrays
            _owners, _held = [], 0
    return old
