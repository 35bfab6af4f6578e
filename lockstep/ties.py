"""Max pooling's ties: the windows whose largest value occurs more than once.

There the gradient has no single slope to follow, and torch sends it to the first maximum in
row-major order (manual/layers.py, MaxPool2d.backward). On MNIST most windows of the first
pooling layer are ties: ReLU's zeros over the blank background. The tutor uses these masks to
say when the entries that differ are the ties; the convolutions notebook counts them.
"""

import torch
import torch.nn.functional as F


@torch.no_grad()
def tied_windows(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """x: (N, C, H, W), the input of MaxPool2d(kernel_size, stride) -> (N, C, H_out, W_out),
    True where the window's largest value occurs more than once."""
    return (maxima(x, kernel_size, stride).sum(dim=(-2, -1)) > 1)


@torch.no_grad()
def tied_maxima(x: torch.Tensor, kernel_size: int, stride: int | None = None) -> torch.Tensor:
    """x: (N, C, H, W) -> a mask of x's shape: True at each entry that is one of the equal
    largest values of a window that holds a tie (the first of them included)."""
    k, s = kernel_size, stride or kernel_size
    is_max = maxima(x, k, s)  # (N, C, H_out, W_out, k, k)
    tied = is_max & (is_max.sum(dim=(-2, -1), keepdim=True) > 1)
    n, c, rows, columns = tied.shape[:4]
    blocks = tied.permute(0, 1, 4, 5, 2, 3).reshape(n, c * k * k, rows * columns)
    return F.fold(blocks.to(x.dtype if x.is_floating_point() else torch.float32), x.shape[-2:],
                  k, stride=s) > 0


def maxima(x: torch.Tensor, kernel_size: int, stride: int | None) -> torch.Tensor:
    """(N, C, H_out, W_out, k, k): True where an entry of a window equals the window's max."""
    k, s = kernel_size, stride or kernel_size
    windows = x.unfold(2, k, s).unfold(3, k, s)
    return windows == windows.amax(dim=(-2, -1), keepdim=True)
