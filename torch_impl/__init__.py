"""MNIST classifiers the idiomatic way: torch.nn layers, F.cross_entropy, autograd, torch.optim."""

from torch_impl import functional, lr_scheduler, model, optim, train

__all__ = ["functional", "lr_scheduler", "model", "optim", "train"]
