"""Build and run-time configuration: OpenMP, threads, SIMD dispatch."""
import os
import subprocess
import sys

import numpy as np
import pytest

import fastloss as fl
import fastloss.reference as ref


def _run_python(code, **env):
    full_env = dict(os.environ, **env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env,
                         timeout=120)
    return out


def test_built_with_openmp():
    cfg = fl.show_config(file=open(os.devnull, "w"))
    assert cfg["openmp"], "fastloss was built without OpenMP"
    assert cfg["openmp_version"] >= 201307


def test_show_config_prints(capsys):
    fl.show_config()
    out = capsys.readouterr().out
    for key in ("version", "simd", "openmp", "num_threads"):
        assert key in out
    assert fl.__version__ in out


def test_set_num_threads_and_context():
    default = fl.get_num_threads()
    with fl.threads(3):
        assert fl.get_num_threads() == 3
        with fl.threads(1):
            assert fl.get_num_threads() == 1
        assert fl.get_num_threads() == 3
    assert fl.get_num_threads() == default
    fl.set_num_threads(2)
    try:
        assert fl.get_num_threads() == 2
    finally:
        fl.set_num_threads(None)
    assert fl.get_num_threads() == default
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="n must be"):
            fl.set_num_threads(bad)


def test_omp_num_threads_respected():
    out = _run_python("import fastloss; print(fastloss.get_num_threads())", OMP_NUM_THREADS="1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "1"
    out = _run_python("import fastloss; print(fastloss.get_num_threads())", OMP_NUM_THREADS="5")
    assert out.stdout.strip() == "5"


def test_threadpoolctl_limit_respected():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with fl.threads(None):
        with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
            assert fl.get_num_threads() == 1
        assert fl.get_num_threads() >= 1
    libs = [i for i in threadpoolctl.threadpool_info() if i["user_api"] == "openmp"]
    assert libs, "threadpoolctl does not see the OpenMP runtime fastloss loaded"


def test_simd_levels():
    levels = fl.available_levels()
    assert levels[0] == "baseline"
    # the best one by default, unless FASTLOSS_SIMD pinned one at import
    assert fl.get_simd() == (os.environ.get("FASTLOSS_SIMD") or levels[-1])
    with pytest.raises(ValueError, match="SIMD level"):
        fl.set_simd("sse9")


@pytest.mark.parametrize("level", ["baseline", "avx2", "avx512"])
def test_fastloss_simd_env_forces_path(level):
    if level not in fl.available_levels():
        pytest.skip(f"{level} not supported here")
    code = ("import fastloss, numpy as np; print(fastloss.get_simd()); "
            "print(float(fastloss.cross_entropy(np.arange(40.).reshape(2, 20), np.array([3, 19]))))")
    out = _run_python(code, FASTLOSS_SIMD=level)
    assert out.returncode == 0, out.stderr
    got_level, value = out.stdout.split()
    assert got_level == level
    expected = ref.cross_entropy(np.arange(40.).reshape(2, 20), np.array([3, 19]))
    np.testing.assert_allclose(float(value), expected, rtol=1e-13)


def test_fastloss_simd_env_rejects_unknown():
    out = _run_python("import fastloss", FASTLOSS_SIMD="sse9")
    assert out.returncode != 0 and "FASTLOSS_SIMD" in out.stderr


def test_serial_below_threshold():
    """Small inputs run on one thread, large ones on all of them."""
    from fastloss import _config
    with fl.threads(2):
        assert _config.threads_for(_config.SERIAL_BELOW - 1) == 1
        assert _config.threads_for(_config.SERIAL_BELOW) == 2


def test_thread_local_threads_is_per_python_thread():
    import threading
    fl.set_num_threads(2)
    try:
        seen, go = {}, threading.Barrier(3)

        def run(n):
            with fl._config.thread_local_threads(n):
                go.wait()                          # all three inside at once
                seen[n] = fl.get_num_threads()
                go.wait()
        ts = [threading.Thread(target=run, args=(n,)) for n in (1, 3, 5)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert seen == {1: 1, 3: 3, 5: 5}
        assert fl.get_num_threads() == 2
    finally:
        fl.set_num_threads(None)


def test_advise_hugepages_keeps_the_data():
    """madvise on the whole pages inside any array (unaligned start and end, small, empty):
    the data and later writes are untouched, and a short array is left alone."""
    from fastloss import _runtime
    big = np.arange((5 << 20) // 8 + 3, dtype=np.float64)
    for a in (big[1:-1], big, np.empty(0), np.arange(7.0)):
        before = a.copy()
        _runtime.advise_hugepages(a)
        np.testing.assert_array_equal(a, before)
        a[:] = 2.0
        assert np.all(a == 2.0)
