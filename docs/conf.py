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
