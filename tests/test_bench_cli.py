"""The benchmark command line (python -m fastloss bench) and its case registry:
quick runs of filtered cases, the JSON file, the errors, and that every peer
computes the same numbers as fastloss (on the --quick shapes)."""
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import fastloss
from fastloss import __main__ as cli_main
from fastloss._bench import UnknownName, all_cases, core, runner, select
from fastloss._bench.builders import half_dtypes
from fastloss._bench.cli import main as bench_main


def run_cli(capsys, *args):
    rc = cli_main.main(["bench", *args])
    out, err = capsys.readouterr()
    return rc, out, err


# --- registry -----------------------------------------------------------------------

def test_case_ids_unique_and_complete():
    cases = all_cases()
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids))
    for c in cases:
        assert "fastloss" in c.impls and "numpy" in c.impls, c.id
        assert c.variant in core.VARIANTS + ("fwd",), c.id
        assert set(c.impls) <= set(core.IMPLS), c.id


def test_every_public_function_has_a_case():
    """A function exported by fastloss from a loss-family module must be benchmarked."""
    funcs = {c.func for c in all_cases()}
    for name in fastloss.__all__:
        obj = getattr(fastloss, name)
        mod = getattr(obj, "__module__", "") or ""
        family = mod.rpartition(".")[2]
        if callable(obj) and mod.startswith("fastloss.") and not family.startswith("_"):
            assert name in funcs, f"fastloss.{name} ({mod}) has no benchmark case"


def test_select():
    ce = select(["cross_entropy"])
    assert ce and all(c.func == "cross_entropy" and not c.large for c in ce)
    big = select(["cross_entropy:v128k"])
    assert big and all(c.large for c in big)                # named by size: large runs
    assert {c.id for c in select(["cross_entropy"], large=True)} >= {c.id for c in big}
    assert [c.id for c in select(["softmax:fwd"])] == ["softmax:fwd"]
    assert select(["classification"]) == [c for c in all_cases() if c.family == "classification"
                                          and not c.large]
    with pytest.raises(UnknownName, match="'nope'.*valid names: .*cross_entropy"):
        select(["softmax", "nope"])
    quick = select(["cross_entropy", "softmax", "cross_entropy:c10:loss"], quick=True)
    halves = [f"cross_entropy:v32k-{h}:grad" for h in ("bf16", "f16")
              if {"f16": "float16", "bf16": "bfloat16"}[h] in half_dtypes()]
    assert sorted(c.id for c in quick) == sorted(["cross_entropy:c10:grad", "cross_entropy:c10:loss",
                                                  "cross_entropy:c100:grad", "cross_entropy:v32k:grad",
                                                  "softmax:fwd"] + halves)
    assert {c.variant for c in select(quick=True)} == {"grad", "fwd"}


def test_byte_formulas():
    ce = {c.variant: c for c in select(["cross_entropy:v32k"])}
    n, c = 2048, 32000
    assert ce["loss"].nbytes((n, c), 4) == n * c * 4 + 8 * n
    assert ce["grad"].nbytes((n, c), 4) == 2 * n * c * 4 + 8 * n
    half = {c.variant: c for c in select(["cross_entropy:v32k-f16"])}
    assert half["loss"].dtype == "float16"
    assert half["loss"].nbytes((n, c), 4) == n * c * 2 + 8 * n      # its own 2-byte logits
    bce = {c.variant: c for c in select(["binary_cross_entropy_with_logits"])}
    assert bce["loss"].nbytes((10, 3), 8) == 2 * 30 * 8
    assert bce["grad_out"].nbytes((10, 3), 8) == 3 * 30 * 8


# --- the runner: measurements and the agreement check -------------------------------

def _fake_case(peer_fn, variant="loss"):
    def make(shape, dtype, rng):
        return {"x": np.arange(np.prod(shape), dtype=dtype).reshape(shape)}
    return core.Case(func="fake", family="test", variant=variant, shape=(4, 8), quick_shape=(4, 8),
                     make=make, nbytes=lambda shp, s: int(np.prod(shp)) * s,
                     impls={"fastloss": lambda d: (lambda: np.sum(d["x"])),
                            "numpy": lambda d: (lambda: peer_fn(d["x"]))})


