"""MNIST classifiers the idiomatic way: torch.nn layers, F.cross_entropy, autograd, torch.optim."""

from torch_impl import (
    autograd,
    functional,
    functions,
    layers,
    lr_scheduler,
    model,
    optim,
    parallel,
    train,
)

__all__ = ["autograd", "functional", "functions", "layers", "lr_scheduler", "model", "optim",
           "parallel",
           "train"]
