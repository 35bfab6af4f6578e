"""manual/functional.py computes what torch computes, and the gradient loss.backward() computes.

The hand-derived gradient of cross-entropy, dLoss/dlogits = (softmax(z) - q) / N, is
held against three references, from the most basic to the most convenient:

1. central finite differences in float64 (lockstep.checks.numerical_gradient): the
   definition of a derivative, knowing nothing of the formula;
2. torch.autograd.gradcheck, torch's own finite-difference checker, given the manual
   forward and backward wrapped as a torch.autograd.Function;
3. torch itself: F.softmax, F.log_softmax, F.cross_entropy and the logits.grad that
   loss.backward() fills (torch_impl.functional), for every reduction and label smoothing.

Then what must hold for any input (property-based, with hypothesis), numerical
stability at extreme logits, purity (no input modified, no autograd involved), and,
last, proof that these checks do fail when a gradient is wrong.

Run with `pytest -s` to see each comparison: bit-identical, close, or DIFFERENT.
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.autograd.gradcheck import GradcheckError

import manual.functional as F
import torch_impl.functional as T
from lockstep.checks import assert_agrees, numerical_gradient
from tests.helpers import (
    DTYPE_IDS,
    DTYPES,
    FINITE_DIFFERENCE_MAX_REL_DIFF,
    FLOAT64_MAX_REL_DIFF,
    SHAPES,
    ManualCrossEntropy,
    assert_close_to_torch,
    assert_matches_torch,
    one_thread,
    random_logits,
)

LABEL_SMOOTHINGS = [0.0, 0.1, 0.5, 0.99]
GRAD_REDUCTIONS = ["mean", "sum"]  # a gradient needs a scalar loss: no "none"

FUNCTIONS = ["softmax", "log_softmax", "cross_entropy", "cross_entropy_grad"]
# Every manual function with its options, as (name, keyword arguments).
CALLS = [
    ("softmax", {}),
    ("log_softmax", {}),
    *[("cross_entropy", {"reduction": r, "label_smoothing": ls})
      for r in F.REDUCTIONS for ls in (0.0, 0.1)],
    *[("cross_entropy_grad", {"reduction": r, "label_smoothing": ls})
      for r in GRAD_REDUCTIONS for ls in (0.0, 0.1)],
]
CALL_IDS = [f"{name}-{'-'.join(map(str, kwargs.values()))}".rstrip("-") for name, kwargs in CALLS]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Every test of this file on one thread (tiny tensors; see helpers.one_thread)."""
    with one_thread():
        yield


def call(module, name: str, kwargs: dict, logits: torch.Tensor,
         targets: torch.Tensor) -> torch.Tensor:
    """module.name(logits, ...) for module = manual.functional or torch_impl.functional."""
    if name in ("softmax", "log_softmax"):
        return getattr(module, name)(logits)
    return getattr(module, name)(logits, targets, **kwargs)


# 1. Central finite differences ---------------------------------------------------------

@pytest.mark.parametrize("label_smoothing", LABEL_SMOOTHINGS)
@pytest.mark.parametrize("reduction", GRAD_REDUCTIONS)
@pytest.mark.parametrize(("n", "num_classes"), [(1, 2), (7, 3), (5, 10)])
def test_cross_entropy_grad_matches_central_differences(n, num_classes, reduction,
                                                         label_smoothing):
    """cross_entropy_grad is the derivative of cross_entropy: central differences agree to 1e-7."""
    logits, targets = random_logits(n, num_classes, seed=n)
    numeric = numerical_gradient(
        lambda z: F.cross_entropy(z, targets, reduction, label_smoothing), logits)
    analytic = F.cross_entropy_grad(logits, targets, reduction, label_smoothing)
    assert_agrees("dLoss/dlogits vs central differences", analytic, numeric,
                  FINITE_DIFFERENCE_MAX_REL_DIFF)


# 2. torch.autograd.gradcheck on the manual code (tests/helpers.py wraps it) -------------

@pytest.mark.parametrize("label_smoothing", LABEL_SMOOTHINGS)
@pytest.mark.parametrize("reduction", GRAD_REDUCTIONS)
def test_cross_entropy_grad_passes_torch_gradcheck(reduction, label_smoothing):
    """torch.autograd.gradcheck (float64) accepts cross_entropy_grad as cross_entropy's backward."""
    logits, targets = random_logits(7, 3)
    assert torch.autograd.gradcheck(
        ManualCrossEntropy.apply, (logits.requires_grad_(), targets, reduction, label_smoothing))


