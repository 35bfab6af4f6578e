"""Softmax, log-softmax and cross-entropy from torch, and their gradient from autograd.

Twin of manual/functional.py. Shapes: logits (N, C) raw class scores,
targets (N,) class indices in 0..C-1.
"""

import torch
import torch.nn.functional as F


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """softmax(z)_c = exp(z_c) / sum_k exp(z_k).  logits: (..., C) -> (..., C)."""
    return F.softmax(logits, dim=-1)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log softmax(z)_c = z_c - log sum_k exp(z_k).  logits: (..., C) -> (..., C)."""
    return F.log_softmax(logits, dim=-1)


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """loss_n = -sum_c q_nc log softmax(z_n)_c, then the mean (or sum) over n.

    logits: (N, C), targets: (N,) -> scalar, or (N,) for reduction="none".
    """
    return F.cross_entropy(logits, targets, reduction=reduction, label_smoothing=label_smoothing)


def cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """dLoss/dlogits, as loss.backward() computes it.  logits: (N, C) -> (N, C).

    Autograd recorded how the loss was made from logits and runs that record
    backwards; the result is (softmax(z) - q) / N, derived in manual/functional.py.
    """
    logits = logits.detach().requires_grad_()
    cross_entropy(logits, targets, reduction, label_smoothing).backward()
    return logits.grad