def test_runner_flags_a_peer_that_differs():
    good = runner.Runner(quick=True, bandwidth={"np.copyto": 1e9}).run(
        [(_fake_case(np.sum), (4, 8))], ["float64"], [1])[0]
    assert good.status == {"fastloss": "ok", "numpy": "ok"}
    assert good.speedup("numpy") > 0 and good.x_floor > 0 and good.nbytes == 32 * 8
    assert len(good.times["fastloss"].times) >= core.REPEATS["quick"][0]

    bad = runner.Runner(quick=True, bandwidth={"np.copyto": 1e9}).run(
        [(_fake_case(lambda x: np.sum(x) + 1), (4, 8))], ["float64"], [1])[0]
    assert bad.status["numpy"] == "differs"
    from fastloss._bench import report
    text = report.format_table([bad])
    assert " !" in text


def test_floor_is_the_fastest_copy_at_the_rows_threads():
    run = runner.Runner(quick=True, bandwidth={"np.copyto": 1e9})
    one, two = run.run([(_fake_case(np.sum), (4, 8))], ["float64"], [1, 2])
    assert set(one.floor_times) == {"np.copyto", "stream:1"}
    assert set(two.floor_times) == {"np.copyto", "stream:1", "stream:2", "copy:2"}
    assert one.floor_times["np.copyto"] == two.floor_times["np.copyto"]   # timed once per size
    for r in (one, two):
        assert r.floor_s == min(r.floor_times.values()) > 0
        assert r.floor_times[r.floor_copy] == r.floor_s
        assert r.x_floor == r.median("fastloss") / r.floor_s
    # the table's and the JSON's x floor use the fastest copy, whichever it is
    from fastloss._bench import report
    for fastest in two.floor_times:
        times = {c: (1e-3 if c == fastest else 4e-3) for c in two.floor_times}
        two.floor_times = times
        assert two.floor_s == 1e-3 and two.floor_copy == fastest
        assert report.table_rows([two])[1][0][-1] == f"{two.median('fastloss') / 1e-3:.2f}"
        d = report.result_dict(two)
        assert d["floor_s"] == 1e-3 and d["floor_copy"] == fastest
        assert d["floor_times_s"] == times
        bw = {"np.copyto": 2e10, "stream:1": 2.5e10, "stream:2": 3e10, "copy:2": 2.2e10}
        text = "\n".join(report.notes([two], bw, 64 << 20, [1, 2]))
        assert f"the fastest was {report.copy_text(fastest)} in 1 of 1 rows" in text
    assert ("copy bandwidth (the fastest copy): 30.0 GB/s (np.copyto on one thread: 20.0 GB/s; "
            "fastloss._runtime.copy (streaming stores) on 1 thread: 25.0 GB/s; "
            "fastloss._runtime.copy (streaming stores) on 2 threads: 30.0 GB/s; "
            "fastloss._runtime.copy (memcpy) on 2 threads: 22.0 GB/s;") in text


