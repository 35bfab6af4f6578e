"""manual/model.py: SoftmaxRegression starts, runs forward and backward exactly as nn.Linear does.

- Initialization: after the same torch.manual_seed, the manual weight and bias are
  bit-for-bit those of nn.Linear.
- forward: logits = x W^T + b equal nn.Linear's.
- backward: the chain rule by hand, weight.grad = g^T x, bias.grad = sum_n g_n and
  dLoss/dx = g W, held against central differences of the whole loss (float64),
  against torch.autograd.gradcheck, and against autograd itself.
- Purity: no input modified, no autograd involved; and proof that a wrong backward fails.

Run with `pytest -s` to see each comparison printed.
"""

import pytest
import torch
from torch import nn

import manual.functional as F
from lockstep.checks import assert_agrees, numerical_gradient
from manual.model import SoftmaxRegression
from tests.helpers import (
    DTYPE_IDS,
    DTYPES,
    FINITE_DIFFERENCE_MAX_REL_DIFF,
    ManualCrossEntropy,
    ManualLinear,
    assert_matches_torch,
    manual_model,
    one_thread,
    random_batch,
)

# (N, D, C): a batch of one, two classes, a single feature, odd sizes, MNIST-sized.
SHAPES = [(1, 784, 10), (4, 1, 2), (7, 13, 3), (64, 784, 10)]
SHAPE_IDS = [f"N{n}-D{d}-C{c}" for n, d, c in SHAPES]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Every test of this file on one thread (tiny tensors; see helpers.one_thread)."""
    with one_thread():
        yield


def twin_models(in_features: int, num_classes: int, dtype: torch.dtype,
                seed: int = 0) -> tuple[SoftmaxRegression, nn.Linear]:
    """The manual model and nn.Linear, each built right after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    manual = SoftmaxRegression(in_features, num_classes, dtype=dtype)
    torch.manual_seed(seed)
    return manual, nn.Linear(in_features, num_classes, dtype=dtype)


def dense_batch(n: int, in_features: int, num_classes: int,
                dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, D) ~ N(0, 1), no zero pixel (so every weight gets a gradient to check), labels y."""
    _, y = random_batch(n, in_features, num_classes)
    return torch.randn(n, in_features, generator=torch.Generator().manual_seed(1), dtype=dtype), y


# Initialization -------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1234])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("in_features", "num_classes"),
                         [(1, 10), (2, 2), (3, 10), (13, 3), (784, 10), (1000, 7)])
def test_initialization_is_bit_identical_to_nn_linear(in_features, num_classes, dtype, seed):
    """After the same seed, weight and bias hold exactly nn.Linear's numbers (torch.equal)."""
    manual, linear = twin_models(in_features, num_classes, dtype, seed)
    assert manual.weight.dtype == linear.weight.dtype == dtype
    assert torch.equal(manual.weight, linear.weight.detach()), "weight differs from nn.Linear's"
    assert torch.equal(manual.bias, linear.bias.detach()), "bias differs from nn.Linear's"


def test_parameters_are_weight_then_bias_themselves():
    """parameters() returns the weight and bias tensors themselves, so SGD updates the model."""
    model = SoftmaxRegression(13, 3)
    weight, bias = model.parameters()
    assert weight is model.weight and bias is model.bias
    assert not weight.requires_grad and not bias.requires_grad  # no autograd anywhere


# forward and backward against nn.Linear and autograd -----------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("n", "in_features", "num_classes"), SHAPES, ids=SHAPE_IDS)
def test_forward_matches_nn_linear(n, in_features, num_classes, dtype):
    """forward(x) = x W^T + b equals nn.Linear(x)."""
    manual, linear = twin_models(in_features, num_classes, dtype)
    x, _ = dense_batch(n, in_features, num_classes, dtype)
    with torch.no_grad():
        expected = linear(x)
    assert_matches_torch("logits", manual.forward(x), expected)


def check_backward_against_autograd(n, in_features, num_classes, dtype):
    """The body of the next test, kept apart so the last test can prove it fails on a bug."""
    manual, linear = twin_models(in_features, num_classes, dtype)
    x, _ = dense_batch(n, in_features, num_classes, dtype)
    upstream = torch.randn(n, num_classes, generator=torch.Generator().manual_seed(1),
                           dtype=dtype)  # any dLoss/dlogits: backward is the chain rule for any g
    x_autograd = x.clone().requires_grad_()
    linear(x_autograd).backward(upstream)

    manual.forward(x)
    grad_x = manual.backward(upstream)
    assert_matches_torch("weight.grad", manual.weight.grad, linear.weight.grad, batch_size=n)
    assert_matches_torch("bias.grad", manual.bias.grad, linear.bias.grad, batch_size=n)
    assert_matches_torch("dLoss/dx", grad_x, x_autograd.grad, batch_size=n)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("n", "in_features", "num_classes"), SHAPES, ids=SHAPE_IDS)
def test_backward_matches_autograd(n, in_features, num_classes, dtype):
    """backward(g) fills weight.grad and bias.grad and returns dx exactly as logits.backward(g)."""
    check_backward_against_autograd(n, in_features, num_classes, dtype)


