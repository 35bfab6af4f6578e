"""Optimizers: torch.optim.SGD, Adam and AdamW themselves.

Twin of manual/optim.py, which spells out their update rules. SGD:
    g <- -g if maximize;  g <- g + weight_decay * p
    buf <- g (first step) or momentum * buf + (1 - dampening) * g
    g <- g + momentum * buf if nesterov, else buf;  p <- p - lr * g
Adam, at step t (AdamW: p <- p - lr * weight_decay * p instead of the L2 term):
    g <- g + weight_decay * p;  m <- beta1 m + (1 - beta1) g;  v <- beta2 v + (1 - beta2) g^2
    p <- p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
"""

from torch.optim import SGD, Adam, AdamW, Optimizer

__all__ = ["SGD", "Adam", "AdamW", "Optimizer"]
