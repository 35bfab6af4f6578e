"""The gradients of one training step, by hand. Twin of torch_impl/train.py."""

import torch

from manual import functional as F
from manual.model import MLP, SoftmaxRegression


def forward_backward(model: SoftmaxRegression | MLP, x: torch.Tensor, y: torch.Tensor,
                     label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill every parameter's .grad with dLoss/dparameter; return the loss and the logits.

    x: (N, D), y: (N,) -> (scalar mean cross-entropy of the batch, logits (N, C)), with
    dLoss/dlogits (N, C) kept in logits.grad, where torch's retain_grad() keeps it.
    """
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    logits.grad = F.cross_entropy_grad(logits, y, label_smoothing=label_smoothing)
    model.backward(logits.grad, needs_input_grad=False)  # x is data: no use for dLoss/dx
    return loss, logits
