"""manual/layers.py and the manual MLP: each hand-written backward against autograd and more.

- Each layer (Linear with and without bias, ReLU, BatchNorm1d in training and in eval mode)
  against its torch.nn twin holding the same parameters and running statistics: output,
  dLoss/dx and every parameter's .grad, for a random upstream gradient (never ones: with
  ones, BatchNorm's true input gradient is 0, so a backward that forgets its x_hat term
  agrees with it just as well, rounding against rounding), in float64 to 1e-12 and float32
  within assert_close's defaults; backward sets .grad, never adds to it.
- Each layer against central differences (lockstep.checks.numerical_gradient) and against
  torch.autograd.gradcheck, in float64, with respect to x and every parameter.
- BatchNorm1d's running statistics against nn.BatchNorm1d over 50 random batches.
- The whole MLP, with and without BatchNorm: gradcheck, and against torch_impl's MLP from
  the same seed (parameters, names, gradients of every parameter and hidden output).
- Broken twins (a ReLU that lets the gradient through where x < 0, a BatchNorm without its
  mean term, a Linear that adds to .grad) fail these very checks: they can catch a bug.

Run with `pytest -s` to see each comparison printed.
"""

import copy

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

import torch_impl.layers as nn_layers
import torch_impl.model
from lockstep.checks import assert_agrees, numerical_gradient
from manual.layers import BatchNorm1d, Linear, ReLU
from manual.model import MLP
from tests.helpers import (
    DTYPE_IDS,
    DTYPES,
    FINITE_DIFFERENCE_MAX_REL_DIFF,
    BatchNormWithoutMeanTerm,
    GradientLeakingReLU,
    assert_matches_torch,
    hidden_gradients,
    one_thread,
)

LAYER_KINDS = ["linear", "linear-no-bias", "relu", "batchnorm-train", "batchnorm-eval"]
# (N, F): the smallest batch BatchNorm can train on, and two odd sizes.
SHAPES = [(2, 4), (6, 5), (7, 3)]
SHAPE_IDS = [f"N{n}-F{f}" for n, f in SHAPES]
OUT_FEATURES = 3  # Linear: (N, F) -> (N, 3)
# MLP: D inputs, H hidden units, C classes; small, so that gradcheck stays fast.
MLP_SIZES = dict(in_features=5, hidden=4, num_classes=3)
# Finite differences and gradcheck: not N = 2. There BatchNorm's x_hat is +-1 whatever x is
# (up to eps), so dLoss/dx is ~1e-3 of the loss's scale, and the rounding of a 1e-6 step
# (~1e-10) alone is 2e-7 of it: above 1e-7, though nothing is wrong. N = 2 is checked
# against autograd instead, to 1e-12.
SMALL_SHAPES = [(3, 4), (6, 5)]
SMALL_SHAPE_IDS = [f"N{n}-F{f}" for n, f in SMALL_SHAPES]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Every test of this file on one thread (tiny tensors; see helpers.one_thread)."""
    with one_thread():
        yield


# Inputs and twins ------------------------------------------------------------------------

def random_input(n: int, features: int, dtype: torch.dtype = torch.float64,
                 seed: int = 1) -> torch.Tensor:
    """x (N, F) ~ N(0, 1) pushed 0.01 away from 0, where ReLU has no derivative: then a step
    of 1e-6 (finite differences, gradcheck) never crosses the kink."""
    x = torch.randn(n, features, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    return torch.where(x >= 0, x + 0.01, x - 0.01)


def random_upstream(n: int, features: int, dtype: torch.dtype = torch.float64,
                    seed: int = 2) -> torch.Tensor:
    """A random dLoss/dy (N, F): backward is the chain rule for any g; ones would hide bugs."""
    return torch.randn(n, features, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def copy_state(manual, reference: torch.nn.Module) -> None:
    """Copy the manual layer's parameters and buffers into its torch twin, checking the names."""
    pairs = [(manual.named_parameters(), list(reference.named_parameters()))]
    if hasattr(manual, "named_buffers"):
        pairs.append((manual.named_buffers(), list(reference.named_buffers())))
    with torch.no_grad():
        for ours, theirs in pairs:
            assert [name for name, _ in ours] == [name for name, _ in theirs]
            for (_, source), (_, target) in zip(ours, theirs, strict=True):
                target.copy_(source)


