"""Build: one Cython extension per kernel module (fastloss/_*.pyx), each
including the C helpers in csrc/. OpenMP flags come from a compile-and-run
probe; SIMD variants are chosen at run time (csrc/fl_instantiate.h), so the
build itself targets the compiler's baseline (no -march=native).

Environment: CFLAGS are the user's and come last, so they win over the defaults
here (e.g. -O1 for a sanitizer build, ARCHITECTURE.md); FASTLOSS_OPENMP_FLAGS
overrides the OpenMP flags; FASTLOSS_REQUIRE_OPENMP=1 makes a failed probe an
error instead of a serial build (CI)."""
import glob
import os
import shlex
import subprocess
import sys
import tempfile
import warnings

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))

# (compile flags, link flags) to try in order; FASTLOSS_OPENMP_FLAGS overrides.
OPENMP_CANDIDATES = {
    "unix": [(["-fopenmp"], ["-fopenmp"]),
             (["-Xpreprocessor", "-fopenmp"], ["-lomp"])],   # macOS clang + libomp
    "msvc": [(["/openmp"], [])],
}

PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n > 0);
    return 0;
}
"""


def env_flags(*names):
    return [f for name in names for f in shlex.split(os.environ.get(name, ""))]


def probe_openmp(compiler):
    """(First candidate whose probe program compiles, links and runs, or None; the
    failures seen)."""
    env = os.environ.get("FASTLOSS_OPENMP_FLAGS")
    candidates = ([(env.split(), env.split())] if env
                  else OPENMP_CANDIDATES.get(compiler.compiler_type, []))
    # The extension's link line carries LDFLAGS and CFLAGS (distutils adds both to
    # LDSHARED), the probe's executable link none: give it the same, or flags that need a
    # runtime at link time (-fsanitize=address) fail the probe for the wrong reason.
    user_lflags = env_flags("LDFLAGS", "CFLAGS")
    failures = []
    for cflags, lflags in candidates:
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "probe.c")
            with open(src, "w") as f:
                f.write(PROBE)
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                exe = os.path.join(tmp, "probe")
                compiler.link_executable(objs, exe, extra_postargs=lflags + user_lflags)
                out = subprocess.run([exe], capture_output=True, text=True, timeout=30)
                if out.returncode == 0 and out.stdout.strip() == "1":
                    return (cflags, lflags), failures
                failures.append(f"{cflags}: probe exited {out.returncode}: {out.stderr[-300:]}")
            except Exception as e:  # any failure means: not this candidate
                failures.append(f"{cflags}: {e}")
    return None, failures


class BuildExt(build_ext):
    def build_extensions(self):
        found, failures = probe_openmp(self.compiler)
        if found is None:
            why = "Probe failures:\n  " + "\n  ".join(failures)
            if os.environ.get("FASTLOSS_REQUIRE_OPENMP") == "1":
                sys.exit("fastloss: no working OpenMP flag found and FASTLOSS_REQUIRE_OPENMP=1 "
                         "forbids a serial build. " + why)
            msg = ("fastloss: no working OpenMP flag found for this compiler; building a SERIAL "
                   "version (fastloss.show_config() reports openmp: no). Set FASTLOSS_OPENMP_FLAGS "
                   "to override. " + why)
            warnings.warn(msg)
            print("*" * 78 + "\n" + msg + "\n" + "*" * 78, file=sys.stderr)
            cflags, lflags = [], []
        else:
            cflags, lflags = found
        # GNU C (not -std=c99, which turns off FMA contraction); -ffp-contract=fast only fuses
        # a*b+c into one correctly rounded FMA, it keeps NaN/Inf semantics (unlike -ffast-math).
        base = (["/O2"] if self.compiler.compiler_type == "msvc"
                else ["-O3", "-ffp-contract=fast", "-Wno-psabi"])
        # distutils puts CFLAGS before these arguments: repeat them last so that they win.
        user = env_flags("CFLAGS") if self.compiler.compiler_type != "msvc" else []
        for ext in self.extensions:
            ext.extra_compile_args = base + cflags + ext.extra_compile_args + user
            ext.extra_link_args = lflags + ext.extra_link_args
        super().build_extensions()


def extensions():
    # FASTLOSS_BUILD_ONLY=_regression,_runtime builds just those modules (development).
    only = [m for m in os.environ.get("FASTLOSS_BUILD_ONLY", "").split(",") if m]
    exts = []
    for pyx in sorted(glob.glob(os.path.join("fastloss", "_*.pyx"))):
        mod = os.path.splitext(os.path.basename(pyx))[0]
        if only and mod not in only:
            continue
        name = "fastloss." + mod
        exts.append(Extension(name, [pyx], include_dirs=["csrc", numpy.get_include()],
                              depends=glob.glob(os.path.join("csrc", "*.h")),
                              define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")]))
    return cythonize(exts, compiler_directives={"language_level": 3})


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt})
