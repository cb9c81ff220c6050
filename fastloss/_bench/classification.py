"""Benchmark cases for fastloss.classification: cross_entropy, binary_cross_entropy_with_logits,
sigmoid_focal_loss, logsumexp, softmax, log_softmax, linear_cross_entropy.

Peers compute the same loss with the same reduction ("mean") in the input dtype:
NumPy as a careful user writes it (max-shifted, in-place temporaries), SciPy's
special.logsumexp/softmax/log_softmax, PyTorch's functional ops with autograd,
JAX's jit(value_and_grad) of the formulas optax uses. linear_cross_entropy (the
language-model head fused with its cross-entropy) is GEMM-bound: its peers are the
unfused head (NumPy: the logits in one GEMM, the NumPy cross-entropy in place, the two
gradient GEMMs; PyTorch: F.linear_cross_entropy's reference path) and it has no copy
floor; bench/linear_cross_entropy_memory.py adds the three GEMMs alone, torch's
chunked path and the peak memory of each.
"""
import numpy as np

from .. import classification as fl
from .builders import half_cases, jax_impl, loss_cases, size
from .core import Case, peer

FAMILY = "classification"


# --- inputs -------------------------------------------------------------------------

def make_labels(shape, dtype, rng):
    """Logits ~ N(0, 2^2) of `shape` (classes last) and int64 labels."""
    n, c = shape
    x = rng.standard_normal(shape, dtype=np.dtype(dtype)) * np.asarray(2, dtype)
    return {"x": x, "y": rng.integers(0, c, n)}


def make_binary(shape, dtype, rng):
    """Logits ~ N(0, 2^2) and 0/1 targets of the same shape."""
    x = rng.standard_normal(shape, dtype=np.dtype(dtype)) * np.asarray(2, dtype)
    return {"x": x, "t": (rng.random(shape) < 0.3).astype(dtype)}


def make_logits(shape, dtype, rng):
    return {"x": rng.standard_normal(shape, dtype=np.dtype(dtype)) * np.asarray(2, dtype)}


def make_head(shape, dtype, rng):
    """Hidden states x ~ N(0, 1) (N x D), a head W ~ N(0, 4 / D) (V x D), so that the
    logits x W^T are about N(0, 2^2), and int64 labels; shape is (N, D, V)."""
    n, d, v = shape
    dt = np.dtype(dtype)
    w = rng.standard_normal((v, d), dtype=dt)
    w *= dt.type(2 / np.sqrt(d))
    return {"x": rng.standard_normal((n, d), dtype=dt), "W": w, "y": rng.integers(0, v, n)}


# --- NumPy peers: in the input dtype, as few passes as NumPy allows ---------------------

def np_cross_entropy(x, y, grad, out=None):
    """out=x: the exponentials (and the gradient) overwrite the logits."""
    n = x.shape[0]
    rows = np.arange(n)
    picked = x[rows, y]
    m = x.max(axis=1, keepdims=True)
    e = np.subtract(x, m, out=out)
    np.exp(e, out=e)
    s = e.sum(axis=1, keepdims=True)
    loss = np.mean(m[:, 0] + np.log(s[:, 0]) - picked)
    if not grad:
        return loss
    e /= s
    e[rows, y] -= 1
    e *= e.dtype.type(1.0 / n)
    return loss, e


def np_cross_entropy_f32(x, y, grad):
    """Half logits: NumPy computes in float32 (a careful user's upcast copy; float16
    arithmetic would lose the sum over 32000 classes)."""
    return np_cross_entropy(x.astype(np.float32), y, grad)


def np_linear_cross_entropy(x, w, y, grad):
    """The unfused head: logits in one GEMM, the max-shifted cross-entropy in place in
    them (one N x V array in all), then the gradient GEMMs on the softmax - onehot."""
    z = x @ w.T
    if not grad:
        return np_cross_entropy(z, y, False, out=z)
    loss, g = np_cross_entropy(z, y, True, out=z)
    return loss, g @ w, g.T @ x


def _np_softplus_neg(x):
    """log(1 + exp(-x)), stable."""
    return np.logaddexp(x.dtype.type(0), -x)


def _np_sigmoid(x):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def np_bce(x, t, grad):
    loss = np.mean((1 - t) * x + _np_softplus_neg(x))
    if not grad:
        return loss
    g = _np_sigmoid(x)
    g -= t
    g *= g.dtype.type(1.0 / x.size)
    return loss, g


