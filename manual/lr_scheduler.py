"""A learning-rate schedule by hand: the lr the optimizer uses at each step.

Twin of torch_impl/lr_scheduler.py.
"""

import math

from manual.optim import Optimizer


class CosineAnnealingLR:
    """After t calls of step(), the optimizer's learning rate is

        lr_t = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2

    base_lr (the optimizer's lr when the schedule starts) at t = 0, falling slowly,
    then fast, then slowly again to eta_min at t = T_max: half a cosine wave. Call
    step() once after each optimizer.step(); it sets optimizer.lr for the next one.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0):
        self.optimizer, self.T_max, self.eta_min = optimizer, T_max, eta_min
        self.base_lr = optimizer.lr
        self.last_epoch = 0  # torch's name for t, the number of step() calls so far

    def step(self) -> None:
        """t <- t + 1, and set the optimizer's lr to lr_t."""
        self.last_epoch += 1
        cosine = 1 + math.cos(math.pi * self.last_epoch / self.T_max)
        self.optimizer.lr = self.eta_min + (self.base_lr - self.eta_min) * cosine / 2

    def get_last_lr(self) -> list[float]:
        """[lr_t], one entry per parameter group as in torch (here a single group)."""
        return [self.optimizer.lr]
