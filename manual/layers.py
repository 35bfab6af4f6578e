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
    """y = gamma * x_hat + beta, x_hat = (x - mean) / sqrt(var + eps), per feature.

    x: (N, F) -> y (N, F); gamma = weight (F,), initialized to ones, beta = bias (F,), zeros.
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
        """x: (N, F) -> y (N, F), with the batch's statistics or, in eval mode, the running ones."""
        self.batch_statistics = self.training
        if self.training:
            n = len(x)
            if n < 2:
                raise ValueError("Expected more than 1 value per channel when training, "
                                 f"got input size {list(x.shape)}")
            mean = x.mean(dim=0)
            centered = x - mean
            var = centered.square().mean(dim=0)  # biased: divided by N
            # running <- (1 - momentum) running + momentum new, in one call: lerp_
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (n / (n - 1)), self.momentum)  # unbiased
            self.num_batches_tracked += 1
        else:
            mean, var = self.running_mean, self.running_var
            centered = x - mean
        self.mean = mean
        self.inv_std = (var + self.eps).rsqrt()
        self.x_hat = centered * self.inv_std
        return torch.addcmul(self.bias, self.x_hat, self.weight)  # beta + x_hat gamma in one call

    __call__ = forward

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """Chain rule through BatchNorm, given g = dLoss/dy: (N, F), feature by feature.

        weight.grad = sum_n g_n x_hat_n     (F,)
        bias.grad   = sum_n g_n             (F,)
        returns dLoss/dx (N, F):
            training: gamma / s * (g - mean_m g_m - x_hat mean_m g_m x_hat_m)
            eval:     gamma / s * g         (mean and s = sqrt(var + eps) are constants)
        Derivation, for one feature (drop its index), with s = sqrt(var + eps) and
        d = dLoss/dx_hat = gamma g. x_n moves the output through three paths: its own
        x_hat_n directly, and every x_hat_m through the batch mean and the batch var:
            dx_hat_m/dx_n = ([m == n] - 1/N) / s - x_hat_m (x_n - mean) / (N s^2)
        (from dmean/dx_n = 1/N and dvar/dx_n = 2 (x_n - mean) / N). Summed over m:
            dLoss/dx_n = sum_m d_m dx_hat_m/dx_n
                       = (d_n - mean_m d_m - x_hat_n mean_m d_m x_hat_m) / s
        which is the line above (d = gamma g). The mean term removes what shifts every example
        alike; the x_hat term, what scales them alike: the batch's own statistics
        absorb both, so they cannot change the output.
        """
        self.weight.grad = (grad_output * self.x_hat).sum(dim=0)
        self.bias.grad = grad_output.sum(dim=0)
        scale = self.weight * self.inv_std
        if not self.batch_statistics:
            return grad_output * scale
        mean_terms = (self.bias.grad + self.x_hat * self.weight.grad) / len(grad_output)
        return scale * (grad_output - mean_terms)

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """[("weight", gamma), ("bias", beta)], nn.BatchNorm1d's names and order."""
        return [("weight", self.weight), ("bias", self.bias)]

    def parameters(self) -> list[torch.Tensor]:
        return [param for _, param in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        """The state that is not learned by gradient, nn.BatchNorm1d's names and order."""
        return [("running_mean", self.running_mean), ("running_var", self.running_var),
                ("num_batches_tracked", self.num_batches_tracked)]


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