# 3. Against torch and autograd ---------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("n", "num_classes"), SHAPES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax_match_torch(name, n, num_classes, dtype):
    """softmax and log_softmax equal torch's (float32: assert_close defaults, float64: 1e-12)."""
    logits, _ = random_logits(n, num_classes, dtype)
    assert_matches_torch(name, getattr(F, name)(logits), getattr(T, name)(logits))


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_and_log_softmax_work_on_the_last_dimension_of_any_shape(name, shape):
    """softmax and log_softmax take (..., C) like torch's dim=-1: one row, or a 3-D batch."""
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert_matches_torch(name, getattr(F, name)(logits), getattr(T, name)(logits))


@pytest.mark.parametrize("label_smoothing", LABEL_SMOOTHINGS)
@pytest.mark.parametrize("reduction", F.REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("n", "num_classes"), SHAPES)
def test_cross_entropy_matches_torch(n, num_classes, dtype, reduction, label_smoothing):
    """cross_entropy equals F.cross_entropy for every reduction and label smoothing."""
    logits, targets = random_logits(n, num_classes, dtype)
    assert_matches_torch(f"cross_entropy {reduction}",
                         F.cross_entropy(logits, targets, reduction, label_smoothing),
                         T.cross_entropy(logits, targets, reduction, label_smoothing))


def check_cross_entropy_grad_against_autograd(n, num_classes, dtype, reduction, label_smoothing):
    """The body of the next test, kept apart so the last tests can prove it fails on a bug."""
    logits, targets = random_logits(n, num_classes, dtype)
    assert_matches_torch(f"dLoss/dlogits {reduction} vs autograd",
                         F.cross_entropy_grad(logits, targets, reduction, label_smoothing),
                         T.cross_entropy_grad(logits, targets, reduction, label_smoothing),
                         batch_size=n, targets=targets)


@pytest.mark.parametrize("label_smoothing", LABEL_SMOOTHINGS)
@pytest.mark.parametrize("reduction", GRAD_REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("n", "num_classes"), SHAPES)
def test_cross_entropy_grad_matches_autograd(n, num_classes, dtype, reduction, label_smoothing):
    """cross_entropy_grad equals the logits.grad that loss.backward() computes."""
    check_cross_entropy_grad_against_autograd(n, num_classes, dtype, reduction, label_smoothing)


def test_cross_entropy_grad_refuses_reduction_none():
    """A per-example loss vector has no single gradient: reduction='none' raises ValueError,
    with any message (the hint asks for the refusal, not for its words)."""
    logits, targets = random_logits(7, 3)
    with pytest.raises(ValueError):
        F.cross_entropy_grad(logits, targets, reduction="none")


# 4. Numerical stability ----------------------------------------------------------------

def extreme_logits() -> tuple[torch.Tensor, torch.Tensor]:
    """float32 logits of +-1e4 (exp(1e4) overflows, exp(-1e4) underflows), targets on both."""
    logits = 1e4 * torch.tensor([[1.0, -1.0, 0.0], [-1.0, -1.0, -1.0], [1.0, 1.0, -1.0],
                                 [1.0, 1.0, 1.0], [-1.0, 0.0, 1.0]])
    random = 1e4 * torch.randn(3, 3, generator=torch.Generator().manual_seed(0))
    return torch.cat([logits, random]), torch.tensor([0, 1, 2, 1, 0, 2, 0, 1])


def not_finite(name: str, result: torch.Tensor) -> str:
    """What a result with NaN or inf entries went through, in words: -inf is the log of a
    probability that underflowed to 0; NaN or +inf, an exp that overflowed."""
    if (result == -torch.inf).any() and not result.isnan().any():
        return (f"{name} took the log of 0: a probability underflowed to 0 (exp of a large "
                f"negative number), and log(0) = -inf: {result}")
    return (f"{name} overflowed: exp of a large logit is inf, and inf / inf is NaN (subtract "
            f"each row's max first): {result}")


@pytest.mark.parametrize(("name", "kwargs"), CALLS, ids=CALL_IDS)
def test_extreme_logits_give_finite_results_equal_to_torch(name, kwargs):
    """At logits of +-1e4 in float32 every function stays finite and equals torch's."""
    logits, targets = extreme_logits()
    result = call(F, name, kwargs, logits, targets)
    assert torch.isfinite(result).all(), not_finite(name, result)
    assert_matches_torch(name, result, call(T, name, kwargs, logits, targets),
                         batch_size=len(logits),
                         targets=targets if name == "cross_entropy_grad" else None)


