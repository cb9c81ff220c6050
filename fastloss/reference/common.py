"""Reduction helpers shared by the oracles."""
import numpy as np


def reduce(per, reduction, denom):
    """(loss, gradient scale) of per-item losses: "mean" divides by denom (for 0: NaN, the
    scale 1/0 = inf), "sum" adds, "none" keeps them; "batchmean" is "mean"."""
    if reduction == "none":
        return per, 1.0
    total = np.sum(per)
    if reduction == "sum":
        return np.float64(total), 1.0
    if denom == 0:
        return np.float64(np.nan), np.float64(np.inf)
    return np.float64(total) / np.float64(denom), np.float64(1.0) / np.float64(denom)


def finish(loss, grad, return_grad):
    return (loss, grad) if return_grad else loss


def log_softmax(x, temperature=1.0):
    """(log softmax(x / temperature), log-sum-exp of x / temperature) along the last axis.

    The logits are shifted by the row max m before anything is subtracted, as the kernels
    do: (x - m) / T (products first for T > 1, which cannot overflow), so large logits
    cancel nothing and no finite input overflows. A row whose max is not finite (a NaN or
    +inf logit, or only -inf) is no distribution: log-softmax NaN, log-sum-exp its max."""
    x = np.asarray(x, dtype=np.float64)
    m = np.max(x, axis=-1, keepdims=True)
    ok = np.isfinite(m)
    m0 = np.where(ok, m, 0.0)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        z = (x - m0) / temperature if temperature <= 1 else np.minimum(x / temperature - m0 / temperature, 0)
        logs = np.log(np.sum(np.exp(z), axis=-1, keepdims=True))
        logp = np.where(ok, z - logs, np.nan)
        lse = np.where(ok, m0 / temperature + logs, m)
    return logp, lse[..., 0]
