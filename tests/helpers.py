"""What the gradient-check tests share: seeded inputs, tolerances, and the comparison with torch.

Every random tensor comes from a torch.Generator seeded by the test, so a failure
reproduces exactly, and the global random stream is left to the tests that need it
(the model's initialization).
"""

import contextlib
from collections.abc import Iterator

import torch

import manual.functional as F
from lockstep import checks
from lockstep.checks import Agreement, agreement
from lockstep.diagnosis import around
from lockstep.kinds import explain, tensor_key
from lockstep.learner import hidden_names
from lockstep.limits import MAX_GRAD_REL_DIFF
from manual.layers import BatchNorm1d, Linear, ReLU
from manual.model import SoftmaxRegression
from manual.optim import Adam, AdamW

DTYPES = (torch.float32, torch.float64)
DTYPE_IDS = ["float32", "float64"]  # test ids: test_x[float32] rather than test_x[dtype0]

# Hand-written code against torch in float64: the formulas are the same, so only the
# order of rounding can differ, a few units in the last place (~1e-16).
FLOAT64_MAX_REL_DIFF = 1e-12
# Hand-written gradient against central differences in float64 (CS231n): ~1e-7 or below
# is right for a smooth function; 1e-4 already signals a bug.
FINITE_DIFFERENCE_MAX_REL_DIFF = 1e-7