# 5. Properties that hold for every input (hypothesis) ----------------------------------

INPUTS = {
    "n": st.integers(1, 16),
    "num_classes": st.integers(2, 12),
    "dtype": st.sampled_from(DTYPES),
    "log10_scale": st.floats(-3, 4),  # logits of magnitude 1e-3 to 1e4
    "seed": st.integers(0, 2**32 - 1),
}
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


@PROPERTY_SETTINGS
@given(**INPUTS)
def test_softmax_rows_sum_to_one(n, num_classes, dtype, log10_scale, seed):
    """Each row of softmax is a probability distribution: it sums to 1."""
    logits, _ = random_logits(n, num_classes, dtype, 10**log10_scale, seed)
    torch.testing.assert_close(F.softmax(logits).sum(-1), torch.ones(n, dtype=dtype))


def shifted_exactly(logits: torch.Tensor, shift: torch.Tensor) -> tuple[torch.Tensor,
                                                                          torch.Tensor]:
    """logits (N, C) and logits + shift (N, 1), both rounded to a grid on which the sum is exact.

    Shift invariance is a property of real numbers: in floating point z + s itself
    rounds, and that rounding (not softmax) would move the result. With every value a
    multiple of 2^(e - 12), where 2^e exceeds them all, z, s and z + s need at most
    14 significant bits, so float32 and float64 represent them exactly.
    """
    largest = torch.cat([logits.abs().flatten(), shift.abs().flatten()]).max().item()
    grid = 2.0 ** (math.frexp(largest)[1] - 12)
    logits, shift = (logits / grid).round() * grid, (shift / grid).round() * grid
    return logits, logits + shift


@PROPERTY_SETTINGS
@given(**INPUTS)
def test_softmax_is_shift_invariant(n, num_classes, dtype, log10_scale, seed):
    """softmax(z + s) = softmax(z) for any constant s added to a whole row."""
    scale = 10**log10_scale
    logits, _ = random_logits(n, num_classes, dtype, scale, seed)
    shift = scale * torch.randn(n, 1, generator=torch.Generator().manual_seed(seed + 1),
                                dtype=dtype)
    logits, shifted = shifted_exactly(logits, shift)
    torch.testing.assert_close(F.softmax(shifted), F.softmax(logits))


@PROPERTY_SETTINGS
@given(**INPUTS, reduction=st.sampled_from(GRAD_REDUCTIONS),
       label_smoothing=st.sampled_from(LABEL_SMOOTHINGS))
def test_cross_entropy_grad_rows_sum_to_zero(n, num_classes, dtype, log10_scale, seed,
                                             reduction, label_smoothing):
    """Each row of dLoss/dlogits = (p - q) / N sums to 0, since p and q both sum to 1."""
    logits, targets = random_logits(n, num_classes, dtype, 10**log10_scale, seed)
    row_sums = F.cross_entropy_grad(logits, targets, reduction, label_smoothing).sum(-1)
    rounding = 4 * num_classes * torch.finfo(dtype).eps  # C entries, each a few ulp of <= 1
    torch.testing.assert_close(row_sums, torch.zeros_like(row_sums), rtol=0, atol=rounding)


@pytest.mark.parametrize("name", FUNCTIONS)
@PROPERTY_SETTINGS
@given(**INPUTS, data=st.data(), label_smoothing=st.sampled_from(LABEL_SMOOTHINGS))
def test_each_function_matches_torch_on_random_inputs(name, n, num_classes, dtype, log10_scale,
                                                      seed, data, label_smoothing):
    """Any shape, dtype, scale and label smoothing: each function equals its torch twin."""
    logits, targets = random_logits(n, num_classes, dtype, 10**log10_scale, seed)
    kwargs = data.draw(st.sampled_from([kwargs for called, kwargs in CALLS if called == name]))
    kwargs = {**kwargs, "label_smoothing": label_smoothing} if kwargs else kwargs
    assert_close_to_torch(call(F, name, kwargs, logits, targets),
                          call(T, name, kwargs, logits, targets))


# 6. Purity: inputs untouched, no autograd needed ---------------------------------------

@pytest.mark.parametrize(("name", "kwargs"), CALLS, ids=CALL_IDS)
def test_inputs_are_never_modified(name, kwargs):
    """No function writes into its logits or targets."""
    logits, targets = random_logits(7, 3)
    logits_before, targets_before = logits.clone(), targets.clone()
    call(F, name, kwargs, logits, targets)
    assert torch.equal(logits, logits_before) and torch.equal(targets, targets_before)


