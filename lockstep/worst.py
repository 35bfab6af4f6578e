"""The first layer's weight gradient, both sides, at the step where they differed most.

In the lock step the parameters after each update agree by construction (the manual learner
takes torch's state and gradients), so a plot of the learned weights has nothing to show in
its difference. The gradients are what the lock step tests: weights.png draws the first
layer's, manual's and torch's, at their worst step, with their difference. Kept on the
device, step after step, without reading anything back: each step costs two torch.where.
"""

import torch

FIRST_LAYER = ("weight", "layers.0.weight")  # softmax regression's, the MLP's


class WorstStep:
    """Both sides' first-layer weight gradient at the step where their relative difference
    (max|manual - torch| / max|torch|) was largest so far."""

    def __init__(self):
        self.relative = self.step = self.manual = self.torch = None  # device tensors

    def update(self, step: int, stats: torch.Tensor, *named: list) -> None:
        """stats: (T, 3) checks.named_stats of this step's T gradients; named: manual's and
        torch's named gradients (Learner.named_gradients), in the same order."""
        index = next(i for i, (name, _) in enumerate(named[0]) if name in FIRST_LAYER)
        gradients = [pairs[index][1] for pairs in named]
        max_diff, max_size, _ = stats[index]
        relative = torch.where(max_diff == 0, 0.0, max_diff / max_size).nan_to_num(torch.inf)
        if self.relative is None:
            self.relative, self.step = relative, torch.tensor(step, device=relative.device)
            self.manual, self.torch = (gradient.clone() for gradient in gradients)
            return
        worse = relative > self.relative
        self.relative = torch.where(worse, relative, self.relative)
        self.step = torch.where(worse, step, self.step)
        self.manual = torch.where(worse, gradients[0], self.manual)
        self.torch = torch.where(worse, gradients[1], self.torch)

    def found(self) -> dict | None:
        """{"step", "relative", "manual", "torch"} on the CPU, or None before any step."""
        if self.relative is None:
            return None
        return {"step": int(self.step), "relative": float(self.relative),
                "manual": self.manual.detach().cpu().double(),
                "torch": self.torch.detach().cpu().double()}
