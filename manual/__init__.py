"""MNIST softmax regression by hand: plain tensors and hand-derived gradients, no autograd."""

from manual import functional, lr_scheduler, model, optim, train

__all__ = ["functional", "lr_scheduler", "model", "optim", "train"]