@pytest.mark.parametrize(("name", "kwargs"), CALLS, ids=CALL_IDS)
def test_works_unchanged_under_no_grad_and_never_requires_grad(name, kwargs):
    """Plain tensor ops: same bits inside torch.no_grad(), and no output requires grad."""
    logits, targets = random_logits(7, 3)
    result = call(F, name, kwargs, logits, targets)
    with torch.no_grad():
        result_no_grad = call(F, name, kwargs, logits, targets)
    assert not result.requires_grad and not result_no_grad.requires_grad
    assert torch.equal(result, result_no_grad)


# 7. The checks can fail ----------------------------------------------------------------

@pytest.mark.twin
def test_a_gradient_one_percent_off_is_rejected():
    """cross_entropy_grad * 1.01 fails assert_agrees against autograd and central differences."""
    logits, targets = random_logits(7, 3)
    wrong = 1.01 * F.cross_entropy_grad(logits, targets)
    with pytest.raises(AssertionError, match="relative difference above"):
        assert_agrees("wrong vs autograd", wrong, T.cross_entropy_grad(logits, targets),
                      FLOAT64_MAX_REL_DIFF)
    numeric = numerical_gradient(lambda z: F.cross_entropy(z, targets), logits)
    with pytest.raises(AssertionError, match="relative difference above"):
        assert_agrees("wrong vs central differences", wrong, numeric,
                      FINITE_DIFFERENCE_MAX_REL_DIFF)
    with pytest.raises(AssertionError):  # and float32 at assert_close's defaults
        assert_matches_torch("wrong float32", wrong.float(),
                             T.cross_entropy_grad(logits.float(), targets))


@pytest.mark.twin
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_a_gradient_that_forgets_label_smoothing_fails_the_autograd_test(monkeypatch, dtype):
    """With target_distribution patched to ignore eps, the autograd comparison above fails."""
    target_distribution = F.target_distribution

    def one_hot(logits, targets, label_smoothing):
        return target_distribution(logits, targets, 0.0)

    monkeypatch.setattr(F, "target_distribution", one_hot)
    with pytest.raises(AssertionError):
        check_cross_entropy_grad_against_autograd(7, 3, dtype, "mean", 0.1)


@pytest.mark.twin
def test_a_softmax_without_the_max_shift_fails_the_stability_test(monkeypatch):
    """exp(z) / sum exp(z) is right on paper but overflows at 1e4: the stability test catches it."""
    monkeypatch.setattr(F, "softmax", lambda z: z.exp() / z.exp().sum(-1, keepdim=True))
    with pytest.raises(AssertionError, match="overflowed"):
        test_extreme_logits_give_finite_results_equal_to_torch("softmax", {})


@pytest.mark.twin
def test_a_log_softmax_taken_as_the_log_of_softmax_is_the_log_of_0(monkeypatch):
    """log(softmax(z)) is right on paper, but a probability that rounds to 0 has the log -inf:
    the stability test calls that an underflow, the log of 0, not an overflow."""
    monkeypatch.setattr(F, "log_softmax", lambda z: F.softmax(z).log())
    with pytest.raises(AssertionError, match="log_softmax took the log of 0: a probability "
                                             "underflowed to 0") as error:
        test_extreme_logits_give_finite_results_equal_to_torch("log_softmax", {})
    assert "overflow" not in str(error.value)


@pytest.mark.twin
def test_a_gradient_that_keeps_reduction_none_fails_the_refusal_check(monkeypatch):
    """cross_entropy_grad answering reduction='none' instead of refusing it fails the check."""
    right = F.cross_entropy_grad
    monkeypatch.setattr(F, "cross_entropy_grad", lambda logits, targets, reduction="mean",
                        label_smoothing=0.0: right(logits, targets, "sum", label_smoothing))
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        test_cross_entropy_grad_refuses_reduction_none()


class OnePercentOffCrossEntropy(ManualCrossEntropy):
    """ManualCrossEntropy with a backward 1.01 times too large."""

    @staticmethod
    def backward(ctx, grad_loss):
        return 1.01 * ManualCrossEntropy.backward(ctx, grad_loss)[0], None, None, None


@pytest.mark.twin
def test_torch_gradcheck_rejects_a_wrong_backward():
    """torch.autograd.gradcheck raises on a backward 1% off, so its pass above means something."""
    logits, targets = random_logits(7, 3)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(OnePercentOffCrossEntropy.apply,
                                 (logits.requires_grad_(), targets, "mean", 0.0))
