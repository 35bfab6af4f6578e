"""Layers by hand: each forward with its backward written out beside it.

Twin of torch_impl/layers.py (nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Conv2d, nn.MaxPool2d,
nn.Flatten). Every layer has forward(x), also called as layer(x), which saves what backward
needs, as autograd saves it; backward(grad_output) -> grad_input, the chain rule through the
layer, which sets (not accumulates) the .grad of the layer's parameters, and modifies neither
grad_output nor what forward saved; and named_parameters() / parameters() in nn's order.
Shapes: x (N, in), N examples; images x (N, C, H, W): C channels of H rows and W columns.
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F


class Linear:
    """y = x W^T + b, with W: (out_features, in_features) = weight and b: (out_features,) = bias.

    Initialized like nn.Linear: every entry drawn from U(-1/sqrt(in), 1/sqrt(in)),
    weight first, then bias, from torch's global random stream, so after the
    same torch.manual_seed both hold the same numbers. bias=False: y = x W^T, no b.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        self.weight, self.bias = initialized((out_features, in_features), bias, device, dtype)
        self.input = None  # saved by forward for backward, as autograd saves it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, in) -> y (N, out); y = x W^T + b."""
        self.input = x
        if self.bias is None:
            return x @ self.weight.T
        return torch.addmm(self.bias, x, self.weight.T)  # b + x @ W^T in one call, as nn.Linear

    __call__ = forward

    def backward(self, grad_output: torch.Tensor,
                 needs_input_grad: bool = True) -> torch.Tensor | None:
        """Chain rule through y = x W^T + b, given g = dLoss/dy: (N, out).

        Sets (not accumulates) the same .grad attributes autograd fills:
            weight.grad = dLoss/dW = g^T x     (out, in)  output j of example n uses W_j . x_n
            bias.grad   = dLoss/db = sum_n g_n (out,)     b is added to every example's output
        and returns dLoss/dx = g W            (N, in)    for the layer that comes before,
        or None when needs_input_grad is False: autograd, too, skips the gradient
        of an input that does not require one, such as the images.
        """
        self.weight.grad = grad_output.T @ self.input
        if self.bias is not None:
            self.bias.grad = grad_output.sum(dim=0)
        return grad_output @ self.weight if needs_input_grad else None

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """[("weight", W), ("bias", b)], nn.Linear's names and order; no bias if bias=False."""
        return [("weight", self.weight)] + ([] if self.bias is None else [("bias", self.bias)])

    def parameters(self) -> list[torch.Tensor]:
        return [param for _, param in self.named_parameters()]


