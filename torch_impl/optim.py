"""Stochastic gradient descent: torch.optim.SGD itself.

Twin of manual/optim.py, which spells out the update rule:
    g <- -g if maximize;  g <- g + weight_decay * p
    buf <- g (first step) or momentum * buf + (1 - dampening) * g
    g <- g + momentum * buf if nesterov, else buf;  p <- p - lr * g
"""

from torch.optim import SGD

__all__ = ["SGD"]
