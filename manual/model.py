"""Softmax regression by hand: a linear layer whose backward pass is written out.

Twin of torch_impl/model.py. The softmax itself lives in the loss
(manual.functional.cross_entropy), exactly as with nn.Linear + nn.CrossEntropyLoss.
"""

import math

import torch


class SoftmaxRegression:
    """logits = x W^T + b, with W: (C, D) = weight and b: (C,) = bias.

    Initialized like nn.Linear: every entry drawn from U(-1/sqrt(D), 1/sqrt(D)),
    weight first, then bias, from torch's global random stream, so after the
    same torch.manual_seed both hold the same numbers.
    """

    def __init__(self, in_features: int, num_classes: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        bound = 1 / math.sqrt(in_features)
        # nn.Linear draws the weight with kaiming_uniform_(a=sqrt(5)), whose bound
        # gain * sqrt(3 / D) is 1/sqrt(D) mathematically but, rounded step by step,
        # can be one ulp away in float64 (D = 1, 3, 13, ...). Same steps, same bits:
        gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))  # init.calculate_gain("leaky_relu", a)
        weight_bound = math.sqrt(3.0) * (gain / math.sqrt(in_features))
        self.weight = torch.empty(num_classes, in_features, device=device, dtype=dtype)
        self.bias = torch.empty(num_classes, device=device, dtype=dtype)
        self.weight.uniform_(-weight_bound, weight_bound)
        self.bias.uniform_(-bound, bound)
        self.input = None  # saved by forward for backward, as autograd saves it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) -> logits (N, C); logits = x W^T + b."""
        self.input = x
        return torch.addmm(self.bias, x, self.weight.T)  # b + x @ W^T in one call, as nn.Linear

    __call__ = forward

    def backward(self, grad_logits: torch.Tensor,
                 needs_input_grad: bool = True) -> torch.Tensor | None:
        """Chain rule through logits = x W^T + b, given g = dLoss/dlogits: (N, C).

        Sets (not accumulates) the same .grad attributes autograd fills:
            weight.grad = dLoss/dW = g^T x     (C, D)   logit c of example n uses W_c . x_n
            bias.grad   = dLoss/db = sum_n g_n (C,)     b is added to every example's logits
        and returns dLoss/dx = g W            (N, D)   for a layer that would come before,
        or None when needs_input_grad is False: autograd, too, skips the gradient
        of an input that does not require one, such as the images.
        """
        self.weight.grad = grad_logits.T @ self.input
        self.bias.grad = grad_logits.sum(dim=0)
        return grad_logits @ self.weight if needs_input_grad else None

    def parameters(self) -> list[torch.Tensor]:
        """[weight, bias], the order nn.Linear.parameters() uses."""
        return [self.weight, self.bias]
