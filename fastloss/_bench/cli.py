"""`python -m fastloss bench` (and `fastloss bench`): time every public loss against its peers."""
import argparse
import os
import sys

from . import UnknownName, core, filter_names, report, runner, select
from .core import shape_label

DESCRIPTION = """\
Time fastloss's functions, loss alone and loss + gradient, against NumPy (always),
SciPy (where it has the function), PyTorch and JAX (when installed), on default
shapes that take about a minute on a 2-core machine. Also measures the copy
bandwidth in the same run and prints, for memory-bound cases, fastloss's time as a
multiple of the time the fastest of several copies takes to move its bytes: np.copyto
on one thread and fastloss's own copies, with streaming stores or memcpy, on 1 and the
row's threads (x floor)."""

EPILOG = """\
examples:
  python -m fastloss bench                          # everything, float32, all threads
  python -m fastloss bench --quick                  # seconds: a smoke test
  python -m fastloss bench --filter cross_entropy --threads 1,2 --dtype float32,float64
  python -m fastloss bench --filter logsumexp,mse_loss --after hot,matmul,idle
  python -m fastloss bench --json out.json --plot out.png   (--plot needs matplotlib)
  python -m fastloss bench --list                   # the case names --filter takes"""


def _csv(convert, what):
    def parse(text):
        items = [s.strip() for s in text.split(",") if s.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}")
        return [convert(s) for s in items]
    return parse


def _thread_count(s):
    try:
        n = int(s)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"thread counts must be positive integers, got {s!r}")
    return n


def _dtype(s):
    if s not in core.DTYPES:
        raise argparse.ArgumentTypeError(f"dtype must be one of {', '.join(core.DTYPES)}, got {s!r}")
    return s


def _after(s):
    if s not in core.AFTER:
        raise argparse.ArgumentTypeError(f"--after takes {', '.join(core.AFTER)}, got {s!r}")
    return s


def parser():
    p = argparse.ArgumentParser(prog="fastloss bench", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="small shapes, few repeats, and only the loss + gradient case of each "
                        "function (unless --filter names a case id): seconds, a CI smoke test")
    p.add_argument("--large", action="store_true",
                   help="also the large cases (cross_entropy at 512x128256)")
    p.add_argument("--filter", metavar="NAMES", action="append", type=_csv(str, "names"),
                   help="only these cases: a family, a function, function:size or a case id "
                        "(comma-separated; see --list)")
    p.add_argument("--threads", metavar="N,...", type=_csv(_thread_count, "thread counts"),
                   help="thread counts to run at (default: fastloss.get_num_threads())")
    p.add_argument("--dtype", metavar="DTYPE,...", type=_csv(_dtype, "dtypes"),
                   default=["float32"], help="float32 and/or float64 (default: float32)")
    p.add_argument("--after", metavar="WHAT,...", type=_csv(_after, "conditions"),
                   default=["hot"],
                   help="what runs before each timed call: hot (nothing, the default), "
                        "matmul (a NumPy matmul) and/or idle (0.3 s of sleep; 5 calls per "
                        "implementation, so pick cases with --filter); several: a table each "
                        "and one comparing them")
    p.add_argument("--scaling", action="store_true",
                   help="also time the scalable cases at 5 sizes spanning 256x "
                        "(implied by --plot)")
    p.add_argument("--json", metavar="PATH", help="write the results and the machine description")
    p.add_argument("--plot", metavar="PATH.png",
                   help="draw speed-ups and the scaling sweep (needs matplotlib)")
    p.add_argument("--markdown", action="store_true", help="print the tables in Markdown")
    p.add_argument("--list", action="store_true", help="list the cases and exit")
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    return p


def _fail(msg):
    print(f"fastloss bench: error: {msg}", file=sys.stderr)
    return 2


def _list_cases(cases, quick):
    width = max(len(c.id) for c in cases)
    for c in cases:
        extra = "  (--large)" if c.large else ""
        print(f"{c.id.ljust(width)}  {shape_label(c.shape_for(quick))}{extra}")


def _header(machine):
    v = machine["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("numpy", "scipy", "torch", "jax") if v.get(k))
    cores = machine["physical_cores"] or "?"
    return (f"fastloss {v['fastloss']} bench on {machine['cpu']}: {cores} "
            f"cores, {machine['usable_cpus']} usable CPUs, SIMD {machine['fastloss_simd']}; "
            f"python {v['python']}, {libs}; {machine['date']}")


def main(argv=None):
    args = parser().parse_args(argv)
    names = [n for group in (args.filter or []) for n in group]
    try:
        cases = select(names, large=args.large, quick=args.quick)
    except UnknownName as e:
        return _fail(str(e))
    if args.list:
        _list_cases(select(names, large=True, quick=args.quick), args.quick)
        return 0
    if not cases:
        return _fail(f"no case to run (add --large for {', '.join(names)}); valid names: "
                     f"{', '.join(filter_names())}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return _fail("--plot needs matplotlib, which is not installed "
                         "(pip install matplotlib), or leave out --plot")
    for path, opt in ((args.json, "--json"), (args.plot, "--plot")):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            return _fail(f"{opt}: the folder of {path!r} does not exist")

    import fastloss
    threads = args.threads or [fastloss.get_num_threads()]
    dtypes = args.dtype
    progress = runner.Progress()
    run = runner.Runner(quick=args.quick, seed=args.seed, progress=progress)
    run.measure_bandwidth(max(threads))
    jobs = [(c, c.shape_for(args.quick)) for c in cases]
    by_after = {}
    for after in args.after:
        run.after = after
        label = f"after {after}: " if len(args.after) > 1 else ""
        by_after[after] = run.run(jobs, dtypes, threads, label=label)
    results = [r for rs in by_after.values() for r in rs]
    run.after = "hot"
    scaling = []
    if args.scaling or args.plot:
        jobs = runner.scaling_jobs(cases, args.quick)
        if jobs:
            scaling = run.run(jobs, dtypes[:1], [max(threads)], label="scaling ")

    machine = core.machine()
    print(_header(machine))
    for after, rs in by_after.items():
        print()
        if len(by_after) > 1 or after != "hot":
            print(f"after {after}: {core.AFTER_TEXT[after]}")
        print(report.format_table(rs, markdown=args.markdown))
    if len(by_after) > 1:
        print()
        print("the same medians side by side")
        print(report.format_after(by_after, markdown=args.markdown))
    if scaling:
        print()
        print(f"scaling: time against problem size ({dtypes[0]}, {max(threads)} threads)")
        print(report.format_table(scaling, markdown=args.markdown))
    print()
    copy_nbytes = core.COPY_BYTES["quick" if args.quick else "default"]
    for line in report.notes(results + scaling, run.bandwidth, copy_nbytes, threads):
        print(line)

    if args.json:
        settings = {"quick": args.quick, "large": args.large, "filter": names or None,
                    "after": args.after,
                    "threads": threads, "dtypes": dtypes, "repeats": list(run.repeats),
                    "copy_bytes": copy_nbytes, "scaling_factors": list(runner.SCALING_FACTORS)}
        report.write_json(args.json, machine, settings, run.bandwidth, results, scaling)
        print(f"wrote {args.json}")
    if args.plot:
        report.plot(args.plot, by_after[args.after[0]], scaling, machine, run.bandwidth)
        print(f"wrote {args.plot}")
    failed = [r for r in results + scaling if r.status.get("fastloss", "ok") != "ok"]
    if failed:
        print(f"fastloss failed in {len(failed)} case(s): see the notes above", file=sys.stderr)
        return 1
    return 0
