"""Reduction helpers shared by the oracles."""
import numpy as np


def reduce(per, reduction, denom):
    """(loss, gradient scale) of per-item losses: "mean" divides by denom (NaN for 0),
    "sum" adds, "none" keeps them; "batchmean" is "mean"."""
    if reduction == "none":
        return per, 1.0
    total = np.sum(per)
    if reduction == "sum":
        return np.float64(total), 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.float64(total) / np.float64(denom), np.float64(1.0) / np.float64(denom)


def finish(loss, grad, return_grad):
    return (loss, grad) if return_grad else loss