def twin_layers(kind: str, features: int, dtype: torch.dtype = torch.float64, seed: int = 0,
                manual_class: type | None = None):
    """(manual layer, torch.nn twin) of `kind`, taking F features, with identical state.

    BatchNorm1d gets random weight, bias and running statistics rather than its ones and
    zeros, so that a gradient formula that forgets gamma, or eval mode that ignores the
    running statistics, cannot pass by accident. manual_class: a subclass of the manual
    layer to build instead (the broken twins below).
    """
    generator = torch.Generator().manual_seed(seed)
    if kind.startswith("linear"):
        bias = kind == "linear"
        torch.manual_seed(seed)
        manual = (manual_class or Linear)(features, OUT_FEATURES, bias=bias, dtype=dtype)
        reference = nn_layers.Linear(features, OUT_FEATURES, bias=bias, dtype=dtype)
    elif kind == "relu":
        manual, reference = (manual_class or ReLU)(), nn_layers.ReLU()
    else:
        manual = (manual_class or BatchNorm1d)(features, dtype=dtype)
        for tensor, low in [(manual.weight, None), (manual.bias, None),
                            (manual.running_mean, None), (manual.running_var, 0.5)]:
            fresh = torch.randn(features, generator=generator, dtype=dtype)
            tensor.copy_(fresh if low is None else low + fresh.abs())  # a variance stays > 0
        manual.num_batches_tracked.fill_(3)
        reference = nn_layers.BatchNorm1d(features, dtype=dtype)
        if kind == "batchnorm-eval":
            manual.eval()
            reference.eval()
    copy_state(manual, reference)
    return manual, reference


def set_tensor(owner, name: str, value: torch.Tensor) -> None:
    """owner.<name> = value, for a dotted name as named_parameters() gives: "layers.0.weight"."""
    *path, leaf = name.split(".")
    for part in path:
        owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
    setattr(owner, leaf, value)


class ManualForwardBackward(torch.autograd.Function):
    """A manual layer or model: its forward, then its backward; autograd only calls them.

    apply(template, names, x, *params): runs a fresh copy of `template` holding `params`
    under `names` (its named_parameters()), so that gradcheck's many perturbed forwards
    neither overwrite what backward uses nor move the template's running statistics.
    backward returns dLoss/dx and the .grad of every parameter, in the same order.
    """

    @staticmethod
    def forward(ctx, template, names, x, *params):
        ctx.layer = layer = copy.deepcopy(template)
        for name, param in zip(names, params, strict=True):
            set_tensor(layer, name, param.detach())
        return layer.forward(x.detach())

    @staticmethod
    def backward(ctx, grad_output):
        grad_x = ctx.layer.backward(grad_output)
        return None, None, grad_x, *(param.grad for param in ctx.layer.parameters())


def assert_buffers_match(manual, reference: torch.nn.Module, when: str = "") -> None:
    """running_mean and running_var as assert_matches_torch; num_batches_tracked exactly."""
    if not hasattr(manual, "named_buffers"):
        return
    theirs = list(reference.named_buffers())
    assert [name for name, _ in manual.named_buffers()] == [name for name, _ in theirs]
    for (name, ours), (_, expected) in zip(manual.named_buffers(), theirs, strict=True):
        if expected.is_floating_point():
            assert_matches_torch(f"{name}{when}", ours, expected)
        else:
            assert torch.equal(ours, expected), f"{name}{when}: {ours} vs {expected}"


# The checks, kept apart so that the broken twins below prove each one can fail ------------