def test_products_column_times_the_cases_products_at_the_rows_threads(monkeypatch):
    calls = []
    real = core.products_impl

    def spy(shapes, dtype):
        calls.append((tuple(shapes), dtype))
        return real(shapes, dtype)
    monkeypatch.setattr(core, "products_impl", spy)
    case = dataclasses.replace(_fake_case(np.sum), products_formula="x @ y",
                               products=lambda shp: [(shp[0], shp[1], 3), (2, 2, 2)])
    run = runner.Runner(quick=True, bandwidth={"np.copyto": 1e9})
    one, two = run.run([(case, (4, 8))], ["float64"], [1, 2])
    assert calls == [(((4, 8, 3), (2, 2, 2)), "float64")] * 2      # once per thread count
    for r in (one, two):
        assert r.products == [(4, 8, 3), (2, 2, 2)] and r.products_s > 0
        assert r.x_products == r.median("fastloss") / r.products_s
    from fastloss._bench import report
    header, rows = report.table_rows([one, two])
    assert header[-1] == "x products" and rows[1][-1] == f"{two.x_products:.2f}"
    assert report.result_dict(two)["products_mkn"] == [(4, 8, 3), (2, 2, 2)]
    assert "  x @ y: fake:loss" in report.notes([one, two], {"np.copyto": 2e10}, 64 << 20, [1, 2])
    plain = runner.Runner(quick=True, bandwidth={"np.copyto": 1e9}).run(
        [(_fake_case(np.sum), (4, 8))], ["float64"], [1])
    assert "x products" not in report.table_rows(plain)[0]       # no products, no column
    # the benchmark's product formulas: the shapes the math needs
    ids = {c.id: c for c in select(["metric", "linear_cross_entropy:v32k"])}
    assert ids["pairwise_distances:fwd"].products((2048, 128)) == [(2048, 128, 2048)]
    assert ids["info_nce_loss:grad"].products((8, 4)) == [(8, 4, 8), (8, 8, 4), (8, 8, 4)]
    assert ids["nt_xent_loss:loss"].products((8, 4)) == [(16, 4, 16)]
    assert ids["linear_cross_entropy:v32k:grad"].products((2, 3, 5)) == [(2, 3, 5), (2, 5, 3),
                                                                         (5, 2, 3)]
    assert ids["triplet_margin_loss:loss"].products is None


def test_copy_floor_impl_times_each_named_copy(monkeypatch):
    from fastloss import _runtime
    calls = []
    monkeypatch.setattr(_runtime, "copy",
                        lambda src, dst, n, stream: calls.append((src.size, dst.size, n, stream)))
    core.copy_floor_impl(1000, "copy:3")(None)()
    core.copy_floor_impl(1000, "stream:1")(None)()
    assert calls == [(500, 500, 3, False), (500, 500, 1, True)]
    core.copy_floor_impl(1000, "np.copyto")(None)()        # np.copyto: not the pool's copy
    assert len(calls) == 2
    assert core.floor_copies(1) == ["np.copyto", "stream:1"]
    assert core.floor_copies(3) == ["np.copyto", "stream:1", "stream:3", "copy:3"]
    bw = core.copy_bandwidth(1 << 16, repeats=1, threads=3)
    assert list(bw) == core.floor_copies(3) and min(bw.values()) > 0
    assert len(calls) == 2 + 2 * 3                           # each pool copy: warm-up, timed


def test_each_timing_starts_after_idle_time_except_quick(monkeypatch):
    """A default run sleeps SETTLE_S before the copy floor's and each implementation's
    calls (threads another library left spinning go idle first); --quick does not."""
    slept = []
    monkeypatch.setattr(core.time, "sleep", slept.append)
    runner.Runner(quick=True, bandwidth={"np.copyto": 1e9}).run([(_fake_case(np.sum), (4, 8))], ["float64"], [1])
    assert slept == []
    r = runner.Runner(bandwidth={"np.copyto": 1e9}).run([(_fake_case(np.sum), (4, 8))], ["float64"], [1])[0]
    assert r.status == {"fastloss": "ok", "numpy": "ok"}
    assert slept == [core.SETTLE_S] * 4          # the two floors (1 thread), fastloss, numpy


def test_runner_reports_a_failing_peer():
    def boom(x):
        raise RuntimeError("peer broke")
    run = runner.Runner(quick=True, bandwidth={"np.copyto": 1e9})
    r = run.run([(_fake_case(boom), (4, 8))], ["float32"], [1])[0]
    assert r.status["numpy"].startswith("error: RuntimeError: peer broke")
    assert "numpy" not in r.times and r.status["fastloss"] == "ok"


