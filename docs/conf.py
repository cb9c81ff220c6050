"""Sphinx configuration of the fastloss documentation (bash .ci/docs builds and doctests it).

No network at build time: no intersphinx; MathJax is loaded by the browser only.
"""
import os
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)          # the checkout's fastloss (built in place), not an installed one

import fastloss  # noqa: E402

project = "fastloss"
author = "the fastloss authors"
copyright = "the fastloss authors"
release = fastloss.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "numpydoc",
]

exclude_patterns = ["_build"]
templates_path = []
html_theme = "alabaster"
html_static_path = []
html_title = f"fastloss {release}"

autosummary_generate = False       # the API pages list their functions by hand
autodoc_default_options = {"members": False}
numpydoc_show_class_members = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = set()

# The `>>>` examples of every autodoc'ed docstring are doctest blocks: `-b doctest` runs them.
doctest_test_doctest_blocks = "default"
doctest_global_setup = """
import numpy as np
import fastloss
"""

# Generated includes (docs/guides/*.inc, not tracked): Markdown tables as reST.
# The benchmark's Markdown report (docs/perf.md, written by `python -m fastloss bench
# --markdown`) as reST, so the performance guide shows every case of that one run.
_PERF_MD = os.path.join(ROOT, "docs", "perf.md")
_PERF_INC = os.path.join(ROOT, "docs", "guides", "perf_tables.inc")


def _inline(s):
    """Markdown inline text as reST: `code` -> ``code``, a literal * escaped."""
    parts = s.replace("*", r"\*").split("`")
    return "".join(p if i % 2 == 0 else f"``{p}``" for i, p in enumerate(parts))


def _cell(s):
    return _inline(s.strip()) or " "


def _md_rst(md_lines, line_blocks=False):
    """Markdown text and pipe tables as reST; line_blocks: keep each text line a line."""
    out, table = [], []

    def flush():
        if table:
            out.extend(["", ".. list-table::", "   :header-rows: 1", ""])
            for row in table:
                cells = [_cell(c) for c in row.strip().strip("|").split("|")]
                out.append("   * - " + cells[0])
                out.extend("     - " + c for c in cells[1:])
            out.append("")
            table.clear()

    for line in md_lines:
        line = line.rstrip("\n")
        if line.startswith("|"):
            if not set(line) <= set("|-: "):     # skip the |---| separator row
                table.append(line)
            continue
        flush()
        if line.startswith("wrote "):
            continue
        bullet = "* " if line.startswith("* ") else ""
        text = bullet + _inline(line[len(bullet):])
        out.append(f"| {text}" if line_blocks and line.strip() else text)
    flush()
    return "\n".join(out) + "\n"


def _section(md_lines, heading):
    """The lines of a Markdown section, from its heading to the next heading."""
    start = md_lines.index(heading + "\n") + 1
    end = next((i for i in range(start, len(md_lines)) if md_lines[i].startswith("#")),
               len(md_lines))
    return md_lines[start:end]


def _write(path, text):
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as f:
            f.write(text)


with open(_PERF_MD) as f:
    _write(_PERF_INC, _md_rst(f.readlines(), line_blocks=True))
# The README's special-values table (one copy of it, kept by the README).
with open(os.path.join(ROOT, "README.md")) as f:
    _write(os.path.join(ROOT, "docs", "guides", "special_values.inc"),
           _md_rst(_section(f.readlines(), "### Special values")))
