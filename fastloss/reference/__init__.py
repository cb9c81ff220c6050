"""NumPy float64 reference implementations ("oracles"), one per public function,
with the same signatures (less the performance-only arguments such as grad_out, and
less where=, whose oracle is the same loss on the kept items alone: tests/test_where.py).
Plain, obviously-correct formulas: the tests hold the kernels to them."""
from .classification import *  # noqa: F401,F403  (each family's __all__)
from .divergence import *  # noqa: F401,F403
from .gaussian import *  # noqa: F401,F403
from .regression import *  # noqa: F401,F403
from .metric import *  # noqa: F401,F403