def test_peers_agree_with_fastloss():
    """Every installed peer of every case computes fastloss's numbers (quick shapes,
    float64: a peer with another formula differs far beyond rounding; grad_out cases
    time the same peers as grad cases)."""
    run = runner.Runner(quick=True, bandwidth={"np.copyto": 1e9})
    run.repeats = (1, 1, 0.0)
    cases = [c for c in all_cases() if not c.large and c.variant != "grad_out"]
    results = run.run([(c, c.shape_for(True)) for c in cases], ["float64"], [1])
    bad = [(r.case.id, r.dtype, p, st) for r in results for p, st in r.status.items()
           if st not in ("ok", "not installed")]
    assert not bad
    assert all(r.status["fastloss"] == "ok" for r in results)


# --- the command line -----------------------------------------------------------------

def test_quick_filtered_run_and_json(capsys, tmp_path):
    path = tmp_path / "out.json"
    rc, out, err = run_cli(capsys, "--quick", "--filter", "softmax,cross_entropy:c10:grad_out",
                           "--threads", "1,2", "--json", str(path))
    assert rc == 0, err
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("case"))
    for col in ("shape", "dtype", "threads", "fastloss", "numpy", "vs numpy", "x floor"):
        assert col in head
    rows = [line for line in lines if line.startswith(("softmax:fwd", "cross_entropy:c10"))]
    assert len(rows) == 4                                   # 2 cases x 2 thread counts
    assert "copy bandwidth" in out and "x floor" in out
    assert "np.copyto on one thread: " in out
    assert "fastloss._runtime.copy (streaming stores) on 2 threads: " in out
    assert "the fastest was " in out and " of 4 rows" in out
    assert "[" in err                                       # the progress line

    doc = json.loads(path.read_text())
    m = doc["machine"]
    for key in ("cpu", "physical_cores", "usable_cpus", "versions", "date", "fastloss_simd"):
        assert key in m
    assert m["versions"]["numpy"] == np.__version__
    assert m["versions"]["fastloss"] == fastloss.__version__
    assert doc["settings"]["threads"] == [1, 2] and doc["settings"]["quick"] is True
    bw = doc["copy_bandwidth_by_copy"]
    assert list(bw) == core.floor_copies(2) and min(bw.values()) > 0
    assert doc["copy_bandwidth_bytes_per_s"] == max(bw.values())
    res = doc["results"]
    assert [(r["case"], r["threads"]) for r in res] == [
        ("cross_entropy:c10:grad_out", 1), ("cross_entropy:c10:grad_out", 2),
        ("softmax:fwd", 1), ("softmax:fwd", 2)]
    for r in res:
        assert r["status"]["fastloss"] == "ok" and r["median_s"]["fastloss"] > 0
        assert r["median_s"]["numpy"] > 0 and r["speedup"]["numpy"] > 0
        assert r["bytes"] > 0 and r["floor_s"] > 0 and r["x_floor"] > 0
        floors = r["floor_times_s"]
        assert list(floors) == core.floor_copies(r["threads"]) and min(floors.values()) > 0
        assert r["floor_s"] == min(floors.values()) == floors[r["floor_copy"]]
        assert r["x_floor"] == r["median_s"]["fastloss"] / r["floor_s"]
        assert r["dtype"] == "float32" and r["shape"] in ([8192, 10], [128, 1024])
    assert doc["scaling"] == []


def test_markdown_and_dtype(capsys):
    rc, out, _ = run_cli(capsys, "--quick", "--filter", "logsumexp", "--dtype", "float64",
                         "--markdown")
    assert rc == 0
    assert "| case | shape | dtype | threads | fastloss |" in out
    assert "| logsumexp:fwd | 128x1024 | float64 |" in out