def initialized(shape: tuple[int, ...], bias: bool, device, dtype
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight of `shape`, bias of shape[0] or None), as nn.Linear and nn.Conv2d draw them.

    fan_in = the inputs of one output entry: in_features, or in_channels * k * k. Every
    entry from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), weight first, then bias.
    """
    fan_in = math.prod(shape[1:])
    # nn draws the weight with kaiming_uniform_(a=sqrt(5)), whose bound gain * sqrt(3 / D)
    # is 1/sqrt(D) mathematically but, rounded step by step, can be one ulp away in
    # float64 (D = 1, 3, 13, ...). Same steps, same bits:
    gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))  # init.calculate_gain("leaky_relu", a)
    weight_bound = math.sqrt(3.0) * (gain / math.sqrt(fan_in))
    weight = torch.empty(shape, device=device, dtype=dtype).uniform_(-weight_bound, weight_bound)
    if not bias:
        return weight, None
    bound = 1 / math.sqrt(fan_in)
    return weight, torch.empty(shape[0], device=device, dtype=dtype).uniform_(-bound, bound)


class ReLU:
    """y = max(x, 0), entry by entry: x (N, H) -> y (N, H), or any shape. No parameters."""

    def __init__(self):
        self.output = None  # saved by forward: y > 0 exactly where x > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.output = x.clamp_min(0)
        return self.output

    __call__ = forward

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """dLoss/dx = g where x > 0, else 0: (N, H). The slope is 1 or 0.

        At x = 0 exactly, where the slope is undefined, torch takes 0; so does this. The
        slope is the sign of the saved output y = max(x, 0): 1 where y > 0, 0 where y = 0.
        """
        slope = self.output.sign()  # the gate [y > 0] as 1.0 or 0.0: a new tensor
        return slope.mul_(grad_output)  # times g, in place: one new tensor, not two

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return []

    def parameters(self) -> list[torch.Tensor]:
        return []


class BatchNorm1d:
    """y = gamma * x_hat + beta, x_hat = (x - mean) / sqrt(var + eps), per feature (channel).

    x: (N, C) -> y (N, C), or (N, C, L) -> y (N, C, L) as nn.BatchNorm1d takes it: channel c's
    statistics are over its N (N L) values. gamma = weight (C,), initialized to ones,
    beta = bias (C,), zeros.
    Training mode (train()): mean and var are the batch's, over the N examples, and var
    is the biased one, sum_n (x_n - mean)^2 / N. Each call also updates the estimates
    used in eval mode, with the unbiased variance (divided by N - 1), as torch does:
        running_mean <- (1 - momentum) running_mean + momentum mean
        running_var  <- (1 - momentum) running_var  + momentum var N / (N - 1)
    Eval mode (eval()): mean and var are running_mean and running_var; nothing updates.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        self.eps, self.momentum = eps, momentum
        self.weight = torch.ones(num_features, device=device, dtype=dtype)
        self.bias = torch.zeros(num_features, device=device, dtype=dtype)
        self.running_mean = torch.zeros(num_features, device=device, dtype=dtype)
        self.running_var = torch.ones(num_features, device=device, dtype=dtype)
        self.num_batches_tracked = torch.tensor(0, device=device)
        self.training = True
        self.mean = self.x_hat = self.inv_std = None  # saved by forward for backward
        self.batch_statistics = True  # did the last forward normalize with the batch's own?

    def train(self, mode: bool = True) -> "BatchNorm1d":
        self.training = mode
        return self

    def eval(self) -> "BatchNorm1d":
        return self.train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C) or (N, C, L) -> y, x's shape, with the batch's statistics or, in eval
        mode, the running ones. Each per-channel vector v (C,) meets x as v[c] at x[:, c]:
        per_channel(v, x).

        The arithmetic is torch's CPU kernel's, step for step, so that on images (N, C, L)
        the output is bit-identical to nn's: the sums in float64, then
            y = x alpha + (beta - mean alpha),   alpha = gamma / s,
        each a fused multiply-add (addcmul). gamma x_hat + beta is the same number, rounded
        otherwise; a ReLU after a BatchNorm would then see an input within rounding of 0 on
        one side only, now and then, and let its gradient through there alone.
        """
        self.batch_statistics = self.training
        if self.training:
            n = self.count(x)  # values per channel: N, or N L
            if n < 2:
                raise ValueError("Expected more than 1 value per channel when training, "
                                 f"got input size {list(x.shape)}")
            mean = (self.total(channel_sums(x)) / n).to(x.dtype)
            centered = x - per_channel(mean, x)
            var = self.total(channel_sums(centered.square())).to(x.dtype) / n  # biased: / n
            inv_std = (1 / (var.double() + self.eps).sqrt()).to(x.dtype)
            # running <- (1 - momentum) running + momentum new, in one call: lerp_
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (n / (n - 1)), self.momentum)  # unbiased
            self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
            centered = x - per_channel(mean, x)
            inv_std = 1 / (var + self.eps).sqrt()
        self.mean, self.inv_std = mean, inv_std
        self.x_hat = centered.mul_(per_channel(inv_std, x))  # in place: centered is done
        alpha = self.weight * inv_std
        beta = torch.addcmul(self.bias, -mean, alpha)  # beta - mean alpha
        return torch.addcmul(per_channel(beta, x), x, per_channel(alpha, x))

    __call__ = forward

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """Chain rule through BatchNorm, given g = dLoss/dy: (N, C) or (N, C, L), channel by
        channel, each sum and mean over the channel's n values (n = N, or N L):

        weight.grad = sum_n g_n x_hat_n     (C,)
        bias.grad   = sum_n g_n             (C,)
        returns dLoss/dx, g's shape:
            training: gamma / s * (g - mean_m g_m - x_hat mean_m g_m x_hat_m)
            eval:     gamma / s * g         (mean and s = sqrt(var + eps) are constants)
        Derivation, for one channel (drop its index), with s = sqrt(var + eps) and
        d = dLoss/dx_hat = gamma g. x_n moves the output through three paths: its own
        x_hat_n directly, and every x_hat_m through the batch mean and the batch var:
            dx_hat_m/dx_n = ([m == n] - 1/n) / s - x_hat_m (x_n - mean) / (n s^2)
        (from dmean/dx_n = 1/n and dvar/dx_n = 2 (x_n - mean) / n). Summed over m:
            dLoss/dx_n = sum_m d_m dx_hat_m/dx_n
                       = (d_n - mean_m d_m - x_hat_n mean_m d_m x_hat_m) / s
        which is the line above (d = gamma g). The mean term removes what shifts every value
        alike; the x_hat term, what scales them alike: the batch's own statistics
        absorb both, so they cannot change the output.
        """
        over, g = batch_dims(grad_output), grad_output
        self.weight.grad = (g * self.x_hat).sum(dim=over)
        self.bias.grad = g.sum(dim=over)
        scale = self.weight * self.inv_std  # gamma / s, (C,)
        if not self.batch_statistics:
            return g * per_channel(scale, g)
        n = self.count(g)
        # gamma / s (g - mean g - x_hat mean(g x_hat)) = scale g + shift + slope x_hat, per
        # channel: two fused multiply-adds, one new tensor
        shift = -scale * self.total(self.bias.grad) / n
        slope = -scale * self.total(self.weight.grad) / n
        return torch.addcmul(per_channel(shift, g), g, per_channel(scale, g)).addcmul_(
            self.x_hat, per_channel(slope, g))

    def count(self, x: torch.Tensor) -> int:
        """The number of values each channel's statistics are over: N, or N L."""
        return x.numel() // x.shape[1]

    def total(self, sums: torch.Tensor) -> torch.Tensor:
        """Per-channel sums (C,) over the batch, as they are: SyncBatchNorm's add every
        rank's."""
        return sums

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """[("weight", gamma), ("bias", beta)], nn.BatchNorm1d's names and order."""
        return [("weight", self.weight), ("bias", self.bias)]

    def parameters(self) -> list[torch.Tensor]:
        return [param for _, param in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        """The state that is not learned by gradient, nn.BatchNorm1d's names and order."""
        return [("running_mean", self.running_mean), ("running_var", self.running_var),
                ("num_batches_tracked", self.num_batches_tracked)]


def batch_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The dimensions of x that hold one channel's values: every one but dim 1, the channels.
    (N, C) -> (0,); (N, C, L) -> (0, 2)."""
    return (0, *range(2, x.dim()))


def channel_sums(x: torch.Tensor) -> torch.Tensor:
    """Each channel's sum, (C,), in float64 as torch's CPU kernel sums: of x (N, C), over N;
    of x (N, C, L), along each row of L first (a float64 result, not a float64 copy of x)."""
    rows = x.sum(dim=2, dtype=torch.float64) if x.dim() == 3 else x.double()
    return rows.sum(dim=0)


def per_channel(vector: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """vector (C,) viewed to broadcast along x's channels (dim 1): (C,) for x (N, C),
    (C, 1) for x (N, C, L)."""
    return vector.view(-1, *[1] * (x.dim() - 2))


class BatchNorm2d(BatchNorm1d):
    """BatchNorm per channel of images: x (N, C, H, W) -> y (N, C, H, W), each channel's
    statistics over its N H W values, as nn.BatchNorm2d:
        y[n, c, h, w] = gamma[c] (x[n, c, h, w] - mean[c]) / sqrt(var[c] + eps) + beta[c]
    A channel's pixels are its examples: the running variance is unbiased over N H W
    values. This is BatchNorm1d's (N, C, L) case with L = H W, each image a row of pixels:
    a view, no copy. Parameters, buffers, train() and eval() are BatchNorm1d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> y (N, C, H, W): BatchNorm1d.forward on the view (N, C, H W)."""
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (got {x.dim()}D input)")
        return super().forward(x.flatten(2)).view_as(x)

    __call__ = forward

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """dLoss/dx (N, C, H, W) from g = dLoss/dy (N, C, H, W): BatchNorm1d's formula, its
        sums and means over each channel's N H W values, on the view (N, C, H W):
            weight.grad = sum_{n,h,w} g x_hat, bias.grad = sum_{n,h,w} g          (C,)
            dLoss/dx = gamma / s (g - mean g - x_hat mean(g x_hat))   (training)
        """
        return super().backward(grad_output.flatten(2)).view_as(grad_output)


class Conv2d:
    """y = b + W ⋆ x: each output channel o slides its kernel W_o over the image.

    x: (N, C, H, W) -> y (N, O, H_out, W_out), with weight W: (O, C, k, k), bias b: (O,):
        y[n, o, p, q] = b[o] + sum_{c, i, j} W[o, c, i, j] x_pad[n, c, s p + i, s q + j]
    where x_pad is x with `padding` rows and columns of zeros on each side, and s is the stride.

    H_out = (H + 2 padding - k) // s + 1, and the same for W_out. This is a
    cross-correlation, as in nn.Conv2d: the kernel is not flipped (a true convolution
    would flip it, rotating it by 180 degrees). stride and padding: an int, or (rows, columns).
    Initialized like nn.Conv2d, fan_in = C k k (see initialized).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                 bias: bool = True, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        self.kernel_size = (kernel_size, kernel_size)
        self.stride, self.padding = pair(stride), pair(padding)
        shape = (out_channels, in_channels, kernel_size, kernel_size)
        self.weight, self.bias = initialized(shape, bias, device, dtype)
        self.input = None  # saved by forward for backward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> y (N, O, H_out, W_out). F.conv2d is the sum above in one call,
        as addmm is Linear's product."""
        self.input = x
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    __call__ = forward

    def backward(self, grad_output: torch.Tensor,
                 needs_input_grad: bool = True) -> torch.Tensor | None:
        """Chain rule through y = b + W ⋆ x, given g = dLoss/dy: (N, O, H_out, W_out).

        Each W[o, c, i, j] meets x_pad[n, c, s p + i, s q + j] in output y[n, o, p, q], so
            weight.grad[o, c, i, j] = sum_{n, p, q} g[n, o, p, q] x_pad[n, c, s p + i, s q + j]
            bias.grad[o]            = sum_{n, p, q} g[n, o, p, q]
            dLoss/dx_pad[n, c, h, w] = sum_{o, p, q} g[n, o, p, q] W[o, c, h - s p, w - s q]
        with W taken as 0 outside its k x k; these are set (O, C, k, k), (O,), and returned.

        weight.grad is the input correlated with g: a convolution whose batch is the
        channels c, whose channels are the examples n, and whose kernel is g, its taps s
        apart (dilation = stride). dLoss/dx spreads each output's gradient back over the
        window it read: a transposed convolution (N, C, H, W), which is g with s - 1 zeros
        between its entries, padded by k - 1 - padding, correlated with W rotated by 180
        degrees and its in and out channels swapped. Rows of x that no window covered
        (stride 2 and an uneven size) get 0, and the padding is cut off. Returns None when
        needs_input_grad is False (the images).
        """
        x, (k, _), stride = self.input, self.kernel_size, self.stride
        per_channel = F.conv2d(x.transpose(0, 1), grad_output.transpose(0, 1),
                               padding=self.padding, dilation=stride)  # (C, O, >= k, >= k)
        self.weight.grad = per_channel.transpose(0, 1)[..., :k, :k].contiguous()
        if self.bias is not None:
            self.bias.grad = grad_output.sum(dim=(0, 2, 3))
        if not needs_input_grad:
            return None
        uncovered = [(size + 2 * pad - k) % step  # the rows (columns) no window reaches
                     for size, pad, step in zip(x.shape[2:], self.padding, stride, strict=True)]
        return F.conv_transpose2d(grad_output, self.weight, stride=stride, padding=self.padding,
                                  output_padding=uncovered)

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """[("weight", W), ("bias", b)], nn.Conv2d's names and order; no bias if bias=False."""
        return [("weight", self.weight)] + ([] if self.bias is None else [("bias", self.bias)])

    def parameters(self) -> list[torch.Tensor]:
        return [param for _, param in self.named_parameters()]


def pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """3 -> (3, 3): one number for both rows and columns, as nn's layers take it."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class MaxPool2d:
    """y = the largest entry of each k x k window, plane by plane.

    x: (N, C, H, W) -> y (N, C, H_out, W_out), H_out = (H - k) // s + 1: windows that do
    not fit are dropped. The stride s defaults to k (windows side by side); with s < k
    they overlap. No parameters.
        y[n, c, p, q] = max_{i, j < k} x[n, c, s p + i, s q + j]
    """

    def __init__(self, kernel_size: int, stride: int | None = None):
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.input_shape = self.indices = None  # saved by forward: where each window's winner is

    def windows(self, shape: torch.Size) -> list[tuple[slice, slice]]:
        """Offset (i, j) of a window, for each in row-major order: the (rows, columns) of x
        that sit at (i, j) in every window, as slices of x (N, C, H, W)."""
        k, s = self.kernel_size, self.stride
        rows, columns = ((size - k) // s + 1 for size in shape[2:])
        return [(slice(i, i + s * (rows - 1) + 1, s), slice(j, j + s * (columns - 1) + 1, s))
                for i in range(k) for j in range(k)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) -> y (N, C, H_out, W_out). Also keeps, in self.indices, where in
        its plane (h W + w) the entry each output took sits: the first maximum of its window
        in row-major order, the numbers F.max_pool2d(x, k, return_indices=True) gives.

        The entries at each offset of every window, one strided view per offset, are stacked
        in row-major order of the offsets: (k k, N, C, H_out, W_out). Their max over the
        offsets is y, and its index the offset of the winner: of equal maxima, max returns
        the first, which is torch's own choice (its kernel lets an entry take over only if
        val > maxval || isnan(val), so of tied entries the first one wins).
        """
        if min(x.shape[2:]) < self.kernel_size:
            raise ValueError(f"Output size is too small: input {tuple(x.shape)}, kernel "
                             f"{self.kernel_size}")
        self.input_shape = x.shape
        windows = self.windows(x.shape)
        best, winner = torch.stack([x[..., rows, columns] for rows, columns in windows]).max(0)
        plane = torch.arange(x.shape[2] * x.shape[3], device=x.device).view(x.shape[2:])
        where = torch.stack([plane[rows, columns] for rows, columns in windows])  # by offset
        self.indices = where.expand(*x.shape[:2], *where.shape).gather(
            2, winner.unsqueeze(2)).squeeze(2)  # (N, C, H_out, W_out): where[winner]
        return best

    __call__ = forward

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """dLoss/dx (N, C, H, W): each window's g goes to the one entry that won it, the
        first maximum; every other entry gets 0 from that window.

        y = max(...) moves with its winner alone (slope 1) and not at all with the others
        (slope 0). A tie has no single slope, so a choice has to be made, and torch makes
        this one on the CPU and in CUDA. The other choices differ from it: sending g to every
        tied entry multiplies the gradient by the number of ties, and splitting it among them
        matches no torch kernel. Ties are common on MNIST: ReLU's zeros fill the blank
        background. g is added into a plane of zeros at self.indices (scatter_add_): where
        windows overlap (s < k), an entry that wins several gets the sum of their gradients.
        """
        n, c, height, width = self.input_shape
        grad_input = grad_output.new_zeros(n, c, height * width)
        grad_input.scatter_add_(2, self.indices.flatten(2), grad_output.flatten(2))
        return grad_input.view(self.input_shape)

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return []

    def parameters(self) -> list[torch.Tensor]:
        return []


class Flatten:
    """x: (N, C, H, W) -> y (N, C H W), each example's entries in torch's order: channel by
    channel, each channel row by row (y[n, (c H + h) W + w] = x[n, c, h, w]). No parameters."""

    def __init__(self):
        self.input_shape = None  # saved by forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_shape = x.shape
        return x.flatten(start_dim=1)

    __call__ = forward

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """dLoss/dx (N, C, H, W): g (N, C H W) put back in the input's shape, in the same order
        (the entries only move, so their gradients move with them)."""
        return grad_output.reshape(self.input_shape)

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return []

    def parameters(self) -> list[torch.Tensor]:
        return []


class AdaptiveAvgPool2d:
    """y = the mean of each plane: x (N, C, H, W) -> y (N, C, 1, 1), global average pooling,
    nn.AdaptiveAvgPool2d((1, 1)) (the only output size written here). No parameters.
        y[n, c] = sum_{h, w} x[n, c, h, w] / (H W)
    """

    def __init__(self, output_size: int | tuple[int, int] = (1, 1)):
        if pair(output_size) != (1, 1):
            raise ValueError(f"only output_size (1, 1) is written here, not {output_size}")
        self.output_size = (1, 1)
        self.input_shape = None  # saved by forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.input_shape = x.shape
        return x.mean(dim=(-2, -1), keepdim=True)

    __call__ = forward

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """dLoss/dx (N, C, H, W): each of a plane's H W entries moves its mean by 1 / (H W),
        so each gets g[n, c] / (H W), g: (N, C, 1, 1) spread over the plane."""
        height, width = self.input_shape[-2:]
        return (grad_output / (height * width)).expand(self.input_shape)

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        return []

    def parameters(self) -> list[torch.Tensor]:
        return []


class SyncBatchNorm(BatchNorm1d):
    """BatchNorm over the whole batch of a distributed run (manual/parallel.py): every rank
    normalizes with the statistics of all ranks' examples, nn.SyncBatchNorm. x: (N, C),
    (N, C, L) or (N, C, H, W) -> y, x's shape; the running statistics are the whole batch's.

    BatchNorm1d's forward and backward, with each per-channel sum over the batch added up
    across the ranks (an all-reduce SUM), and n the number of values a channel has on all
    ranks together (one more all-reduce, in each):
        forward:   mean = sum_all x / n,  var = sum_all (x - mean)^2 / n      two sums
        backward:  dLoss/dx = gamma / s (g - sum_all g / n - x_hat sum_all(g x_hat) / n)
                   two more, of the sums bias.grad and weight.grad hold before DDP's
    weight.grad and bias.grad stay this rank's own sums: DDP's all-reduce averages them. Each
    rank's g is dLoss_r/dy, W times the whole batch's dLoss/dy, so this rank's dLoss/dx is
    W times one process's; DDP's 1/W brings every parameter's gradient back to one
    process's (manual/parallel.py derives why the average is the whole batch's gradient).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, ...) -> y: BatchNorm1d.forward on the view (N, C, L), L the rest."""
        return super().forward(x.flatten(2) if x.dim() > 3 else x).view_as(x)

    __call__ = forward

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """dLoss/dx, grad_output's shape: BatchNorm1d.backward on the view (N, C, L)."""
        g = grad_output
        return super().backward(g.flatten(2) if g.dim() > 3 else g).view_as(g)

    def count(self, x: torch.Tensor) -> int:
        """The values a channel has on all ranks together."""
        n = torch.tensor([super().count(x)], device=x.device)
        dist.all_reduce(n)
        return int(n)

    def total(self, sums: torch.Tensor) -> torch.Tensor:
        """sums (C,) added up over every rank: an all-reduce SUM of a copy."""
        summed = sums.clone()
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def convert_sync_batchnorm(model):
        """model with each BatchNorm1d and BatchNorm2d layer made a SyncBatchNorm that holds
        the same parameters and buffers: nn.SyncBatchNorm.convert_sync_batchnorm."""
        for owner in [model, *getattr(model, "layers", [])]:
            for name, layer in list(vars(owner).items()):
                if isinstance(layer, BatchNorm1d):
                    setattr(owner, name, SyncBatchNorm.like(layer))
            layers = getattr(owner, "layers", None)
            if isinstance(layers, list):
                layers[:] = [SyncBatchNorm.like(layer) if isinstance(layer, BatchNorm1d)
                             else layer for layer in layers]
        return model

    @staticmethod
    def like(layer: BatchNorm1d) -> "SyncBatchNorm":
        synced = SyncBatchNorm.__new__(SyncBatchNorm)
        synced.__dict__ = layer.__dict__  # the same tensors
        return synced
