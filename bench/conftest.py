"""Options of the pytest-benchmark suite (bench/test_bench.py).

    pytest bench/ --benchmark-only --benchmark-group-by=group
    pytest bench/ --benchmark-only --benchmark-group-by=group --fl-filter cross_entropy \
        --fl-threads 1,2
    pytest bench/ --benchmark-only --benchmark-autosave      # then --benchmark-compare
"""


def pytest_addoption(parser):
    g = parser.getgroup("fastloss", "fastloss benchmark cases (the same as python -m fastloss bench)")
    g.addoption("--fl-quick", action="store_true", help="the small --quick shapes")
    g.addoption("--fl-large", action="store_true", help="also the large cases")
    g.addoption("--fl-filter", metavar="NAMES", default=None,
                help="comma-separated families, functions, function:size or case ids")
    g.addoption("--fl-dtype", metavar="DTYPES", default="float32", help="float32 and/or float64")
    g.addoption("--fl-threads", metavar="N,...", default=None,
                help="thread counts (default: fastloss.get_num_threads())")
    g.addoption("--fl-no-floor", action="store_true",
                help="leave out the copy rows (floor:NAME) that show each case's "
                     "bandwidth floor")
