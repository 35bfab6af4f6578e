"""Softmax regression the idiomatic way: one nn.Linear layer.

Twin of manual/model.py. The softmax itself lives in the loss
(nn.CrossEntropyLoss / F.cross_entropy), which takes raw logits.
"""

import torch
from torch import nn


class SoftmaxRegression(nn.Module):
    """logits = x W^T + b, with W: (C, D) = linear.weight and b: (C,) = linear.bias.

    nn.Linear initializes every entry from U(-1/sqrt(D), 1/sqrt(D)), weight
    first, then bias.
    """

    def __init__(self, in_features: int, num_classes: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) -> logits (N, C). Autograd records the operation for backward."""
        return self.linear(x)

    # backward: written by autograd. loss.backward() fills linear.weight.grad
    # (g^T x) and linear.bias.grad (sum_n g_n); see manual/model.py.
    # parameters(): inherited from nn.Module, [linear.weight, linear.bias].