def test_after_conditions(capsys, tmp_path, monkeypatch):
    """--after: every timed call of every implementation follows the condition's untimed
    call (counted here), a table per condition, one side by side, "after" in the JSON."""
    seen = []
    real = core.before_call

    def counting(after):
        fn = real(after)
        if fn is None:
            return None

        def before():
            seen.append(after)
            fn()
        return before
    monkeypatch.setattr(core, "before_call", counting)
    monkeypatch.setattr(core, "IDLE_REPEATS", (3, 3, 0.0))
    path = tmp_path / "after.json"
    rc, out, err = run_cli(capsys, "--quick", "--filter", "mse_loss:grad", "--after",
                           "hot,matmul,idle", "--json", str(path))
    assert rc == 0, err
    for cond in ("after hot:", "after matmul:", "after idle:", "the same medians side by side",
                 "matmul (x hot)", "idle (x hot)"):
        assert cond in out
    doc = json.loads(path.read_text())
    assert [r["after"] for r in doc["results"]] == ["hot", "matmul", "idle"]
    assert doc["settings"]["after"] == ["hot", "matmul", "idle"]
    timed = {a: sum(r["repeats"].values()) for a, r in
             ((r["after"], r) for r in doc["results"])}
    assert seen.count("matmul") == timed["matmul"] and seen.count("idle") == timed["idle"]
    assert timed["idle"] == 3 * len(doc["results"][2]["repeats"])


def test_list(capsys):
    rc, out, _ = run_cli(capsys, "--list")
    assert rc == 0
    assert "cross_entropy:v32k:grad_out" in out and "2048x32000" in out
    assert "cross_entropy:v128k:loss" in out and "(--large)" in out


@pytest.mark.parametrize("args, message", [
    (["--bogus"], "unrecognized arguments: --bogus"),
    (["--filter", "nope"], "unknown --filter name 'nope'; valid names: classification, "),
    (["--threads", "0"], "thread counts must be positive integers"),
    (["--threads", "two"], "thread counts must be positive integers"),
    (["--dtype", "float16"], "dtype must be one of float32, float64"),
    (["--after", "lunch"], "--after takes hot, matmul, idle"),
    (["--json", "/nonexistent-dir/x.json"], "--json: the folder"),
])
def test_bad_arguments_exit_2(capsys, args, message):
    rc, out, err = run_cli(capsys, *args)
    assert rc == 2
    assert message in err
    assert "case" not in out                                # nothing ran


def test_unknown_command(capsys):
    assert cli_main.main(["benchmark"]) == 2
    assert "unknown command 'benchmark'" in capsys.readouterr().err
    assert cli_main.main([]) == 2
    assert cli_main.main(["--help"]) == 0


def test_plot_without_matplotlib(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)    # import matplotlib -> ImportError
    rc, out, err = run_cli(capsys, "--quick", "--filter", "softmax", "--plot", "x.png")
    assert rc == 2
    assert "--plot needs matplotlib, which is not installed" in err


def test_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    rc, out, err = run_cli(capsys, "--quick", "--filter",
                           "binary_cross_entropy_with_logits:grad_out", "--plot", str(path))
    assert rc == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "scaling: time against problem size" in out
    sizes = [line.split()[1] for line in out.split("scaling:")[1].splitlines()
             if line.startswith("binary_cross_entropy_with_logits:grad")]
    elems = sorted({int(np.prod([int(v) for v in s.split("x")])) for s in sizes})
    assert len(elems) >= 4 and elems[-1] >= 100 * elems[0]


def test_python_dash_m_exit_status():
    p = subprocess.run([sys.executable, "-m", "fastloss", "bench", "--filter", "nope"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "unknown --filter name 'nope'" in p.stderr


def test_bench_main_is_the_console_entry():
    """pyproject's `fastloss = "fastloss.__main__:main"` reaches the bench command."""
    assert cli_main.main(["bench", "--list"]) == 0
    assert bench_main(["--list"]) == 0


def test_missing_peer_says_not_installed(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(core._modules, "torch", None)       # as if import torch failed
    path = tmp_path / "out.json"
    rc, out, _ = run_cli(capsys, "--quick", "--filter", "softmax", "--json", str(path))
    assert rc == 0
    head = next(line for line in out.splitlines() if line.startswith("case"))
    assert "torch" not in head and "numpy" in head
    assert "torch: not installed" in out
    res = json.loads(path.read_text())["results"][0]
    assert res["status"]["torch"] == "not installed" and "torch" not in res["median_s"]