def check_layer_against_autograd(manual, reference: torch.nn.Module, x: torch.Tensor,
                                 grad_output: torch.Tensor) -> None:
    """Output, buffers, dLoss/dx and every parameter's .grad of the manual layer equal those
    of its torch twin after y.backward(grad_output); backward, called twice, sets each .grad
    to the same values (autograd would add the second gradient to the first)."""
    reference.zero_grad()
    x_autograd = x.clone().requires_grad_()
    expected = reference(x_autograd)
    expected.backward(grad_output)

    assert_matches_torch("output", manual(x), expected.detach())
    assert_buffers_match(manual, reference, " after forward")
    theirs = list(reference.named_parameters())
    assert [name for name, _ in manual.named_parameters()] == [name for name, _ in theirs]
    for call in ("first", "second"):
        grad_x = manual.backward(grad_output)
        assert_matches_torch(f"dLoss/dx ({call} backward)", grad_x, x_autograd.grad,
                             batch_size=len(x))
        for (name, param), (_, twin) in zip(manual.named_parameters(), theirs, strict=True):
            assert_matches_torch(f"{name}.grad ({call} backward)", param.grad, twin.grad,
                                 batch_size=len(x))


def check_layer_against_central_differences(layer, x: torch.Tensor,
                                            grad_output: torch.Tensor) -> None:
    """dLoss/dx and dLoss/d(each parameter) from backward(g) agree to 1e-7 with central
    differences of Loss = sum(forward(x) * g), whose gradient is exactly that chain rule."""
    trained = copy.deepcopy(layer)  # the forward of BatchNorm in training mode moves its stats
    trained(x)
    grad_x = trained.backward(grad_output)
    analytic = {"x": grad_x} | {name: param.grad for name, param in trained.named_parameters()}
    for wrt, gradient in analytic.items():
        def loss(value: torch.Tensor, wrt: str = wrt) -> torch.Tensor:
            """Loss with the `wrt` tensor replaced by `value`, on a fresh copy of the layer."""
            fresh = copy.deepcopy(layer)
            if wrt != "x":
                set_tensor(fresh, wrt, value)
            return (fresh(value if wrt == "x" else x) * grad_output).sum()

        start = x if wrt == "x" else dict(layer.named_parameters())[wrt]
        assert_agrees(f"dLoss/d{wrt} vs central differences", gradient,
                      numerical_gradient(loss, start), FINITE_DIFFERENCE_MAX_REL_DIFF)


def check_with_gradcheck(layer, x: torch.Tensor) -> None:
    """torch.autograd.gradcheck (float64) accepts the manual backward wrt x and every parameter.

    Raises GradcheckError, saying which input's Jacobian differs, when it does not.
    """
    names = [name for name, _ in layer.named_parameters()]
    inputs = (x.clone().requires_grad_(),
              *(param.detach().clone().requires_grad_() for param in layer.parameters()))
    assert len(inputs) == 1 + len(names) and all(each.requires_grad for each in inputs)

    def function(x, *params):
        return ManualForwardBackward.apply(layer, names, x, *params)

    # One backward first: one not written yet stops the check here, before gradcheck's
    # hundreds of forwards. A .grad it leaves unset is gradcheck's to report (allow_unused).
    torch.autograd.grad(function(*inputs).sum(), inputs, allow_unused=True)
    assert torch.autograd.gradcheck(function, inputs)


# Each layer against autograd, central differences and gradcheck --------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("n", "features"), SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_matches_autograd(kind, n, features, dtype):
    """Output, dLoss/dx and each parameter's .grad equal nn's (1e-12 in float64), set not added."""
    manual, reference = twin_layers(kind, features, dtype)
    out_features = OUT_FEATURES if kind.startswith("linear") else features
    check_layer_against_autograd(manual, reference, random_input(n, features, dtype),
                                 random_upstream(n, out_features, dtype))


@pytest.mark.parametrize(("n", "features"), SMALL_SHAPES, ids=SMALL_SHAPE_IDS)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_gradients_match_central_differences(kind, n, features):
    """dLoss/dx and dLoss/d(each parameter) agree with central differences to 1e-7 (float64)."""
    manual, _ = twin_layers(kind, features)
    out_features = OUT_FEATURES if kind.startswith("linear") else features
    check_layer_against_central_differences(manual, random_input(n, features),
                                            random_upstream(n, out_features))


