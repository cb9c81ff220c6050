"""Fixtures shared by every test module."""
import os
import zlib

import numpy as np
import pytest

import fastloss

try:                       # the property suite's example counts (tests/test_properties.py)
    from hypothesis import settings
except ImportError:
    pass
else:
    # "ci" (default): bounded (the suite runs in under a minute) and derandomized, so a
    # commit's verdict does not depend on the run. HYPOTHESIS_PROFILE=explore: the same
    # counts with random seeds (or --hypothesis-seed=N) to search for new failures;
    # "thorough": 1000 examples a test.
    common = dict(deadline=None, print_blob=True, database=None)
    settings.register_profile("ci", max_examples=40, derandomize=True, **common)
    settings.register_profile("explore", max_examples=40, **common)
    settings.register_profile("thorough", max_examples=1000, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# FASTLOSS_SIMD pins the whole run to one path (e.g. the wheel check's baseline run).
SIMD_LEVELS = [os.environ["FASTLOSS_SIMD"]] if os.environ.get("FASTLOSS_SIMD") else fastloss.available_levels()


@pytest.fixture(params=SIMD_LEVELS)
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
    """Runs the test with 1, 2 and 3 threads (3: more threads than blocks of some inputs)."""
    with fastloss.threads(request.param):
        yield request.param


@pytest.fixture
def rng(request):
    """A generator seeded from the test's name (crc32: stable across processes, unlike
    hash()) and FASTLOSS_TEST_SEED (default 0): reproducible, different per test."""
    seed = int(os.environ.get("FASTLOSS_TEST_SEED", "0"))
    return np.random.default_rng([zlib.crc32(request.node.nodeid.encode()), seed])
