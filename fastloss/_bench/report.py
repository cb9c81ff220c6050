"""Output of a benchmark run: the table (plain text or Markdown), the JSON file, the plot."""
import json
import os

import numpy as np

from . import core
from .core import PEERS, fmt_time, shape_label


def _speedup(x):
    if x is None:
        return ""
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x" if x < 100 else f"{x:.0f}x"


def peers_in(results):
    """Peers that some result has a column for (installed or not), in IMPLS order."""
    return [p for p in PEERS if any(p in r.status for r in results)]


def table_rows(results):
    """(header, rows) of the table: strings only."""
    peers = [p for p in peers_in(results)
             if any(r.status.get(p) not in (None, "not installed") for r in results)]
    mm = any(r.products_s for r in results)
    header = (["case", "shape", "dtype", "threads", "fastloss"] + peers
              + [f"vs {p}" for p in peers] + ["x floor"] + (["x products"] if mm else []))
    rows = []
    for r in results:
        cells = [r.case.id, shape_label(r.shape), r.dtype, str(r.threads)]
        for impl in ["fastloss"] + peers:
            st = r.status.get(impl)
            if st is None:
                cells.append("")
            elif st.startswith("error"):
                cells.append("error")
            else:
                mark = (" *" if impl in r.case.peer_notes else "") + (" !" if st == "differs" else "")
                cells.append(fmt_time(r.median(impl)) + mark)
        cells += [_speedup(r.speedup(p)) for p in peers]
        xf = r.x_floor
        cells.append(f"{xf:.2f}" if xf is not None else "")
        if mm:
            xp = r.x_products
            cells.append(f"{xp:.2f}" if xp is not None else "")
        rows.append(cells)
    return header, rows


def format_table(results, markdown=False):
    header, rows = table_rows(results)
    return _table(header, rows, markdown, left=4)


def format_after(by_after, markdown=False):
    """One table comparing the --after conditions: a row per case and implementation, its
    median under each condition (and, after the first, as a multiple of the first's)."""
    conds = list(by_after)
    base = by_after[conds[0]]
    header = ["case", "shape", "dtype", "threads", "impl"] + [
        c if i == 0 else f"{c} (x {conds[0]})" for i, c in enumerate(conds)]
    rows = []
    for i, r0 in enumerate(base):
        for impl in ("fastloss",) + tuple(PEERS):
            if r0.median(impl) is None:
                continue
            cells = [r0.case.id, shape_label(r0.shape), r0.dtype, str(r0.threads), impl]
            for c in conds:
                m = by_after[c][i].median(impl)
                cells.append("" if m is None else fmt_time(m) if c == conds[0]
                             else f"{fmt_time(m)} ({m / r0.median(impl):.2f})")
            rows.append(cells)
    return _table(header, rows, markdown, left=5)


