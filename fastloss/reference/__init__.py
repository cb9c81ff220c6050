"""NumPy float64 reference implementations ("oracles"), one per public function,
with the same signatures (less the performance-only arguments such as grad_out).
Plain, obviously-correct formulas: the tests hold the kernels to them."""
from .classification import (binary_cross_entropy_with_logits, cross_entropy, log_softmax,
                             logsumexp, sigmoid_focal_loss, softmax)
from .regression import (complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss,
                         huber_loss, l1_loss, log_cosh_loss, mse_loss, smooth_l1_loss)
from .divergence import distillation_loss, entropy, js_divergence, kl_divergence
from .gaussian import gaussian_kl, gaussian_nll_loss, mvn_kl, vae_loss
from .metric import (batch_hard_triplet_loss, info_nce_loss, nt_xent_loss, pairwise_distances,
                     triplet_margin_loss)
