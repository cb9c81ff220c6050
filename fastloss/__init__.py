"""fastloss: fast, exact CPU loss functions and their gradients for NumPy arrays.

    loss = fastloss.cross_entropy(logits, labels)
    loss, grad = fastloss.cross_entropy(logits, labels, return_grad=True)

Conventions (dtypes, reductions, gradients, threads): see the README.
"""
from ._version import __version__
from ._config import get_num_threads, set_num_threads, threads, get_simd, set_simd, available_levels
from . import classification, divergence, gaussian, metric, regression
from .classification import *  # noqa: F401,F403  (each family's __all__)
from .classification import CrossEntropyStats  # noqa: F401  (a result type; __all__ lists functions)
from .divergence import *  # noqa: F401,F403
from .divergence import DistillationStats, DivergenceStats  # noqa: F401  (result types)
from .gaussian import *  # noqa: F401,F403
from .regression import *  # noqa: F401,F403
from .metric import *  # noqa: F401,F403
from ._info import show_config
from ._pool import release_memory, set_pool_limit

__all__ = [
    "__version__", "show_config",
    "get_num_threads", "set_num_threads", "threads", "get_simd", "set_simd", "available_levels",
    "release_memory", "set_pool_limit",
    *classification.__all__, *divergence.__all__, *gaussian.__all__, *regression.__all__,
    *metric.__all__,
]