def test_backward_sets_gradients_rather_than_accumulating():
    """Two backward() calls leave the gradient of one (autograd would add them: zero_grad first)."""
    model = SoftmaxRegression(13, 3, dtype=torch.float64)
    x, _ = random_batch(7, 13, 3)
    upstream = torch.ones(7, 3, dtype=torch.float64)
    model.forward(x)
    model.backward(upstream)
    once = model.weight.grad.clone(), model.bias.grad.clone()
    model.backward(upstream)
    assert torch.equal(model.weight.grad, once[0]) and torch.equal(model.bias.grad, once[1])


# The whole loss by central differences, and by torch.autograd.gradcheck -----------------

@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize(("n", "in_features", "num_classes"), [(1, 5, 2), (7, 13, 3)])
@pytest.mark.parametrize("wrt", ["weight", "bias", "x"])
def test_loss_gradients_match_central_differences(wrt, n, in_features, num_classes, reduction,
                                                  label_smoothing):
    """dLoss/dW, dLoss/db, dLoss/dx from backward() agree with central differences to 1e-7."""
    torch.manual_seed(0)
    model = SoftmaxRegression(in_features, num_classes, dtype=torch.float64)
    x, y = dense_batch(n, in_features, num_classes)
    inputs = {"weight": model.weight, "bias": model.bias, "x": x}

    def loss(value: torch.Tensor) -> torch.Tensor:
        """The full loss with the `wrt` tensor replaced by `value`, the others held fixed."""
        args = {**inputs, wrt: value}
        logits = manual_model(args["weight"], args["bias"]).forward(args["x"])
        return F.cross_entropy(logits, y, reduction, label_smoothing)

    numeric = numerical_gradient(loss, inputs[wrt])
    logits = model.forward(x)
    grad_x = model.backward(F.cross_entropy_grad(logits, y, reduction, label_smoothing))
    analytic = {"weight": model.weight.grad, "bias": model.bias.grad, "x": grad_x}[wrt]
    assert_agrees(f"dLoss/d{wrt} vs central differences", analytic, numeric,
                  FINITE_DIFFERENCE_MAX_REL_DIFF)


@pytest.mark.parametrize(("n", "in_features", "num_classes"), [(1, 5, 2), (7, 13, 3)])
def test_linear_backward_passes_torch_gradcheck(n, in_features, num_classes):
    """torch.autograd.gradcheck (float64) accepts the manual backward wrt x, W and b."""
    torch.manual_seed(0)
    model = SoftmaxRegression(in_features, num_classes, dtype=torch.float64)
    x, _ = dense_batch(n, in_features, num_classes)
    inputs = (x.requires_grad_(), model.weight.requires_grad_(), model.bias.requires_grad_())
    assert torch.autograd.gradcheck(ManualLinear.apply, inputs)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_whole_manual_chain_passes_torch_gradcheck(label_smoothing):
    """gradcheck of loss(x, W, b) built only from manual pieces: linear, then cross-entropy."""
    torch.manual_seed(0)
    model = SoftmaxRegression(13, 3, dtype=torch.float64)
    x, y = dense_batch(7, 13, 3)

    def loss(x, weight, bias):
        return ManualCrossEntropy.apply(ManualLinear.apply(x, weight, bias), y, "mean",
                                        label_smoothing)

    inputs = (x.requires_grad_(), model.weight.requires_grad_(), model.bias.requires_grad_())
    assert torch.autograd.gradcheck(loss, inputs)


# Purity --------------------------------------------------------------------------------

def test_forward_and_backward_modify_no_input_and_need_no_autograd():
    """x and g are untouched, nothing requires grad, and torch.no_grad() changes no bit."""
    x, y = random_batch(7, 13, 3)
    upstream = F.cross_entropy_grad(torch.randn(7, 3, dtype=torch.float64), y)
    x_before, upstream_before = x.clone(), upstream.clone()
    results = []
    for context in (torch.enable_grad, torch.no_grad):
        torch.manual_seed(0)
        model = SoftmaxRegression(13, 3, dtype=torch.float64)
        with context():
            logits = model.forward(x)
            grad_x = model.backward(upstream)
        results.append([logits, grad_x, model.weight.grad, model.bias.grad])
    assert torch.equal(x, x_before) and torch.equal(upstream, upstream_before)
    for with_grad, no_grad in zip(*results, strict=True):
        assert not with_grad.requires_grad and torch.equal(with_grad, no_grad)


# The checks can fail -------------------------------------------------------------------

@pytest.mark.twin
def test_a_wrong_bias_gradient_fails_the_autograd_test(monkeypatch):
    """A backward that averages bias.grad over the batch instead of summing is caught."""
    backward = SoftmaxRegression.backward

    def mean_bias_backward(self, grad_logits):
        grad_x = backward(self, grad_logits)
        self.bias.grad = grad_logits.mean(dim=0)  # wrong: b is added to every example
        return grad_x

    monkeypatch.setattr(SoftmaxRegression, "backward", mean_bias_backward)
    with pytest.raises(AssertionError, match=r"bias\.grad"):
        check_backward_against_autograd(7, 13, 3, torch.float64)
