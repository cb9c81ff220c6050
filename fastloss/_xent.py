"""Softmax cross-entropy over C-contiguous rows: the building block that
cross_entropy, distillation_loss and the contrastive losses share. Family-neutral
(it calls the row kernels of fastloss/_classification.pyx); see ARCHITECTURE.md.
"""
import numpy as np

from . import _classification as _k
from . import _config
from ._checks import check_label_array, half_bits, half_kind


def prepare_labels(target, row_shape, n_classes, ignore_index, class_weight=None, name="target",
                   against="", where=None):
    """Checked flat int64 labels and the "mean" denominator: the number of counted rows,
    or the sum of their class weights (PyTorch's rule). where (a boolean array of
    row_shape, or None): rows where it is False count for nothing, as ignore_index rows
    (their labels become ignore_index, unchecked)."""
    labels, counted = check_label_array(target, row_shape, n_classes, ignore_index, name, against,
                                        where)
    if class_weight is None:
        return labels, float(counted)
    return labels, float(np.sum(class_weight[labels[labels != ignore_index]], dtype=np.float64))


def weight_sum(class_weight, C):
    """sum of the class weights (C without weights): label smoothing's total weight."""
    return float(C) if class_weight is None else float(np.sum(class_weight, dtype=np.float64))


def new_stats(n):
    """Arrays for n rows' statistics, filled by the row kernels: log-sum-exp (float64),
    argmax (int64), correct (uint8; view it as bool)."""
    return np.empty(n, np.float64), np.empty(n, np.int64), np.empty(n, np.uint8)


def label_rows(x2, labels, *, class_weight=None, ignore_index=-100, smoothing=0.0, z_loss=0.0,
               softcap=0.0, gscale=1.0, grad=None, n_threads=None, stats=None):
    """Per-row cross-entropy (float64, already weighted) of C-contiguous (N, C) rows x2
    against checked int64 labels; the gradient of gscale * sum(rows) goes into grad
    ((N, C) of x2's dtype, may be x2 itself), the rows' statistics into stats (new_stats's
    arrays, or None). Half rows (float16, bfloat16) take the half kernel: computed in
    float32 (class_weight float32), the gradient in x2's dtype."""
    loss = np.empty(x2.shape[0], dtype=np.float64)
    nt = _config.threads_for(x2.size) if n_threads is None else n_threads
    args = (class_weight, weight_sum(class_weight, x2.shape[1]), ignore_index, smoothing, z_loss,
            softcap, gscale, loss, stats, nt)
    if half_kind(x2.dtype) is None:
        _k.xent_label(x2, labels, grad, *args)
    else:
        _k.xent_half(half_kind(x2.dtype), half_bits(x2), labels, None, half_bits(grad), *args)
    return loss


def prob_rows(x2, t2, *, class_weight=None, smoothing=0.0, z_loss=0.0, softcap=0.0, gscale=1.0,
              grad=None, stats=None):
    """As label_rows, with (N, C) probability targets t2 of x2's dtype."""
    loss = np.empty(x2.shape[0], dtype=np.float64)
    nt = _config.threads_for(x2.size)
    if half_kind(x2.dtype) is None:
        _k.xent_prob(x2, t2, grad, class_weight, smoothing, z_loss, softcap, gscale, loss, stats, nt)
    else:
        _k.xent_half(half_kind(x2.dtype), half_bits(x2), None, half_bits(t2), half_bits(grad), class_weight,
                     0.0, 0, smoothing, z_loss, softcap, gscale, loss, stats, nt)
    return loss

