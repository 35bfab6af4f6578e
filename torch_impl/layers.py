"""The layers from torch.nn: nn.Linear, nn.ReLU and nn.BatchNorm1d themselves.

Twin of manual/layers.py, which writes out each forward and its backward:
    Linear:      y = x W^T + b;  W.grad = g^T x, b.grad = sum_n g_n, dLoss/dx = g W
    ReLU:        y = max(x, 0);  dLoss/dx = g where x > 0, else 0
    BatchNorm1d: y = gamma (x - mean) / sqrt(var + eps) + beta, per feature
autograd records each forward and runs the matching backward in loss.backward().
"""

from torch.nn import BatchNorm1d, Linear, ReLU

__all__ = ["BatchNorm1d", "Linear", "ReLU"]