@pytest.mark.parametrize(("n", "features"), SMALL_SHAPES, ids=SMALL_SHAPE_IDS)
@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_layer_passes_torch_gradcheck(kind, n, features):
    """torch.autograd.gradcheck accepts the layer's backward wrt x, weight and bias (float64)."""
    manual, _ = twin_layers(kind, features)
    names = [name for name, _ in manual.named_parameters()]
    expected = {"linear-no-bias": ["weight"], "relu": []}.get(kind, ["weight", "bias"])
    assert names == expected  # gradcheck gets x and each of these
    check_with_gradcheck(manual, random_input(n, features))


def test_batchnorm_gradcheck_leaves_the_running_statistics_alone():
    """gradcheck runs copies of the layer: the BatchNorm it checks keeps its running statistics."""
    manual, _ = twin_layers("batchnorm-train", 4)
    before = [buffer.clone() for _, buffer in manual.named_buffers()]
    check_with_gradcheck(manual, random_input(6, 4))
    for (name, buffer), old in zip(manual.named_buffers(), before, strict=True):
        assert torch.equal(buffer, old), name


# BatchNorm1d's running statistics and its two modes --------------------------------------

@pytest.mark.parametrize("momentum", [0.1, 0.5])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_batchnorm_running_statistics_match_torch_over_50_batches(dtype, momentum):
    """50 training batches of 2 to 11 examples: outputs and running statistics equal nn's at
    every step (1e-12 in float64), then eval mode normalizes with them exactly as nn does."""
    features = 5
    manual, reference = twin_layers("batchnorm-train", features, dtype)
    manual.momentum = reference.momentum = momentum
    generator = torch.Generator().manual_seed(3)
    sizes = torch.randint(2, 12, (50,), generator=generator).tolist()
    sizes[0] = sizes[25] = 2  # the smallest batch that trains, twice
    for step, n in enumerate(sizes):
        # a mean and a scale of their own per feature, so the running statistics have to move
        x = 3 * torch.randn(n, features, generator=generator, dtype=dtype) + 2
        with torch.no_grad():
            expected = reference(x)
        assert_matches_torch(f"output at step {step}", manual(x), expected)
        assert_buffers_match(manual, reference, f" at step {step}")
    assert manual.num_batches_tracked.item() == 3 + 50

    manual.eval()
    reference.eval()
    x = random_input(9, features, dtype)
    with torch.no_grad():
        expected = reference(x)
    assert_matches_torch("eval output", manual(x), expected)
    assert_buffers_match(manual, reference, " after an eval forward")
    assert manual.num_batches_tracked.item() == 3 + 50, "eval mode updated the statistics"


def test_batchnorm_batch_of_one_raises_in_training_like_torch():
    """A batch of 1 in training mode (variance of one value) raises ValueError, as nn's does,
    and leaves the manual layer's running statistics untouched."""
    manual, reference = twin_layers("batchnorm-train", 4)
    before = [buffer.clone() for _, buffer in manual.named_buffers()]
    x = random_input(1, 4)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        reference(x)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        manual(x)
    for (name, buffer), old in zip(manual.named_buffers(), before, strict=True):
        assert torch.equal(buffer, old), name


def test_batchnorm_batch_of_one_works_in_eval_mode():
    """In eval mode a batch of 1 normalizes with the running statistics; all gradients match nn."""
    manual, reference = twin_layers("batchnorm-eval", 4)
    check_layer_against_autograd(manual, reference, random_input(1, 4), random_upstream(1, 4))


# The whole MLP -----------------------------------------------------------------------------

