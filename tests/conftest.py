"""Fixtures shared by every test module."""
import numpy as np
import pytest

import fastloss


@pytest.fixture(params=fastloss.available_levels())
def simd(request):
    """Runs the test once per SIMD path this CPU supports (baseline, avx2, avx512)."""
    old = fastloss.get_simd()
    fastloss.set_simd(request.param)
    try:
        yield request.param
    finally:
        fastloss.set_simd(old)


@pytest.fixture(params=[1, 2, 3])
def n_threads(request):
    """Runs the test with 1, 2 and 3 OpenMP threads (3: more threads than blocks of some inputs)."""
    with fastloss.threads(request.param):
        yield request.param


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name: reproducible, different per test."""
    return np.random.default_rng(abs(hash(request.node.nodeid)) % 2**32)
