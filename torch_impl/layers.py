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
    SyncBatchNorm: BatchNorm with each per-channel sum added up across the ranks
autograd records each forward and runs the matching backward in loss.backward().
"""

import torch
from torch import nn
from torch.distributed import all_reduce, group
from torch.distributed._functional_collectives import all_reduce as all_reduce_differentiable
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
           "MaxPool2d", "ReLU", "SyncBatchNorm"]


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over all ranks' examples. convert_sync_batchnorm gives nn.SyncBatchNorm
    itself on CUDA. On the CPU its kernels (and DDP) refuse it, so there the layers become
    this class: the same statistics from the functional all_reduce
    (torch.distributed._functional_collectives, which torch.distributed.nn.functional's
    deprecation names), an all-reduce that autograd differentiates (its backward all-reduces
    the gradient), so
    autograd derives the backward that manual/layers.py writes by hand. x: (N, C, ...), the
    sums over all dimensions but 1:
        mean = sum_all x / n,  var = sum_all (x - mean)^2 / n,  n: a channel's values on all
        ranks;  y = (x - mean) / sqrt(var + eps) gamma + beta
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        """Any (N, C, ...), as nn.SyncBatchNorm takes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:  # the running statistics: no rank needs another's
            return nn.functional.batch_norm(x, self.running_mean, self.running_var,
                                            self.weight, self.bias, False, 0.0, self.eps)
        dims, shape = [0, *range(2, x.dim())], [1, -1] + [1] * (x.dim() - 2)
        count = torch.tensor(x.numel() // x.shape[1])
        all_reduce(count)
        n = int(count)
        mean = all_reduce_differentiable(x.sum(dims), "sum", group.WORLD) / n
        centered = x - mean.view(shape)
        var = all_reduce_differentiable(centered.square().sum(dims), "sum", group.WORLD) / n
        with torch.no_grad():  # as nn's: the unbiased variance in the running estimate
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (n / (n - 1)), self.momentum)
            self.num_batches_tracked += 1
        # bias's view first: backward then reaches the weight's AccumulateGrad before the
        # bias's, in nn.SyncBatchNorm's order (its node's inputs: input, weight, bias), which
        # DDP's rebuilt buckets follow
        bias = self.bias.view(shape)
        weight = self.weight.view(shape)
        return centered * (var + self.eps).rsqrt().view(shape) * weight + bias

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """nn.SyncBatchNorm.convert_sync_batchnorm: each BatchNorm an nn.SyncBatchNorm that
        holds its parameters and buffers; on the CPU, one of this class."""
        converted = nn.SyncBatchNorm.convert_sync_batchnorm(module, process_group)
        for layer in converted.modules():
            if type(layer) is nn.SyncBatchNorm and not layer.weight.is_cuda:
                layer.__class__ = cls
        return converted
