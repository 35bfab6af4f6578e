"""MNIST softmax regression the idiomatic way: nn.Linear, F.cross_entropy, torch.optim.SGD."""

from torch_impl import functional, model, optim, train

__all__ = ["functional", "model", "optim", "train"]
