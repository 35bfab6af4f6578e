"""Layers by hand: each forward with its backward written out beside it.

Twin of torch_impl/layers.py (nn.Linear, nn.ReLU, nn.BatchNorm1d). Every layer has
forward(x), also called as layer(x), which saves what backward needs, as autograd
saves it; backward(grad_output) -> grad_input, the chain rule through the layer,
which sets (not accumulates) the .grad of the layer's parameters, and modifies neither
grad_output nor what forward saved; and named_parameters() / parameters() in nn's order.
Shapes: x (N, in), N examples.
"""

import math

import torch


class Linear:
    """y = x W^T + b, with W: (out_features, in_features) = weight and b: (out_features,) = bias.

    Initialized like nn.Linear: every entry drawn from U(-1/sqrt(in), 1/sqrt(in)),
    weight first, then bias, from torch's global random stream, so after the
    same torch.manual_seed both hold the same numbers. bias=False: y = x W^T, no b.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        bound = 1 / math.sqrt(in_features)
        # nn.Linear draws the weight with kaiming_uniform_(a=sqrt(5)), whose bound
        # gain * sqrt(3 / D) is 1/sqrt(D) mathematically but, rounded step by step,
        # can be one ulp away in float64 (D = 1, 3, 13, ...). Same steps, same bits:
        gain = math.sqrt(2.0 / (1 + math.sqrt(5) ** 2))  # init.calculate_gain("leaky_relu", a)
        weight_bound = math.sqrt(3.0) * (gain / math.sqrt(in_features))
        self.weight = torch.empty(out_features, in_features, device=device, dtype=dtype)
        self.weight.uniform_(-weight_bound, weight_bound)
        self.bias = torch.empty(out_features, device=device, dtype=dtype) if bias else None
        if bias:
            self.bias.uniform_(-bound, bound)
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


class ReLU:
    """y = max(x, 0), entry by entry: x (N, H) -> y (N, H). No parameters."""

    def __init__(self):
        self.output = None  # saved by forward: y > 0 exactly where x > 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.output = x.clamp_min(0)
        return self.output

    __call__ = forward

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """dLoss/dx = g where x > 0, else 0: (N, H). The slope is 1 or 0.

        At x = 0 exactly, where the slope is undefined, torch takes 0; so does this.
        """
        return grad_output * (self.output > 0)  # the gate [y > 0]: 1 or 0

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
        self.x_hat = self.inv_std = None  # saved by forward for backward
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
            centered, var = x - self.running_mean, self.running_var
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
