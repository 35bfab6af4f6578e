"""How two tensors agree, in three levels, and a finite-difference gradient.

Levels (as in karpathy's "backprop ninja" cmp()): bit-identical; close within
torch.testing.assert_close's default tolerances; and the largest difference,
absolute and relative. Relative is per tensor, max|a - b| / max|b|, so entries
near zero cannot blow it up. Used by the tests, compare.py and the notebook.
"""

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch

ABS, REL, IDENTICAL, CLOSE = range(4)  # the columns of levels()
# torch.testing.assert_close's defaults (rtol, atol) per dtype
DEFAULT_TOLERANCES = {torch.float16: (1e-3, 1e-5), torch.bfloat16: (1.6e-2, 1e-5),
                      torch.float32: (1.3e-6, 1e-5), torch.float64: (1e-7, 1e-7)}


@dataclass
class Agreement:
    """How `actual` agrees with `expected`, the reference."""

    name: str
    max_abs_diff: float
    max_rel_diff: float
    identical: bool
    close: bool

    @property
    def level(self) -> str:
        return "bit-identical" if self.identical else "close" if self.close else "DIFFERENT"

    def __str__(self) -> str:
        return (f"{self.name}: {self.level}, max abs diff {self.max_abs_diff:.2e}, "
                f"max rel diff {self.max_rel_diff:.2e}")


class ShapeMismatch(ValueError):
    """Two tensors to compare differ in shape: a (64,) gradient held against a (1, 64) one
    would broadcast to (1, 64) and could pass, so it is refused instead."""


def difference_stats(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """[max|a - b|, max|b|, max(|a - b| - rtol |b|)]: three numbers, from which levels() derives
    the agreement of `actual` (a) with `expected` (b), of the same shape and dtype.

    Stays on the tensors' device (no host sync) and costs a handful of tensor operations,
    so compare.py runs it on every training step and calls levels() once per epoch.
    rtol is torch.testing.assert_close's default for the dtype. Raises ShapeMismatch
    when the shapes differ (a missing tensor, None, is reported the same way).
    """
    return named_stats([("", actual)], [("", expected)])[0]


def shape_of(tensor: torch.Tensor | None) -> str:
    """"(64,)", "(1, 64)", or "None" when there is no tensor (a .grad never set)."""
    return "None" if tensor is None else str(tuple(tensor.shape))


@torch.no_grad()  # a check is never differentiated: record nothing, keep no tensor alive
def named_stats(actual: list[tuple[str, torch.Tensor]],
                expected: list[tuple[str, torch.Tensor]]) -> torch.Tensor:
    """difference_stats of each named pair, stacked: (T, 3) for T tensors, in order.

    Tensor by tensor, each difference worked on in place while it is still in the cache: a
    _foreach_ call per operation (as torch.optim's fast path uses) would first build every
    difference, tens of MB for a ResNet's hidden outputs, and took 2.2 times as long.
    The names come from `actual`; a ShapeMismatch names the tensor.
    """
    if len(actual) != len(expected):
        listed = [", ".join(name for name, _ in named) or "none" for named in (actual, expected)]
        raise ShapeMismatch(f"{len(actual)} tensors ({listed[0]}) where the other has "
                            f"{len(expected)} ({listed[1]})")
    for (name, a), (_, b) in zip(actual, expected, strict=True):
        if a is None or b is None or a.shape != b.shape:
            raise ShapeMismatch(f"{name + ': ' if name else ''}shape {shape_of(a)} "
                                f"against {shape_of(b)}")
    if not actual:
        return torch.empty(0, 3)
    rtol, _ = DEFAULT_TOLERANCES[expected[0][1].dtype]
    return torch.stack([pair_stats(a, b, rtol)
                        for (_, a), (_, b) in zip(actual, expected, strict=True)])


def pair_stats(a: torch.Tensor, b: torch.Tensor, rtol: float) -> torch.Tensor:
    """[max|a - b|, max|b|, max(|a - b| - rtol |b|)] (3,), on the tensors' device."""
    diff, size = (a - b).abs_(), b.abs()
    max_diff, max_size = diff.max(), size.max()  # before diff is overwritten
    return torch.stack([max_diff, max_size, diff.sub_(size, alpha=rtol).max()])


def exceeds(stats: torch.Tensor, limit: float) -> bool:
    """Whether any row of difference_stats (T, 3) has max|a - b| > limit max|b|, or a NaN
    (a NaN or infinite tensor on either side gives one). Three tensor operations and one
    host sync: compare.py calls it on every step."""
    return not stats.mv(limit_weights(limit, stats.dtype, stats.device)).amax().item() <= 0


@functools.cache
def limit_weights(limit: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[1, -limit, 0]: difference_stats times these is max|a - b| - limit max|b|."""
    return torch.tensor([1.0, -limit, 0.0], dtype=dtype, device=device)


@torch.no_grad()
def relu_gate_flips(actual: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """Two ReLU outputs (N, H) of the same step: [entries open on one side only, the largest
    such entry relative to the largest output of `expected`]. Stays on the device.

    A gate [z > 0] that disagrees lets the gradient through on one side only. If its input was
    within rounding of 0 (a relative distance of ~1e-7 in float32), rounding flipped it.
    """
    differ = (actual > 0) != (expected > 0)
    distance = torch.where(differ, actual + expected, 0).amax()  # one of the two is 0 there
    return torch.stack([differ.sum().to(distance.dtype), distance / expected.amax()])


def levels(stats: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """difference_stats (..., 3) -> (..., 4) float64: max abs diff, max rel diff, identical, close.

        relative  = max|a - b| / max|b|        (0 when a and b are both all zero)
        identical = max|a - b| == 0
        close     = |a - b| <= atol + rtol |b| everywhere, i.e. max(|a - b| - rtol |b|) <= atol
    A NaN anywhere makes relative NaN and identical and close false.
    """
    _, atol = DEFAULT_TOLERANCES[dtype]
    max_diff, max_size, margin = stats.double().unbind(-1)
    relative = torch.where(max_diff == 0, 0.0, max_diff / max_size)
    return torch.stack([max_diff, relative, max_diff == 0, margin <= atol], dim=-1).double()


def agreement(name: str, actual: torch.Tensor, expected: torch.Tensor) -> Agreement:
    """The three levels of agreement of `actual` with `expected` (same shape and dtype)."""
    max_abs, max_rel, identical, close = levels(difference_stats(actual, expected),
                                                expected.dtype).tolist()
    return Agreement(name, max_abs, max_rel, bool(identical), bool(close))


def assert_agrees(name: str, actual: torch.Tensor, expected: torch.Tensor,
                  max_rel_diff: float) -> Agreement:
    """Print the agreement; raise AssertionError, explaining why, if the relative difference
    exceeds max_rel_diff (NaN never passes)."""
    result = agreement(name, actual, expected)
    print(result)
    if not result.max_rel_diff <= max_rel_diff:
        raise AssertionError(f"{result}: relative difference above the allowed {max_rel_diff:.0e}")
    return result


def numerical_gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       eps: float = 1e-6) -> torch.Tensor:
    """Central differences: df/dx_i ~ (f(x + eps e_i) - f(x - eps e_i)) / (2 eps).

    f: tensor of x's shape -> scalar tensor. Error O(eps^2); use float64.
    x is not modified. One pair of calls of f per entry of x.
    """
    grad = torch.empty_like(x)
    for i in range(x.numel()):
        step = torch.zeros_like(x).view(-1)
        step[i] = eps
        step = step.view_as(x)
        grad.view(-1)[i] = (f(x + step) - f(x - step)) / (2 * eps)
    return grad
