"""MNIST classifiers by hand: plain tensors, hand-derived gradients and updates, no autograd."""

from manual import functional, lr_scheduler, model, optim, train

__all__ = ["functional", "lr_scheduler", "model", "optim", "train"]
