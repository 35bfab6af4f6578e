"""The models the idiomatic way: softmax regression first, then a multi-layer perceptron.

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
    # (g^T x) and linear.bias.grad (sum_n g_n); see manual/layers.py, Linear.
    # parameters(): inherited from nn.Module, [linear.weight, linear.bias].
    # train() / eval(): inherited from nn.Module; nothing here acts differently.


class MLP(nn.Module):
    """x (N, D) -> Linear -> [BatchNorm1d] -> ReLU -> Linear -> logits (N, C), an nn.Sequential.

    One hidden layer of `hidden` units: h = relu(bn(x W1^T + b1)), logits = h W2^T + b2,
    with W1: (hidden, D), W2: (C, hidden). With batchnorm=True, BatchNorm1d normalizes
    x W1^T and brings its own shift, beta, so the first Linear has no bias b1: BatchNorm
    would subtract it again (its gradient would be exactly 0, rounding aside).
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, batchnorm: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        kinds = dict(device=device, dtype=dtype)
        norm = [nn.BatchNorm1d(hidden, **kinds)] if batchnorm else []
        self.layers = nn.Sequential(nn.Linear(in_features, hidden, bias=not batchnorm, **kinds),
                                    *norm, nn.ReLU(), nn.Linear(hidden, num_classes, **kinds))
        self.hidden_outputs: list[torch.Tensor] = []  # each hidden layer's output, (N, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) -> logits (N, C), layer after layer. Keeps the hidden outputs.

        Autograd frees the gradient of an intermediate tensor once it has passed it
        on; retain_grad() asks it to keep dLoss/dh in h.grad, to compare with manual's.
        """
        self.hidden_outputs = []
        for layer in self.layers[:-1]:
            x = layer(x)
            if x.requires_grad:  # not under torch.no_grad()
                x.retain_grad()
            self.hidden_outputs.append(x)
        return self.layers[-1](x)

    # backward: written by autograd, through each layer in reverse (manual/model.py, MLP).
    # named_parameters(), named_buffers(), train(), eval(): inherited from nn.Module.
