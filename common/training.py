"""The training loop both implementations share. Each package supplies only its
model (forward / backward), optimizer (update) and train.forward_backward.

A package here is `manual` or `torch_impl`: both have model.SoftmaxRegression,
optim.SGD, lr_scheduler.CosineAnnealingLR and train.forward_backward with the
same signatures.
"""

from collections.abc import Iterable
from types import ModuleType

import torch


class Learner:
    """One implementation's model and optimizer, trained by the shared loop."""

    def __init__(self, package: ModuleType, in_features: int, num_classes: int,
                 optimizer_options: dict, label_smoothing: float = 0.0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 anneal_steps: int | None = None):
        """anneal_steps: cosine-anneal the learning rate to 0 over that many optimizer
        steps (lr_scheduler.CosineAnnealingLR); None keeps it constant."""
        self.name = package.__name__
        self.package = package
        self.model = package.model.SoftmaxRegression(in_features, num_classes,
                                                     device=device, dtype=dtype)
        self.optimizer = package.optim.SGD(self.model.parameters(), **optimizer_options)
        self.scheduler = (None if anneal_steps is None else
                          package.lr_scheduler.CosineAnnealingLR(self.optimizer, anneal_steps))
        self.label_smoothing = label_smoothing
        self.params = list(self.model.parameters())  # updated in place: the same tensors always

    def parameters(self) -> list[torch.Tensor]:
        """[weight, bias] in both implementations."""
        return self.params

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Zero the old gradients, fill each parameter's .grad for this batch; return the loss."""
        self.optimizer.zero_grad()
        return self.package.train.forward_backward(self.model, x, y, self.label_smoothing)

    def step(self) -> None:
        """Update the parameters with their gradients, then the learning rate if scheduled."""
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def train_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """One pass over the batches: gradients, then an update. Returns the mean loss."""
        total, steps = 0.0, 0
        for x, y in batches:
            total += self.gradients(x, y)
            self.step()
            steps += 1
        return float(total) / steps

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) -> predicted classes (N,), the largest logit of each row."""
        return self.model(x).argmax(dim=-1)

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Share of the N examples classified correctly, in [0, 1]."""
        return (self.predict(x) == y).double().mean().item()