def twin_mlps(batchnorm: bool, dtype: torch.dtype = torch.float64,
              seed: int = 0) -> tuple[MLP, torch_impl.model.MLP]:
    """The manual MLP and torch_impl's, each built right after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    manual = MLP(**MLP_SIZES, batchnorm=batchnorm, dtype=dtype)
    torch.manual_seed(seed)
    return manual, torch_impl.model.MLP(**MLP_SIZES, batchnorm=batchnorm, dtype=dtype)


def warm_up(manual: MLP, reference: torch_impl.model.MLP, mode: str) -> None:
    """mode "eval": three training batches first, so the running statistics are not 0 and 1."""
    if mode == "eval":
        for seed in (10, 11, 12):
            x = random_input(8, MLP_SIZES["in_features"], manual.layers[0].weight.dtype, seed)
            manual(x)
            with torch.no_grad():
                reference(x)
        manual.eval()
        reference.eval()


def check_mlp_against_autograd(manual: MLP, reference: torch_impl.model.MLP, x: torch.Tensor,
                               grad_logits: torch.Tensor) -> None:
    """Logits, hidden outputs, their gradients (named as compare.py names them), every parameter's
    .grad, the buffers and dLoss/dx equal torch_impl's MLP after logits.backward(grad_logits)."""
    reference.zero_grad()
    x_autograd = x.clone().requires_grad_()
    expected = reference(x_autograd)
    expected.backward(grad_logits)

    assert_matches_torch("logits", manual(x), expected.detach())
    hidden = list(zip(manual.hidden_outputs, reference.hidden_outputs, strict=True))
    for i, (ours, theirs) in enumerate(hidden):
        assert_matches_torch(f"hidden_outputs[{i}]", ours, theirs.detach())
    assert_buffers_match(manual, reference, " after forward")
    grad_x = manual.backward(grad_logits)
    assert_matches_torch("dLoss/dx", grad_x, x_autograd.grad, batch_size=len(x))
    for (name, ties), (ours, theirs) in zip(hidden_gradients(reference), hidden, strict=True):
        assert_matches_torch(name, ours.grad, theirs.grad, batch_size=len(x), ties=ties)
    for (name, param), (_, twin) in zip(manual.named_parameters(), reference.named_parameters(),
                                        strict=True):
        assert_matches_torch(f"{name}.grad", param.grad, twin.grad, batch_size=len(x))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_mlp_initialization_and_names_equal_torch_impl(batchnorm, dtype):
    """After the same seed: the same parameter and buffer names, in order, and the same bits."""
    manual, reference = twin_mlps(batchnorm, dtype)
    for ours, theirs in [(manual.named_parameters(), list(reference.named_parameters())),
                         (manual.named_buffers(), list(reference.named_buffers()))]:
        assert [name for name, _ in ours] == [name for name, _ in theirs]
        for (name, mine), (_, twin) in zip(ours, theirs, strict=True):
            assert mine.dtype == twin.dtype and torch.equal(mine, twin.detach()), name
    assert len(manual.named_buffers()) == (3 if batchnorm else 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_mlp_matches_torch_impl(batchnorm, mode, dtype):
    """Manual MLP vs torch_impl's from the same seed: every gradient, hidden ones included."""
    manual, reference = twin_mlps(batchnorm, dtype)
    warm_up(manual, reference, mode)
    n = 6
    check_mlp_against_autograd(manual, reference, random_input(n, MLP_SIZES["in_features"], dtype),
                               random_upstream(n, MLP_SIZES["num_classes"], dtype))


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("batchnorm", [False, True], ids=["plain", "batchnorm"])
def test_mlp_passes_torch_gradcheck(batchnorm, mode):
    """gradcheck of the whole manual chain (forward, then MLP.backward) wrt x and each parameter."""
    manual, reference = twin_mlps(batchnorm)
    warm_up(manual, reference, mode)
    x = random_input(6, MLP_SIZES["in_features"])
    probe = copy.deepcopy(manual)
    probe(x)
    relu_input = probe.hidden_outputs[-2]  # finite differences must not cross ReLU's kink at 0
    assert relu_input.abs().min() > 1e-3
    check_with_gradcheck(manual, x)


# The checks can fail: broken twins ---------------------------------------------------------

class AccumulatingLinear(Linear):
    """Broken: backward adds to .grad, as autograd does, instead of setting it."""

    def backward(self, grad_output: torch.Tensor,
                 needs_input_grad: bool = True) -> torch.Tensor | None:
        previous = [param.grad for param in self.parameters()]
        grad_x = super().backward(grad_output, needs_input_grad)
        for param, old in zip(self.parameters(), previous, strict=True):
            if old is not None:
                param.grad = param.grad + old
        return grad_x


BROKEN = {"relu": GradientLeakingReLU, "batchnorm-train": BatchNormWithoutMeanTerm,
          "linear": AccumulatingLinear}


def broken_twin(kind: str):
    """(broken manual layer, nn twin, x, g): twin_layers(kind) with the broken manual class."""
    manual, reference = twin_layers(kind, 5, manual_class=BROKEN[kind])
    out_features = OUT_FEATURES if kind == "linear" else 5
    return manual, reference, random_input(6, 5), random_upstream(6, out_features)


@pytest.mark.parametrize(("kind", "caught"), [
    ("relu", r"dLoss/dx \(first backward\)"),
    ("batchnorm-train", r"dLoss/dx \(first backward\)"),
    ("linear", r"weight\.grad \(second backward\)"),  # the first backward is still right
])
@pytest.mark.twin
def test_broken_layer_fails_the_autograd_check(kind, caught):
    """check_layer_against_autograd raises AssertionError for each broken twin, where expected."""
    manual, reference, x, grad_output = broken_twin(kind)
    with pytest.raises(AssertionError, match=caught):
        check_layer_against_autograd(manual, reference, x, grad_output)


@pytest.mark.twin
@pytest.mark.parametrize("kind", ["relu", "batchnorm-train"])
def test_broken_layer_fails_central_differences(kind):
    """check_layer_against_central_differences raises AssertionError on dLoss/dx."""
    manual, _, x, grad_output = broken_twin(kind)
    with pytest.raises(AssertionError, match="dLoss/dx vs central differences"):
        check_layer_against_central_differences(manual, x, grad_output)


@pytest.mark.twin
@pytest.mark.parametrize("kind", ["relu", "batchnorm-train"])
def test_broken_layer_fails_gradcheck(kind):
    """check_with_gradcheck raises GradcheckError (Jacobian mismatch) for each broken twin."""
    manual, _, x, _ = broken_twin(kind)
    with pytest.raises(GradcheckError, match="Jacobian mismatch"):
        check_with_gradcheck(manual, x)


@pytest.mark.parametrize(("broken", "batchnorm"),
                         [("relu", False), ("relu", True), ("batchnorm", True)],
                         ids=["relu-plain", "relu-batchnorm", "batchnorm"])
@pytest.mark.twin
def test_mlp_with_a_broken_layer_fails_the_checks(broken, batchnorm):
    """An MLP holding a broken twin fails the comparison with torch_impl and gradcheck."""
    manual, reference = twin_mlps(batchnorm)
    index = 2 if batchnorm else 1  # Linear, [BatchNorm1d], ReLU, Linear
    if broken == "relu":
        assert isinstance(manual.layers[index], ReLU)
        manual.layers[index] = GradientLeakingReLU()
    else:  # BatchNorm1d starts at ones and zeros, drawing nothing: the same state
        assert isinstance(manual.layers[1], BatchNorm1d)
        manual.layers[1] = BatchNormWithoutMeanTerm(MLP_SIZES["hidden"], dtype=torch.float64)
    x = random_input(6, MLP_SIZES["in_features"])
    with pytest.raises(AssertionError, match=r"hidden_outputs\[0\]\.grad|dLoss/dx"):
        check_mlp_against_autograd(manual, reference, x,
                                   random_upstream(6, MLP_SIZES["num_classes"]))
    with pytest.raises(GradcheckError, match="Jacobian mismatch"):
        check_with_gradcheck(manual, x)
