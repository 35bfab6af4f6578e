"""MNIST classifiers by hand: plain tensors, hand-derived gradients and updates, no autograd."""

from manual import (
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
