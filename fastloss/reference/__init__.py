"""NumPy float64 reference implementations ("oracles"), one per public function,
with the same signatures (less the performance-only arguments such as grad_out).
Plain, obviously-correct formulas: the tests hold the kernels to them."""
from .classification import *  # noqa: F401,F403  (each family's __all__)
from .divergence import *  # noqa: F401,F403
from .gaussian import *  # noqa: F401,F403
from .regression import *  # noqa: F401,F403
from .metric import *  # noqa: F401,F403