def np_focal(x, t, grad, alpha=0.25, gamma=2.0):
    p = _np_sigmoid(x)
    ce = _np_softplus_neg(x) + (1 - t) * x
    q = p + t - 2 * p * t                        # 1 - p_t
    a = alpha * t + (1 - alpha) * (1 - t)
    loss = np.mean(a * ce * q ** gamma)
    if not grad:
        return loss
    # d/dx: a * [(p - t) q^g + ce * g q^(g-1) * p (1 - p) (1 - 2t)]
    g = a * ((p - t) * q ** gamma + ce * (gamma * q ** (gamma - 1)) * p * (1 - p) * (1 - 2 * t))
    g *= g.dtype.type(1.0 / x.size)
    return loss, g


def np_logsumexp(x):
    m = x.max(axis=1, keepdims=True)
    e = np.subtract(x, m)
    np.exp(e, out=e)
    return np.log(e.sum(axis=1)) + m[:, 0]


def np_softmax(x):
    e = np.subtract(x, x.max(axis=1, keepdims=True))
    np.exp(e, out=e)
    e /= e.sum(axis=1, keepdims=True)
    return e


def np_log_softmax(x):
    e = np.subtract(x, x.max(axis=1, keepdims=True))
    z = np.exp(e)
    e -= np.log(z.sum(axis=1, keepdims=True))
    return e


# --- PyTorch peers (functional ops; autograd for the gradient) ------------------------

def torch_cross_entropy(x, y):
    return peer("torch").nn.functional.cross_entropy(x, y)


def torch_bce(x, t):
    return peer("torch").nn.functional.binary_cross_entropy_with_logits(x, t)


