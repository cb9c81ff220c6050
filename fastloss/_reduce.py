"""Reductions: per-item losses to the returned loss, and the gradient scale that goes
with them. Family-neutral; every family reduces through these (see ARCHITECTURE.md).

The rule for "mean" (README, Conventions): sum(w_i * l_i) / sum(w_i) over the items that count,
accumulated in float64. A mean over a zero denominator is NaN (0 / 0, as PyTorch, also
when label smoothing makes the total nonzero), and its gradient scale is 1 / 0 = inf:
every gradient entry that a counted term enters is then NaN, and entries that count for
nothing stay 0.
"""
import math

import numpy as np

from . import _config


def float64_sums():
    """Within it, on this Python thread, reduction="sum" returns the float64 total
    instead of rounding it to the compute dtype: fastloss.dask adds up blocks' partial
    sums as the in-memory call adds up its rows, rounding once at the end."""
    return _config.local_setting("float64_sums", True)


def grad_scale(reduction, denom):
    """The factor the kernels apply to the gradient of the sum of the per-item losses
    (times a masked call's own factor: _mask.independent)."""
    masked = _config.local("masked")
    k = 1.0 if masked is None else masked.gscale
    if reduction != "mean":
        return k
    return k / denom if denom else math.inf


def reduce_total(total, denom, reduction, dtype):
    """A float64 total as the reduced scalar of the compute dtype ("sum" or "mean")."""
    if reduction == "sum":
        return np.float64(total) if _config.local("float64_sums") else dtype.type(total)
    if not denom:                # nothing to average (a smoothed total / 0 is NaN too, as PyTorch)
        return dtype.type(np.nan)
    return dtype.type(np.float64(total) / np.float64(denom))


def reduce_rows(rows, shape, denom, reduction, dtype):
    """The loss from float64 per-row losses (row kernels): "none" gives them in the
    compute dtype with the given shape (float64 in a masked call, which sums them)."""
    if reduction == "none":
        masked = _config.local("masked")
        if masked is not None:
            masked.dtype = dtype
            return rows.reshape(shape)
        return rows.astype(dtype).reshape(shape)
    # rows.sum(): the same pairwise sum as np.sum, without its 2 us of Python wrapping a call
    return reduce_total(float(rows.sum()), denom, reduction, dtype)


def reduce_elements(total, elem, shape, denom, reduction, dtype):
    """The loss from an elementwise kernel's float64 total and its per-element losses
    (elem, written only for "none")."""
    if reduction == "none":
        if _config.local("masked") is not None:
            _config.local("masked").dtype = dtype
        return elem.reshape(shape)
    return reduce_total(total, denom, reduction, dtype)
