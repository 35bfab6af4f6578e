"""The gradients of one training step, by autograd. Twin of manual/train.py."""

import torch

from torch_impl import functional as F
from torch_impl.model import MLP, SoftmaxRegression


def forward_backward(model: SoftmaxRegression | MLP, x: torch.Tensor, y: torch.Tensor,
                     label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill every parameter's .grad with dLoss/dparameter; return the loss and the logits.

    x: (N, D), y: (N,) -> (scalar mean cross-entropy of the batch, logits (N, C)), with
    dLoss/dlogits (N, C) kept in logits.grad: autograd frees an intermediate gradient once
    it has passed it on, unless retain_grad() asks it to keep it.
    F.cross_entropy is what nn.CrossEntropyLoss() calls when applied.
    """
    logits = model(x)
    logits.retain_grad()
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    loss.backward()
    return loss.detach(), logits


def forward_backward_engine(model: SoftmaxRegression | MLP, x: torch.Tensor, y: torch.Tensor,
                            label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """forward_backward itself: torch always records its graph and runs its engine
    (torch_impl/autograd.py), which manual/train.py's twin does by hand."""
    return forward_backward(model, x, y, label_smoothing)