def torch_focal(x, t, alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss, reduction="mean" (the same ops)."""
    torch = peer("torch")
    p = torch.sigmoid(x)
    ce = torch.nn.functional.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * ((1 - p_t) ** gamma)
    return ((alpha * t + (1 - alpha) * (1 - t)) * loss).mean()


def torch_linear_cross_entropy(x, w, y):
    """F.linear_cross_entropy, its default (reference) path: the logits, then cross_entropy."""
    return peer("torch").nn.functional.linear_cross_entropy(x, w, y)


# --- JAX peers (jit; value_and_grad for the gradient) -----------------------------------

def jax_cross_entropy(x, y):
    """optax.softmax_cross_entropy_with_integer_labels, mean over rows."""
    jax = peer("jax")
    jnp = jax.numpy
    picked = jnp.take_along_axis(x, y[:, None], axis=-1)[:, 0]
    return jnp.mean(jax.nn.logsumexp(x, axis=-1) - picked)


def _jax_sigmoid_bce(x, t):
    """optax.sigmoid_binary_cross_entropy, per element."""
    nn = peer("jax").nn
    return -t * nn.log_sigmoid(x) - (1 - t) * nn.log_sigmoid(-x)


def jax_bce(x, t):
    return peer("jax").numpy.mean(_jax_sigmoid_bce(x, t))


def jax_focal(x, t, alpha=0.25, gamma=2.0):
    """optax.sigmoid_focal_loss, mean over elements."""
    jax = peer("jax")
    p = jax.nn.sigmoid(x)
    p_t = p * t + (1 - p) * (1 - t)
    loss = _jax_sigmoid_bce(x, t) * ((1 - p_t) ** gamma)
    return jax.numpy.mean((alpha * t + (1 - alpha) * (1 - t)) * loss)


# --- the cases ------------------------------------------------------------------------

def _label_bytes(shape, s, grad):
    n, c = shape
    return n * c * s * (2 if grad else 1) + n * 8


def _label_formula(grad):
    return "read logits N C s + labels 8 N" + (" + write grad N C s" if grad else "")


def _elem_bytes(shape, s, grad):
    return int(np.prod(shape)) * s * (3 if grad else 2)


def _elem_formula(grad):
    return "read x, t (2 n s)" + (" + write grad (n s)" if grad else "")


def _softmax_cases(func, fl_fn, np_fn, sp_name, torch_name, jax_name, shape, quick):
    nbytes = ((lambda shp, s: shp[0] * shp[1] * s + shp[0] * s) if func == "logsumexp"
              else (lambda shp, s: 2 * shp[0] * shp[1] * s))
    formula = ("read x N C s + write N s" if func == "logsumexp"
               else "read x N C s + write out N C s")
    impls = {
        "fastloss": lambda d: (lambda: fl_fn(d["x"])),
        "numpy": lambda d: (lambda: np_fn(d["x"])),
        "scipy": lambda d: (lambda: getattr(peer("scipy"), sp_name)(d["x"], axis=-1)),
        "torch": lambda d: (lambda: getattr(peer("torch"), torch_name)(d.torch("x"), -1)),
        "jax": jax_impl(lambda x: getattr(peer("jax").nn, jax_name)(x, axis=-1), "fwd", ("x",)),
    }
    return [Case(func=func, family=FAMILY, variant="fwd", shape=shape, quick_shape=quick,
                 make=make_logits, impls=impls, nbytes=nbytes, bytes_formula=formula)]


def _head_products(shape, grad):
    """The logits x @ W.T, and for gradients dlogits @ W and dlogits.T @ x."""
    n, d, v = shape
    if not grad:
        return [(n, d, v)], "logits x @ W.T (N D V)"
    return ([(n, d, v), (n, v, d), (v, n, d)],
            "logits x @ W.T, dlogits @ W, dlogits.T @ x (3 N D V)")


CASES = (
    loss_cases("cross_entropy", FAMILY, fl.cross_entropy, ("x", "y"), make_labels,
               [size((2048, 32000), (128, 4000), "v32k", scaling=True),
                size((512, 128256), (8, 128256), "v128k", large=True),
                size((65536, 10), (8192, 10), "c10"),
                # 100 classes (CIFAR-100): rows of a few vectors ending in a partial one
                size((32768, 100), (2048, 100), "c100")],
               numpy=np_cross_entropy, torch=torch_cross_entropy, jax=jax_cross_entropy,
               nbytes=_label_bytes, formula=_label_formula)
    # float16 / bfloat16 logits next to float32's v32k (issue #14): fastloss reads them
    # natively; the floor is the bytes read at 2 bytes a logit
    + half_cases("cross_entropy", make_labels, ("x",), [size((2048, 32000), (128, 4000), "v32k")],
                 _label_bytes, family=FAMILY, fl_fn=fl.cross_entropy, args=("x", "y"),
                 numpy=np_cross_entropy_f32, torch=torch_cross_entropy, jax=jax_cross_entropy,
                 formula=_label_formula, notes={"numpy": "on a float32 copy"})
    + loss_cases("binary_cross_entropy_with_logits", FAMILY, fl.binary_cross_entropy_with_logits,
                 ("x", "t"), make_binary, [size((16384, 1024), (512, 1024), scaling=True)],
                 numpy=np_bce, torch=torch_bce, jax=jax_bce,
                 nbytes=_elem_bytes, formula=_elem_formula)
    + loss_cases("sigmoid_focal_loss", FAMILY, fl.sigmoid_focal_loss, ("x", "t"), make_binary,
                 [size((8192, 1024), (512, 1024))], numpy=np_focal, torch=torch_focal,
                 jax=jax_focal, nbytes=_elem_bytes, formula=_elem_formula)
    + _softmax_cases("logsumexp", fl.logsumexp, np_logsumexp, "logsumexp", "logsumexp",
                     "logsumexp", (2048, 8192), (128, 1024))
    + _softmax_cases("softmax", fl.softmax, np_softmax, "softmax", "softmax", "softmax",
                     (2048, 8192), (128, 1024))
    + _softmax_cases("log_softmax", fl.log_softmax, np_log_softmax, "log_softmax", "log_softmax",
                     "log_softmax", (2048, 8192), (128, 1024))
    # GEMM-bound, seconds a call (the runner makes 1 + 3 calls): no grad_out variant, no
    # copy floor. 8192 x 2048 x 128256 is not here: ~50 s a GEMM on 2 cores.
    + loss_cases("linear_cross_entropy", FAMILY, fl.linear_cross_entropy, ("x", "W", "y"),
                 make_head, [size((2048, 1024, 32000), (128, 64, 1000), "v32k"),
                             size((1024, 1024, 128256), (16, 64, 8000), "v128k", large=True)],
                 wrt=(0, 1), numpy=np_linear_cross_entropy, torch=torch_linear_cross_entropy,
                 variants=("loss", "grad"), products=_head_products,
                 notes={"numpy": "unfused: logits = x @ W.T, cross-entropy in place, 2 GEMMs",
                        "torch": "F.linear_cross_entropy, reference path (options=None)"})
)
