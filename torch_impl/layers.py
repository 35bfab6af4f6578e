"""The layers from torch.nn: nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.BatchNorm2d, nn.Conv2d,
nn.MaxPool2d, nn.Flatten and nn.AdaptiveAvgPool2d themselves.

Twin of manual/layers.py, which writes out each forward and its backward:
    Linear:      y = x W^T + b;  W.grad = g^T x, b.grad = sum_n g_n, dLoss/dx = g W
    ReLU:        y = max(x, 0);  dLoss/dx = g where x > 0, else 0
    BatchNorm1d: y = gamma (x - mean) / sqrt(var + eps) + beta, per feature
    Conv2d:      y = b + W ⋆ x (a cross-correlation);  W.grad = x ⋆ g, dLoss/dx = g
                 through the transposed convolution (W rotated by 180 degrees)
    MaxPool2d:   y = the largest entry of each window;  dLoss/dx = g at the window's first
                 maximum in row-major order, 0 elsewhere
    BatchNorm2d: BatchNorm1d per channel over (N, H, W), its N H W values a channel
    Flatten:     (N, C, H, W) -> (N, C H W);  dLoss/dx = g reshaped back
    AdaptiveAvgPool2d((1, 1)): y = the mean of each plane;  dLoss/dx = g / (H W) everywhere
autograd records each forward and runs the matching backward in loss.backward().
"""

from torch.nn import (
    AdaptiveAvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)

__all__ = ["AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "Flatten", "Linear",
           "MaxPool2d", "ReLU"]
