"""fastloss: fast, exact CPU loss functions and their gradients for NumPy arrays.

    loss = fastloss.cross_entropy(logits, labels)
    loss, grad = fastloss.cross_entropy(logits, labels, return_grad=True)

Conventions (dtypes, reductions, gradients, threads): see the README.
"""
from ._version import __version__
from ._config import get_num_threads, set_num_threads, threads, get_simd, set_simd, available_levels
from .classification import (binary_cross_entropy_with_logits, cross_entropy, log_softmax,
                             logsumexp, sigmoid_focal_loss, softmax)
from .divergence import distillation_loss, entropy, js_divergence, kl_divergence
from .gaussian import gaussian_kl, gaussian_nll_loss, mvn_kl, vae_loss
from .metric import (batch_hard_triplet_loss, info_nce_loss, nt_xent_loss, pairwise_distances,
                     triplet_margin_loss)
from .regression import (complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss,
                         huber_loss, l1_loss, log_cosh_loss, mse_loss, smooth_l1_loss)
from ._info import show_config

__all__ = [
    "__version__", "show_config",
    "get_num_threads", "set_num_threads", "threads", "get_simd", "set_simd", "available_levels",
    "cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss",
    "logsumexp", "softmax", "log_softmax",
    "entropy", "kl_divergence", "js_divergence", "distillation_loss", "gaussian_kl", "mvn_kl",
    "vae_loss", "gaussian_nll_loss",
    "mse_loss", "l1_loss", "huber_loss", "smooth_l1_loss", "log_cosh_loss",
    "generalized_box_iou_loss", "distance_box_iou_loss", "complete_box_iou_loss",
    "pairwise_distances", "triplet_margin_loss", "batch_hard_triplet_loss", "info_nce_loss",
    "nt_xent_loss",
]