# (N, C): a batch of one, two classes, odd sizes, and an MNIST-sized batch.
SHAPES = [(1, 10), (4, 2), (7, 3), (64, 10)]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on a single thread inside the block, then restore the thread count.

    The tensors here are tiny: splitting a 32 x 784 product across threads costs more
    than it saves, and on a machine whose cores are busy it can be 100 times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def random_logits(n: int, num_classes: int, dtype: torch.dtype = torch.float64,
                  scale: float = 3.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """logits (N, C) ~ scale * N(0, 1) and targets (N,) uniform in 0..C-1, from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(n, num_classes, generator=generator, dtype=dtype)
    targets = torch.randint(num_classes, (n,), generator=generator)
    return logits, targets


def random_batch(n: int, in_features: int, num_classes: int, dtype: torch.dtype = torch.float64,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, D) like MNIST pixels (in [0, 1), most of them 0) and labels y (N,), from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, in_features, generator=generator, dtype=dtype)
    x[torch.rand(n, in_features, generator=generator) < 0.8] = 0  # MNIST is ~80% background
    y = torch.randint(num_classes, (n,), generator=generator)
    return x, y


def manual_model(weight: torch.Tensor, bias: torch.Tensor) -> SoftmaxRegression:
    """A manual SoftmaxRegression holding `weight` (C, D) and `bias` (C,) instead of its own."""
    num_classes, in_features = weight.shape
    with torch.random.fork_rng():  # its own random init must not shift the global stream
        model = SoftmaxRegression(in_features, num_classes, dtype=weight.dtype)
    model.weight, model.bias = weight, bias
    return model


class ManualCrossEntropy(torch.autograd.Function):
    """manual cross_entropy forward, manual cross_entropy_grad backward; autograd only calls them.

    Wrapped so that torch's own checker, torch.autograd.gradcheck, can test the hand
    derivation: it compares backward() with finite differences of forward().
    """

    @staticmethod
    def forward(ctx, logits, targets, reduction, label_smoothing):
        ctx.save_for_backward(logits, targets)
        ctx.reduction, ctx.label_smoothing = reduction, label_smoothing
        return F.cross_entropy(logits, targets, reduction, label_smoothing)

    @staticmethod
    def backward(ctx, grad_loss):
        logits, targets = ctx.saved_tensors
        grad_logits = F.cross_entropy_grad(logits, targets, ctx.reduction, ctx.label_smoothing)
        return grad_loss * grad_logits, None, None, None  # chain rule; targets etc. get none


class ManualLinear(torch.autograd.Function):
    """logits = x W^T + b by SoftmaxRegression.forward, the gradients by its backward."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.model = manual_model(weight.detach(), bias.detach())
        return ctx.model.forward(x.detach())

    @staticmethod
    def backward(ctx, grad_logits):
        grad_x = ctx.model.backward(grad_logits)
        return grad_x, ctx.model.weight.grad, ctx.model.bias.grad


class Differs(AssertionError):
    """The hand-written tensor is not torch's: the agreement, then the tutor's sentence
    (tutor()), which the grader's summary shows (.told)."""

    def __init__(self, message: str, told: str):
        super().__init__(f"{message}\n{told}")
        self.told = told


def tutor(name: str, actual: torch.Tensor | None, expected: torch.Tensor, limit: float,
          batch_size: int = 0, targets: torch.Tensor | None = None,
          ties: torch.Tensor | None = None, step: int | None = None) -> str:
    """The tutor's sentence for a check that failed, in compare.py's words
    (lockstep.kinds.explain): name is the tensor as compare.py names it, a gradient with
    ".grad" ("bias.grad"; "hidden.relu.1.grad" for dLoss/d(hidden.relu.1): tensor_key), so
    that the words say what it is; batch_size (N) names a factor of N or 1/N, targets (N,) a
    shifted one-hot in dLoss/dlogits, ties the tied maxima of the max pooling whose input's
    gradient it is (hidden_gradients); step puts "step N, " in front, as compare.py does."""
    told = explain(name, actual, expected, limit, batch_size, targets, ties)
    return told if step is None else f"step {step}, {told}"


def hidden_gradients(model) -> list[tuple[str, torch.Tensor | None]]:
    """For each hidden output of torch's `model` (an MLP or a CNN of torch_impl, after its
    forward), what tutor() takes for its gradient: compare.py's name ("hidden.relu.1.grad")
    and, where a max pooling takes it, the mask of that pooling's tied maxima, found as
    compare.py finds them (lockstep.diagnosis.around); else None."""
    return [(tensor_key("grad", name), around(model, name).get("ties"))
            for name in hidden_names(model)]


def assert_matches_torch(name: str, actual: torch.Tensor, expected: torch.Tensor,
                         batch_size: int = 0, targets: torch.Tensor | None = None,
                         ties: torch.Tensor | None = None) -> None:
    """The hand-written `actual` against torch's `expected`, with the agreement printed.

    float32: within torch.testing.assert_close's default tolerances (the two may
    round in a different order, an honest "close"). float64: at most 1e-12 relative
    difference (assert_agrees), i.e. nothing but rounding differs. A failure says, as
    compare.py's tutor does, how they differ (tutor(): name a gradient with ".grad").
    """
    if actual is None or actual.shape != expected.shape:
        raise Differs(f"{name}: shape {checks.shape_of(actual)} against "
                      f"{checks.shape_of(expected)}", tutor(name, actual, expected, 1e-4))
    assert actual.dtype == expected.dtype, f"{name}: {actual.dtype} vs {expected.dtype}"
    if expected.dtype == torch.float64:
        assert_agrees(name, actual, expected, FLOAT64_MAX_REL_DIFF, batch_size, targets, ties)
        return
    result = agreement(name, actual, expected)
    print(result)
    try:
        torch.testing.assert_close(actual, expected)
    except AssertionError:
        raise Differs(f"{result}: not within assert_close's default tolerances",
                      tutor(name, actual, expected, MAX_GRAD_REL_DIFF["float32"], batch_size,
                            targets, ties)) from None


def assert_agrees(name: str, actual: torch.Tensor, expected: torch.Tensor, max_rel_diff: float,
                  batch_size: int = 0, targets: torch.Tensor | None = None,
                  ties: torch.Tensor | None = None, step: int | None = None) -> Agreement:
    """lockstep.checks.assert_agrees against torch's `expected` ("NAME at step N" with a
    step); a failure says how the two differ, as assert_matches_torch's does."""
    shown = name if step is None else f"{name} at step {step}"
    try:
        return checks.assert_agrees(shown, actual, expected, max_rel_diff)
    except AssertionError as error:
        raise Differs(str(error), tutor(name, actual, expected, max_rel_diff, batch_size,
                                        targets, ties, step)) from None


def assert_close_to_torch(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Entry by entry: assert_close's defaults in float32, rtol = atol = 1e-12 in float64.

    For the property-based tests, whose results may be all zeros (then a relative
    difference per tensor, max|a - b| / max|b|, would be 0 / 0).
    """
    if expected.dtype == torch.float64:
        torch.testing.assert_close(actual, expected, rtol=FLOAT64_MAX_REL_DIFF,
                                   atol=FLOAT64_MAX_REL_DIFF)
    else:
        torch.testing.assert_close(actual, expected)


class WorstAgreement:
    """Checks a quantity at every training step but prints only its worst step.

    check() fails through assert_agrees (which prints the verdict and raises) as soon
    as one step exceeds max_rel_diff; report() prints one line per quantity.
    """

    def __init__(self, max_rel_diff: float):
        self.max_rel_diff = max_rel_diff
        self.worst: dict[str, tuple[int, Agreement]] = {}
        self.steps: dict[str, int] = {}

    def check(self, name: str, step: int, actual: torch.Tensor, expected: torch.Tensor,
              batch_size: int = 0, targets: torch.Tensor | None = None,
              ties: torch.Tensor | None = None) -> None:
        """name, batch_size, targets and ties: for the tutor's sentence, as tutor() takes
        them; it starts "step N, ", as compare.py's does."""
        if actual is None or actual.shape != expected.shape:
            raise Differs(f"{name} at step {step}: shape {checks.shape_of(actual)} against "
                          f"{checks.shape_of(expected)}",
                          tutor(name, actual, expected, 1e-4, step=step))
        assert actual.dtype == expected.dtype, name
        result = agreement(name, actual, expected)
        if not result.max_rel_diff <= self.max_rel_diff:
            assert_agrees(name, actual, expected, self.max_rel_diff, batch_size, targets, ties,
                          step)
        self.steps[name] = self.steps.get(name, 0) + 1
        if name not in self.worst or result.max_rel_diff > self.worst[name][1].max_rel_diff:
            self.worst[name] = (step, result)

    def largest(self) -> float:
        """The largest relative difference seen, over every quantity and step."""
        return max(result.max_rel_diff for _, result in self.worst.values())

    def report(self) -> None:
        for name, (step, result) in self.worst.items():
            print(f"worst of {self.steps[name]} checks (step {step}) {result}")


# Broken twins: each must fail the checks that the right layer or optimizer passes
# (test_layers.py, test_optim.py) and make compare.py say MISMATCH (test_compare.py).

def linear_backward(weight=None, bias=None):
    """Broken on demand: Linear.backward with its weight gradient replaced by weight(layer, g)
    and its bias gradient by bias(g), g = dLoss/dy; the returned dLoss/dx stays right."""
    right = Linear.backward

    def backward(self, grad_output, needs_input_grad=True):
        grad_input = right(self, grad_output, needs_input_grad)
        if weight:
            self.weight.grad = weight(self, grad_output)
        if bias and self.bias is not None:
            self.bias.grad = bias(grad_output)
        return grad_input
    return backward


class GradientLeakingReLU(ReLU):
    """Broken: backward passes g through where x < 0 too, as if ReLU were the identity."""

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        return grad_output


class BatchNormWithoutMeanTerm(BatchNorm1d):
    """Broken: the training-mode input gradient forgets the mean path, - mean_m g_m."""

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        self.weight.grad = (grad_output * self.x_hat).sum(dim=0)
        self.bias.grad = grad_output.sum(dim=0)
        scale = self.weight * self.inv_std
        if not self.batch_statistics:
            return grad_output * scale
        mean_terms = self.x_hat * self.weight.grad / len(grad_output)  # no bias.grad / N
        return scale * (grad_output - mean_terms)


class AdamWithoutBiasCorrection(Adam):
    """Broken: m and v are used as they are, never divided by 1 - beta^t."""

    def bias_corrections(self, step: int) -> tuple[float, float]:
        return 1.0, 1.0


class AdamWithEpsInsideTheRoot(Adam):
    """Broken: sqrt(v_hat + eps) instead of sqrt(v_hat) + eps (eps = 1e-8 then acts as 1e-4)."""

    def denominator(self, v: torch.Tensor, bias_correction2: float) -> torch.Tensor:
        return (v / bias_correction2).add_(self.eps).sqrt()


class AdamWDecayingThroughTheGradient(AdamW):
    """Broken: AdamW's weight decay added to the gradient (Adam's L2 penalty), not decoupled."""

    decay = Adam.decay
