"""Stochastic gradient descent by hand: the exact update rule of torch.optim.SGD.

Twin of torch_impl/optim.py.
"""

import torch


class SGD:
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
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        self.params = list(params)
        self.lr, self.momentum, self.dampening = lr, momentum, dampening
        self.weight_decay, self.nesterov, self.maximize = weight_decay, nesterov, maximize
        # per parameter, as torch.optim keeps it: state[p] = {"momentum_buffer": buf}
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}

    def zero_grad(self) -> None:
        """Forget the gradients (set to None, as torch does by default)."""
        for param in self.params:
            param.grad = None

    def step(self) -> None:
        """Update every parameter that has a gradient, in place."""
        for param in self.params:
            if param.grad is None:
                continue
            grad = -param.grad if self.maximize else param.grad
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
