"""pytest-benchmark suite over the same cases as `python -m fastloss bench`
(fastloss/_bench/: the registry; nothing is defined twice here).

One test per case x implementation x dtype x thread count, grouped per case so that
fastloss, its peers and the case's bandwidth floor appear in one table: the bytes the
case must move copied by each copy of fastloss._bench.core.floor_copies ("floor:NAME":
np.copyto, fastloss._runtime.copy's streaming stores on 1 and the row's threads of
fastloss's pool, its memcpy on the row's threads); the floor is the fastest of them:

    pytest bench/ --benchmark-only --benchmark-group-by=group

Peers that are not installed are skipped ("torch not installed"). A grad_out case
adds only fastloss's grad_out timing to its grad case's group (peers have no grad_out).
"""
import numpy as np
import pytest

import fastloss
from fastloss._bench import UnknownName, core, select


def _csv(text):
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def pytest_generate_tests(metafunc):
    if "bench_param" not in metafunc.fixturenames:
        return
    cfg = metafunc.config
    try:
        cases = select(_csv(cfg.getoption("--fl-filter")), large=cfg.getoption("--fl-large"))
    except UnknownName as e:
        raise pytest.UsageError(str(e).replace("--filter", "--fl-filter")) from None
    dtypes = _csv(cfg.getoption("--fl-dtype"))
    for d in dtypes:
        if d not in core.DTYPES:
            raise pytest.UsageError(f"--fl-dtype: {d!r} is not one of {core.DTYPES}")
    try:
        threads = ([int(t) for t in _csv(cfg.getoption("--fl-threads"))]
                   or [fastloss.get_num_threads()])
    except ValueError:
        raise pytest.UsageError("--fl-threads takes comma-separated positive integers") from None
    if min(threads) < 1:
        raise pytest.UsageError("--fl-threads takes comma-separated positive integers")
    quick = cfg.getoption("--fl-quick")
    floor = not cfg.getoption("--fl-no-floor")
    params = []
    for case in cases:
        impls = [i for i in core.IMPLS if i in case.impls
                 and (i == "fastloss" or case.variant == case.peer_variant)]
        floored = floor and case.nbytes is not None and case.variant == case.peer_variant
        shape = case.shape_for(quick)
        for dtype in [case.dtype] if case.dtype else dtypes:     # half cases: their own
            for t in threads:
                copies = [f"floor:{c}" for c in core.floor_copies(t)] if floored else []
                for impl in impls + copies:
                    pid = f"{case.id}-{impl}-{dtype}-t{t}"
                    params.append(pytest.param((case, shape, impl, dtype, t), id=pid))
    metafunc.parametrize("bench_param", params)


_inputs = {}


def _inputs_for(case, shape, dtype):
    """The case's inputs, made once while consecutive tests use them (one set kept)."""
    key = case.data_key(shape, dtype)
    if key not in _inputs:
        _inputs.clear()
        _inputs[key] = core.Inputs(case.make(shape, dtype, np.random.default_rng(0)), dtype)
    return _inputs[key]


def test_bench(benchmark, bench_param):
    case, shape, impl, dtype, t = bench_param
    floor = impl.startswith("floor:")
    if not floor and core.peer(impl) is None:
        pytest.skip(f"{impl} not installed")
    inputs = _inputs_for(case, shape, dtype)
    nbytes = case.nbytes(shape, np.dtype(dtype).itemsize) if case.nbytes else None
    if floor:
        build, label = core.copy_floor_impl(nbytes, impl[len("floor:"):]), impl
    else:
        build = case.impls[impl]
        label = f"{impl} ({case.variant})" if impl == "fastloss" else impl
    benchmark.group = f"{case.group} {core.shape_label(shape)} {dtype} threads={t}"
    benchmark.extra_info.update(case=case.id, impl=label, shape=list(shape), dtype=dtype,
                                threads=t, bytes=nbytes, bytes_formula=case.bytes_formula)
    with core.thread_limits(t):
        fn = build(inputs)
        fn()                                   # warm-up: JIT compilation, first touch
        benchmark(fn)
