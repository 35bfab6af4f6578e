"""Optimizers by hand: the exact update rules of torch.optim.SGD, Adam and AdamW.

Twin of torch_impl/optim.py. Each keeps, per parameter, the state torch.optim keeps, under
torch's names: optimizer.state[p] = {"momentum_buffer": buf} (SGD with momentum), or
{"step": t, "exp_avg": m, "exp_avg_sq": v, "max_exp_avg_sq": v_max} (Adam, AdamW; the last
with amsgrad only).
"""

import torch


class Optimizer:
    """What every optimizer shares: its parameters, their state, the learning rate, and
    zero_grad. gradients() yields each parameter that has a gradient, with that gradient
    negated if maximize (gradient ascent)."""

    def __init__(self, params: list[torch.Tensor], lr: float, maximize: bool = False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        self.params, self.lr, self.maximize = list(params), lr, maximize
        # per parameter, as torch.optim keeps it: state[p] = {"momentum_buffer": buf, ...}
        self.state: dict[torch.Tensor, dict] = {}

    def zero_grad(self) -> None:
        """Forget the gradients (set to None, as torch does by default)."""
        for param in self.params:
            param.grad = None

    def gradients(self):
        """(p, g) for every parameter p with a gradient: g = -p.grad if maximize, else p.grad."""
        for param in self.params:
            if param.grad is not None:
                yield param, -param.grad if self.maximize else param.grad


class SGD(Optimizer):
    """One step, for each parameter p with gradient g = p.grad (lr: learning rate):

        g <- -g                              if maximize
        g <- g + weight_decay * p            (L2 penalty, added to the gradient)
        buf <- g                             on the first step, else
        buf <- momentum * buf + (1 - dampening) * g
        g <- g + momentum * buf              if nesterov, else g <- buf
        p <- p - lr * g

    The momentum lines only run when momentum != 0. Shapes: each buffer has
    its parameter's shape.
    """

    def __init__(self, params: list[torch.Tensor], lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 maximize: bool = False):
        super().__init__(params, lr, maximize)
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.momentum, self.dampening = momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov

    def step(self) -> None:
        """Update every parameter that has a gradient, in place. Its .grad stays as it is
        (grad.add, not grad.add_), as torch.optim leaves it."""
        for param, grad in self.gradients():
            if self.weight_decay != 0:
                grad = grad.add(param, alpha=self.weight_decay)
            if self.momentum != 0:
                state = self.state.setdefault(param, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = grad.clone()
                else:
                    buf.mul_(self.momentum).add_(grad, alpha=1 - self.dampening)
                grad = grad.add(buf, alpha=self.momentum) if self.nesterov else buf
            param.add_(grad, alpha=-self.lr)


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015). Step t = 1, 2, ... for each parameter p with gradient g:

        g <- -g                                    if maximize
        g <- g + weight_decay * p                  L2 penalty, through the gradient (AdamW: no)
        m <- beta1 * m + (1 - beta1) * g           exp_avg: running mean of the gradients
        v <- beta2 * v + (1 - beta2) * g * g       exp_avg_sq: running mean of their squares
        v_max <- max(v_max, v)                     amsgrad only (max_exp_avg_sq): used as v
        m_hat = m / (1 - beta1^t)                  bias corrections: m and v start at 0,
        v_hat = v / (1 - beta2^t)                  so early on they are too small
        p <- p - lr * m_hat / (sqrt(v_hat) + eps)  eps outside the root, after the correction

    m, v and v_max start at 0, with p's shape; t counts this parameter's steps.
    Each entry of p moves by about lr at most, whatever the gradient's scale.
    """

    def __init__(self, params: list[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False):
        super().__init__(params, lr, maximize)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for index, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {index}: {beta}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        self.betas, self.eps, self.weight_decay, self.amsgrad = betas, eps, weight_decay, amsgrad

    def step(self) -> None:
        """Update every parameter that has a gradient, in place. Its .grad stays as it is, as
        torch.optim leaves it."""
        beta1, beta2 = self.betas
        for param, grad in self.gradients():
            state = self.state.get(param) or self.init_state(param)
            state["step"] += 1
            if self.weight_decay != 0:
                grad = self.decay(param, grad)
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m.lerp_(grad, 1 - beta1)  # m + (1 - beta1)(g - m): beta1 m + (1 - beta1) g
            v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            if self.amsgrad:
                v = torch.maximum(state["max_exp_avg_sq"], v, out=state["max_exp_avg_sq"])
            bias_correction1, bias_correction2 = self.bias_corrections(state["step"])
            # lr m_hat / (sqrt(v_hat) + eps), with m_hat, v_hat's divisions folded in
            denominator = self.denominator(v, bias_correction2)
            param.addcdiv_(m, denominator, value=-self.lr / bias_correction1)

    def init_state(self, param: torch.Tensor) -> dict:
        """The state before the first step: t = 0, m = v (= v_max) = 0, in torch's key order."""
        state = self.state[param] = {"step": 0, "exp_avg": torch.zeros_like(param),
                                     "exp_avg_sq": torch.zeros_like(param)}
        if self.amsgrad:
            state["max_exp_avg_sq"] = torch.zeros_like(param)
        return state

    def decay(self, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Adam's weight decay, an L2 penalty: g + weight_decay * p (p is left alone).
        It passes through m and v, so a parameter with large gradients decays less."""
        return grad.add(param, alpha=self.weight_decay)

    def bias_corrections(self, step: int) -> tuple[float, float]:
        """(1 - beta1^t, 1 - beta2^t): m and v average only t gradients, weighted as if
        there were infinitely many, so they are divided by the weights' sum."""
        beta1, beta2 = self.betas
        return 1 - beta1**step, 1 - beta2**step

    def denominator(self, v: torch.Tensor, bias_correction2: float) -> torch.Tensor:
        """sqrt(v_hat) + eps = sqrt(v) / sqrt(1 - beta2^t) + eps, entry by entry."""
        return (v.sqrt() / bias_correction2**0.5).add_(self.eps)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter, 2019): the same steps,
    except that instead of adding weight_decay * p to the gradient,

        p <- p - lr * weight_decay * p             before the Adam step

    so the decay never enters m or v: every parameter decays at the same rate.
    The default weight_decay is 1e-2, as in torch (Adam's is 0).
    """

    def __init__(self, params: list[torch.Tensor], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, maximize: bool = False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize)

    def decay(self, param: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Decoupled: p <- p (1 - lr * weight_decay), in place; the gradient is unchanged."""
        param.mul_(1 - self.lr * self.weight_decay)
        return grad
