"""show_config(): what this build and this machine give fastloss."""
import os
import platform
import sys

import numpy as np

from . import _config, _runtime
from ._version import __version__


def _openmp_library():
    """Path of the OpenMP runtime threadpoolctl sees in this process, if it is installed."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    libs = [i for i in threadpool_info() if i.get("user_api") == "openmp"]
    return ", ".join(sorted({i["filepath"] for i in libs})) or None


def cpu_model():
    """The CPU's model name (from /proc/cpuinfo on Linux), or what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def config():
    """The configuration as a dict (what show_config prints)."""
    omp = _runtime.openmp_version()
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "simd": _config.get_simd(),
        "simd_available": list(_config.available_levels()),
        "simd_forced": os.environ.get("FASTLOSS_SIMD") or None,
        "openmp": bool(omp),
        "openmp_version": omp,
        "openmp_library": _openmp_library(),
        "num_threads": _config.get_num_threads(),
        "serial_below": _config.SERIAL_BELOW,
    }


def show_config(file=None):
    """Print the build and run-time configuration: version, SIMD path, OpenMP, threads.

    Parameters
    ----------
    file : file-like, optional
        Where to print (default: sys.stdout).

    Returns
    -------
    dict
        The configuration printed: version, python, numpy, platform, cpu, cores, simd,
        simd_available, simd_forced, openmp, openmp_version, openmp_library, num_threads,
        serial_below.

    Examples
    --------
    >>> import io
    >>> cfg = fastloss.show_config(file=io.StringIO())
    >>> cfg["version"] == fastloss.__version__, cfg["simd"] == fastloss.get_simd()
    (True, True)
    """
    cfg = config()
    if file is None:
        file = sys.stdout
    print("fastloss configuration", file=file)
    for k, v in cfg.items():
        print(f"  {k:15s} {v}", file=file)
    return cfg
