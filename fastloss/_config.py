"""Threads and SIMD level: the run-time settings every kernel call reads."""
import contextlib
import os
import threading

from . import _runtime

# --- threads ------------------------------------------------------------------

_user_threads = None  # set_num_threads(); None: follow OpenMP (OMP_NUM_THREADS, threadpoolctl)
_lock = threading.Lock()

# Below this many elements (two element blocks) a kernel runs on one thread. Measured on the 2-core AMD EPYC (Zen 4) dev machine with the thread pool, kernels
# called directly, medians of 300 calls: BCE at 32768 elements 44 us on 1 thread, 23 us on
# 2; at 16384 (one kernel block) 23 us on either.
SERIAL_BELOW = 32768


_local = threading.local()    # this Python thread's own settings (local_setting)


def get_num_threads():
    """Threads a large kernel call will use.

    Returns
    -------
    int
        This Python thread's own count if one is set (fastloss.dask's blocks), else
        :func:`set_num_threads`'s value, else what OpenMP reports (``OMP_NUM_THREADS``,
        threadpoolctl's ``"openmp"`` limit). Inputs under ``SERIAL_BELOW`` (32768) elements
        run on one thread whatever this says.

    See Also
    --------
    set_num_threads, threads

    Examples
    --------
    >>> with fastloss.threads(1):
    ...     print(fastloss.get_num_threads())
    1
    """
    n = local("n")
    if n is not None:
        return n
    if _user_threads is not None:
        return _user_threads
    return max(1, _runtime.omp_max_threads())


def set_num_threads(n):
    """Use n threads from now on; None goes back to OpenMP's own setting.

    Parameters
    ----------
    n : int >= 1 or None
        The thread count of every later kernel call (process-wide); ValueError otherwise.

    Notes
    -----
    Results do not depend on the thread count (bit-for-bit). Until this is called,
    ``torch.set_num_threads`` sets fastloss's count too (both set OpenMP's).

    Examples
    --------
    >>> old = fastloss.get_num_threads()
    >>> fastloss.set_num_threads(1)
    >>> fastloss.get_num_threads()
    1
    >>> fastloss.set_num_threads(None)     # back to OpenMP's setting
    >>> fastloss.get_num_threads() == old
    True
    """
    global _user_threads
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int or None, got {n!r}")
    with _lock:
        _user_threads = n


@contextlib.contextmanager
def threads(n):
    """with fastloss.threads(n): ... -- n threads inside the block, the old setting after.

    Parameters
    ----------
    n : int >= 1 or None
        As :func:`set_num_threads`.

    Examples
    --------
    >>> x = np.random.default_rng(0).standard_normal((64, 1000))
    >>> y = np.zeros(64, dtype=np.int64)
    >>> with fastloss.threads(1):
    ...     one = fastloss.cross_entropy(x, y)
    >>> bool(one == fastloss.cross_entropy(x, y))        # any thread count: the same bits
    True
    """
    old = _user_threads
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(old)


@contextlib.contextmanager
def local_setting(name, value):
    """Within it, local(name) is value on this Python thread only; other Python threads
    keep theirs (fastloss.dask's blocks run on several scheduler threads at once)."""
    old = getattr(_local, name, None)
    setattr(_local, name, value)
    try:
        yield
    finally:
        setattr(_local, name, old)


def local(name):
    """This Python thread's value of a local_setting (None outside one)."""
    return getattr(_local, name, None)


def thread_local_threads(n):
    """Kernels called from this Python thread use n threads inside the block (None: the
    process-wide setting)."""
    return local_setting("n", n)


def threads_for(work):
    """Thread count for a call that touches `work` elements."""
    return 1 if work < SERIAL_BELOW else get_num_threads()


# --- SIMD level -----------------------------------------------------------------

LEVELS = ("baseline", "avx2", "avx512")
_kernel_modules = []          # modules exposing set_level(int)
_level = None


def available_levels():
    """SIMD levels this CPU (and this build) can run, lowest first.

    Returns
    -------
    tuple of str
        A prefix of ("baseline", "avx2", "avx512"); ("baseline",) on a build without x86
        dispatch.

    Examples
    --------
    >>> fastloss.available_levels()[0]
    'baseline'
    """
    best = _runtime.cpu_best_level() if _runtime.has_x86_dispatch() else 0
    return LEVELS[: best + 1]


def get_simd():
    """The SIMD level every kernel runs at now.

    Returns
    -------
    str
        "baseline", "avx2" or "avx512": the best of :func:`available_levels` unless
        ``FASTLOSS_SIMD`` or :func:`set_simd` chose another.

    Examples
    --------
    >>> fastloss.get_simd() in fastloss.available_levels()
    True
    """
    return LEVELS[_level]


def set_simd(name):
    """Run every kernel with the variants of one SIMD level ("baseline", "avx2", "avx512").

    Parameters
    ----------
    name : str
        One of :func:`available_levels`; ValueError for another name or a level this CPU or
        build cannot run. ``FASTLOSS_SIMD=name`` does the same at import.

    Examples
    --------
    >>> old = fastloss.get_simd()
    >>> fastloss.set_simd("baseline")
    >>> fastloss.get_simd()
    'baseline'
    >>> fastloss.set_simd(old)
    """
    global _level
    if name not in LEVELS:
        raise ValueError(f"SIMD level must be one of {LEVELS}, got {name!r}")
    if name not in available_levels():
        raise ValueError(f"SIMD level {name!r} is not supported by this CPU/build "
                         f"(available: {available_levels()})")
    _level = LEVELS.index(name)
    for mod in _kernel_modules:
        mod.set_level(_level)


def register_kernels(module):
    """Called by each user of a kernel module at import: the module gets the current
    level (and later changes of it)."""
    if module not in _kernel_modules:
        _kernel_modules.append(module)
        module.set_level(_level)


def _initial_level():
    forced = os.environ.get("FASTLOSS_SIMD")
    if forced:
        if forced not in LEVELS:
            raise ImportError(f"FASTLOSS_SIMD must be one of {LEVELS}, got {forced!r}")
        if forced not in available_levels():
            raise ImportError(f"FASTLOSS_SIMD={forced} is not supported by this CPU "
                              f"(available: {available_levels()})")
        return LEVELS.index(forced)
    return len(available_levels()) - 1


_level = _initial_level()
