"""MNIST softmax regression by hand: plain tensors and hand-derived gradients, no autograd."""

from manual import functional, model, optim, train

__all__ = ["functional", "model", "optim", "train"]
