"""The family-neutral layer: one grad_out rule, one empty-denominator rule, one
validation of shared options, and families that do not reach into each other."""
import ast
import pathlib

import numpy as np
import pytest

import fastloss
import fastloss.reference

FAMILIES = ("classification", "divergence", "gaussian", "metric", "regression")
PKG = pathlib.Path(fastloss.__file__).parent

rng = np.random.default_rng(0)
X = rng.standard_normal((6, 4))
Y = rng.standard_normal((6, 4))
BOX = np.array([[0.0, 0.0, 1.0, 1.0]] * 3)

# (call, number of gradients) for a function with gradients: call(grad_out) runs it with
# return_grad=True.
GRAD_CALLS = {
    "cross_entropy": (lambda go: fastloss.cross_entropy(X, np.arange(6) % 4, return_grad=True, grad_out=go), 1),
    "logsumexp": (lambda go: fastloss.logsumexp(X, return_grad=True, grad_out=go), 1),
    "bce": (lambda go: fastloss.binary_cross_entropy_with_logits(X, Y > 0, return_grad=True, grad_out=go), 1),
    "entropy": (lambda go: fastloss.entropy(X, return_grad=True, grad_out=go), 1),
    "kl_divergence": (lambda go: fastloss.kl_divergence(X, Y, return_grad=True, grad_out=go), 2),
    "gaussian_kl": (lambda go: fastloss.gaussian_kl(X, Y, return_grad=True, grad_out=go), 2),
    "mse_loss": (lambda go: fastloss.mse_loss(X, Y, return_grad=True, grad_out=go), 1),
    "giou": (lambda go: fastloss.generalized_box_iou_loss(BOX, BOX, return_grad=True, grad_out=go), 2),
    "triplet": (lambda go: fastloss.triplet_margin_loss(X, Y, X + 1, return_grad=True, grad_out=go), 3),
    "info_nce": (lambda go: fastloss.info_nce_loss(X, Y, return_grad=True, grad_out=go), 2),
    "batch_hard": (lambda go: fastloss.batch_hard_triplet_loss(X, np.arange(6) % 2, return_grad=True,
                                                               grad_out=go), 1),
}


@pytest.mark.parametrize("name", sorted(GRAD_CALLS))
def test_grad_out_container_is_one_rule(name):
    call, k = GRAD_CALLS[name]
    wrong = (np.zeros(1),) * (k + 1)            # a tuple of the wrong length
    with pytest.raises(ValueError, match=f"grad_out must be {'a tuple of' if k > 1 else 'one array'}"):
        call(wrong)
    if k > 1:                                   # a bare array where a tuple is needed
        with pytest.raises(ValueError, match=f"grad_out must be a tuple of {k} arrays"):
            call(np.zeros(1))
    else:                                       # a 1-tuple is the same as the bare array
        loss, g = call(None)
        buf = np.empty_like(g)
        loss1, g1 = call((buf,))
        assert g1 is buf
        np.testing.assert_array_equal(loss1, loss)
        np.testing.assert_array_equal(g1, g)


def test_empty_denominator_gradient_rule():
    """"mean" over a zero denominator: the loss is NaN, the gradient NaN wherever a counted
    term enters (scale 1/0 = inf) and 0 where nothing counts."""
    labels = np.array([0, 1, -100, 2, 0, -100])
    w = np.array([0.0, 0.0, 0.0, 1.0])            # the counted rows all have weight 0
    loss, g = fastloss.cross_entropy(X, labels, weight=w, return_grad=True)
    assert np.isnan(loss)
    counted = labels != -100
    assert np.isnan(g[counted]).any() and np.all(g[~counted] == 0)
    rloss, rg = fastloss.reference.cross_entropy(X, labels, weight=w, return_grad=True)
    assert np.isnan(rloss) and np.all(rg[~counted] == 0)     # the oracle keeps the same rule
    loss, g = fastloss.mse_loss(X, Y, weight=np.zeros(4), return_grad=True)
    assert np.isnan(loss) and np.isnan(g).all()
    # nothing counts at all: NaN loss, zero gradient (PyTorch gives the same)
    loss, g = fastloss.cross_entropy(X, np.full(6, -100), return_grad=True)
    assert np.isnan(loss) and np.all(g == 0)
    rloss, rg = fastloss.reference.cross_entropy(X, np.full(6, -100), return_grad=True)
    assert np.isnan(rloss) and np.all(rg == 0)


@pytest.mark.parametrize("call", [
    lambda t: fastloss.kl_divergence(X, Y, temperature=t),
    lambda t: fastloss.distillation_loss(X, Y, temperature=t),
    lambda t: fastloss.info_nce_loss(X, Y, temperature=t),
    lambda t: fastloss.nt_xent_loss(X, Y, temperature=t),
])
@pytest.mark.parametrize("t", [np.inf, 0.0, -1.0, np.nan])
def test_temperature_is_checked_once_for_all(call, t):
    with pytest.raises(ValueError, match="temperature"):
        call(t)


@pytest.mark.parametrize("family", FAMILIES)
def test_families_do_not_import_each_others_private_names(family):
    """The families sit side by side on the shared layer (ARCHITECTURE.md)."""
    tree = ast.parse((PKG / f"{family}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module in FAMILIES:
            private = [a.name for a in node.names if a.name.startswith("_")]
            assert not private, f"{family}.py imports {private} from {node.module}.py"


def test_gaussian_names_importable_from_both_modules():
    from fastloss import divergence, gaussian
    for name in ("gaussian_kl", "mvn_kl", "vae_loss", "gaussian_nll_loss"):
        assert getattr(divergence, name) is getattr(gaussian, name) is getattr(fastloss, name)