def _table(header, rows, markdown, left):
    """Aligned text (the first `left` columns left-aligned) or Markdown."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


COPY_NAME = "fastloss._runtime.copy"


def copy_text(copy):
    """A copy of core.floor_copies in words."""
    if copy == "np.copyto":
        return "np.copyto on one thread"
    kind, threads = copy.split(":")
    how = "streaming stores" if kind == "stream" else "memcpy"
    return f"{COPY_NAME} ({how}) on {threads} thread{'s' if threads != '1' else ''}"


def bandwidth_text(bandwidth, copy_nbytes):
    """The copy-bandwidth line: the fastest copy's, then each copy's ({copy: bytes/s})."""
    each = "; ".join(f"{copy_text(c)}: {bw / 1e9:.1f} GB/s" for c, bw in bandwidth.items())
    return (f"copy bandwidth (the fastest copy): {max(bandwidth.values()) / 1e9:.1f} GB/s ({each}; "
            f"read + write, {copy_nbytes >> 20} MiB into an already-touched buffer, same run)")


def notes(results, bandwidth, copy_nbytes, thread_counts):
    """The lines under the table: what the columns mean, bytes per case, peers."""
    floored = [r for r in results if r.floor_times]
    won = {}
    for r in floored:
        won[r.floor_copy] = won.get(r.floor_copy, 0) + 1
    lines = [
        bandwidth_text(bandwidth, copy_nbytes),
        f"times: median of at least 3 calls (5 when fast), after {core.SETTLE_S:g} s of idle time "
        "(other libraries' threads stop spinning; not with --quick) and one untimed warm-up call "
        "for fastloss, torch and jax; vs PEER: peer time / fastloss time (> 1: fastloss is faster)",
        "x floor: fastloss time / floor time, the floor being the fastest of several copies of "
        "the bytes the case must move between already-touched buffers, each timed (median) in "
        "the same run at that size: np.copyto (one thread) and, on fastloss's thread pool "
        f"(1 MiB blocks), {COPY_NAME} with streaming (non-temporal) stores on 1 thread and "
        "on the row's, and with memcpy on the row's threads when more than one; 1.00: "
        "fastloss moves its data as fast as the fastest copy"
        + ("; the fastest was " + ", ".join(f"{copy_text(c)} in {n} of {len(floored)} rows"
                                             for c, n in sorted(won.items(), key=lambda x: -x[1]))
           if floored else "")
        + ". Bytes (s = bytes per element):",
    ]
    lines += _by_formula(results, lambda c: c.bytes_formula,
                         lambda c: c.func if c.variant == "fwd"
                         else f"{c.func}:{'loss' if c.variant == 'loss' else 'grad'}")
    by_products = _by_formula(results, lambda c: c.products_formula, lambda c: c.id)
    if by_products:
        lines.append("x products: fastloss time / the time of the matrix products the case's math "
                     "needs (rows dominated by them), each np.matmul of random arrays of the "
                     "row's dtype into a preallocated output, BLAS on the row's threads, timed "
                     "(median) in the same run; 1.00: fastloss takes as long as its products alone:")
        lines += by_products
    if any(r.case.variant == "grad_out" for r in results):
        lines.append("grad: the gradient goes into a new array each call; grad_out: into a reused "
                     "buffer (fastloss's grad_out=). Peers have no such option: their grad_out "
                     "row repeats their grad time.")
    for p in peers_in(results):
        mod = core.peer(p)
        if mod is None:
            lines.append(f"{p}: not installed")
            continue
        dist = "scipy" if p == "scipy" else p
        v = core.version(dist) or getattr(mod, "__version__", "?")
        if p == "torch":
            lines.append(f"torch {v}: torch.set_num_threads(threads) for each row")
        elif p == "jax":
            xla = os.environ.get("XLA_FLAGS") or "unset"
            lines.append(f"jax {v}: jit, block_until_ready, compilation in the warm-up; "
                         f"{core.JAX_THREADS_NOTE} (XLA_FLAGS={xla})")
        elif p == "numpy":
            blas = ("BLAS limited to the row's threads by threadpoolctl" if core.blas_limited()
                    else "BLAS threads not limited (threadpoolctl is not installed)")
            lines.append(f"numpy {v}: in the input dtype; ufuncs use one thread, {blas}")
        elif p == "scipy":
            lines.append(f"scipy {v}: scipy.special (one thread)")
    starred = {}
    for r in results:
        for impl, note in r.case.peer_notes.items():
            funcs = starred.setdefault((impl, note), [])
            if r.case.func not in funcs:
                funcs.append(r.case.func)
    for (impl, note), funcs in starred.items():
        lines.append(f"* {impl}: {note} ({', '.join(funcs)})")
    bad = [(r, p) for r in results for p, st in r.status.items() if st == "differs"]
    if bad:
        lines.append("! the peer's result differs from fastloss's beyond "
                     f"rtol {core.AGREE_RTOL}: " + ", ".join(f"{r.case.id} {p}" for r, p in bad))
    errs = [(r, p, st) for r in results for p, st in r.status.items() if st.startswith("error")]
    for r, p, st in errs:
        lines.append(f"{r.case.id} {r.dtype} threads={r.threads} {p}: {st}")
    return lines


def _by_formula(results, formula, name):
    """Lines "  formula: name, name, ..." for the results' cases that have a formula, names
    in first-seen order without repeats."""
    groups = {}
    for r in results:
        f = formula(r.case)
        if f:
            names = groups.setdefault(f, [])
            if name(r.case) not in names:
                names.append(name(r.case))
    return [f"  {f}: {', '.join(names)}" for f, names in groups.items()]


# --- JSON ----------------------------------------------------------------------------------

def result_dict(r):
    return {
        "case": r.case.id, "function": r.case.func, "family": r.case.family,
        "variant": r.case.variant, "size": r.case.tag or None,
        "shape": list(r.shape), "elements": r.elements, "dtype": r.dtype, "threads": r.threads,
        "after": r.after, "median_s": {k: t.median for k, t in r.times.items()},
        "min_s": {k: t.min for k, t in r.times.items()},
        "repeats": {k: len(t.times) for k, t in r.times.items()},
        "status": dict(r.status),
        "speedup": {p: r.speedup(p) for p in r.times if p != "fastloss"},
        "bytes": r.nbytes, "bytes_formula": r.case.bytes_formula or None,
        "floor_s": r.floor_s, "floor_copy": r.floor_copy,
        "floor_times_s": dict(r.floor_times) or None,
        "x_floor": r.x_floor,
        "products_mkn": r.products, "products_s": r.products_s, "x_products": r.x_products,
    }


def write_json(path, machine, settings, bandwidth, results, scaling):
    doc = {
        "machine": machine,
        "settings": settings,
        "copy_bandwidth_bytes_per_s": max(bandwidth.values()),
        "copy_bandwidth_by_copy": dict(bandwidth),
        "notes": {"jax_threads": core.JAX_THREADS_NOTE,
                  "speedup": "peer median / fastloss median",
                  "x_floor": "fastloss median / floor_s; floor_s: the smallest of "
                             "floor_times_s, the median times of copying `bytes` (half read, "
                             "half written) into a touched buffer by each copy: np.copyto (1 "
                             "thread), stream:N (fastloss._runtime.copy with streaming stores "
                             "on N threads of fastloss's pool), copy:N (with memcpy); "
                             "floor_copy: which one it was",
                  "x_products": "fastloss median / products_s; products_s: the median time of "
                                "the matrix products products_mkn ((m, k, n): an m x k by k x n "
                                "np.matmul into a preallocated output, BLAS on the row's threads)",
                  "copy_bandwidth": "copy_bandwidth_bytes_per_s: the largest of "
                                    "copy_bandwidth_by_copy (copies named as floor_times_s)"},
        "results": [result_dict(r) for r in results],
        "scaling": [result_dict(r) for r in scaling],
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


# --- plot -----------------------------------------------------------------------------------

def plot(path, results, scaling, machine, bandwidth):
    """Speed-up of fastloss over each peer per case (left) and time against problem size
    on log-log axes for each scaled function (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"fastloss": "C3", "numpy": "C0", "scipy": "C4", "torch": "C1", "jax": "C2",
              "floor": "0.5"}
    # one row per case: the largest thread count, the first dtype
    tmax = max(r.threads for r in results)
    dt0 = results[0].dtype
    rows = [r for r in results if r.threads == tmax and r.dtype == dt0]
    peers = [p for p in PEERS if any(r.speedup(p) for r in rows)]
    funcs = []
    for r in scaling:
        if r.case.func not in funcs:
            funcs.append(r.case.func)
    ncols = 1 + len(funcs)
    fig, axes = plt.subplots(1, ncols, figsize=(7 + 5 * len(funcs), max(4, 0.38 * len(rows) + 2)),
                             gridspec_kw={"width_ratios": [1.6] + [1] * len(funcs)}, squeeze=False)
    ax = axes[0][0]
    y = np.arange(len(rows))
    h = 0.8 / max(1, len(peers))
    for k, p in enumerate(peers):
        vals = [r.speedup(p) or 0 for r in rows]
        ax.barh(y + (k - (len(peers) - 1) / 2) * h, vals, height=h, color=colors[p], label=f"vs {p}")
    ax.axvline(1, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_yticks(y)
    ax.set_yticklabels([f"{r.case.id} {shape_label(r.shape)}" for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of fastloss (peer time / fastloss time)")
    ax.set_title(f"{dt0}, {tmax} thread{'s' if tmax > 1 else ''}", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="x", which="both", alpha=0.3)

    for i, func in enumerate(funcs):
        ax = axes[0][1 + i]
        rs = [r for r in scaling if r.case.func == func]
        variants = []
        for r in rs:
            if r.case.variant not in variants:
                variants.append(r.case.variant)
        for v in variants:
            vr = sorted((r for r in rs if r.case.variant == v), key=lambda r: r.elements)
            n = [r.elements for r in vr]
            impls = ["fastloss"] + ([p for p in PEERS if any(p in r.times for r in vr)]
                                    if v == variants[0] else [])
            for impl in impls:
                pts = [(e, r.median(impl)) for e, r in zip(n, vr) if r.median(impl)]
                if not pts:
                    continue
                first = v == variants[0]
                style = "-s" if impl != "fastloss" else "-o" if first else "--o"
                ax.plot(*zip(*pts), style, color=colors[impl], label=f"{impl} ({v})", ms=4,
                        alpha=1 if impl == "fastloss" else 0.8)
            if v == variants[0] and vr and vr[0].floor_s:
                ax.plot(n, [r.floor_s for r in vr], ":", color=colors["floor"],
                        label=f"floor: the fastest copy of the bytes ({v})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("elements")
        ax.set_ylabel("median time (s)")
        if rs:
            nt = rs[0].threads
            ax.set_title(f"{func} ({rs[0].dtype}, {nt} thread{'s' if nt > 1 else ''})", fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(which="both", alpha=0.3)
    fig.suptitle(f"fastloss {machine['versions']['fastloss']} on {machine['cpu']} "
                 f"({machine['usable_cpus']} CPUs), {machine['date'][:10]}; copy bandwidth "
                 f"{max(bandwidth.values()) / 1e9:.1f} GB/s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
