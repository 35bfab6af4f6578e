"""MNIST softmax regression the idiomatic way: nn.Linear, F.cross_entropy, torch.optim.SGD."""

from torch_impl import functional, lr_scheduler, model, optim, train

__all__ = ["functional", "lr_scheduler", "model", "optim", "train"]
