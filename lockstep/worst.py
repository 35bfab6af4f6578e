"""The first layer's weight gradient, both sides, at the step where they differed most.

In the lock step the parameters after each update agree by construction (the manual learner
takes torch's state and gradients), so a plot of the learned weights has nothing to show in
its difference. The gradients are what the lock step tests: weights.png draws the first
layer's, manual's and torch's, at their worst step, with their difference. Kept on the
device; each step reads back one number, and the gradients are copied only when they differ
more than at any step before.
"""

import math

import torch

FIRST_LAYER = ("weight", "layers.0.weight")  # softmax regression's, the MLP's


class WorstStep:
    """Both sides' first-layer weight gradient at the step where their relative difference
    (max|manual - torch| / max|torch|) was largest so far."""

    def __init__(self):
        self.relative, self.step, self.gradients = -1.0, None, None

    def update(self, step: int, stats: torch.Tensor, *named: list) -> None:
        """stats: (T, 3) checks.named_stats of this step's T gradients; named: manual's and
        torch's named gradients (Learner.named_gradients), in the same order. Reads one
        number back, right after the step's own check has (so it waits for nothing), and
        copies the two gradients only when they differ more than ever before: a handful of
        times in a run."""
        index = next((i for i, (name, _) in enumerate(named[0]) if name in FIRST_LAYER), None)
        if index is None:  # a model of other names: nothing to draw
            return
        max_diff, max_size, _ = stats[index].tolist()
        relative = 0.0 if max_diff == 0 else max_diff / max_size if max_size else math.inf
        relative = math.inf if math.isnan(relative) else relative  # NaN: the worst there is
        if relative > self.relative:
            self.relative, self.step = relative, step
            self.gradients = [pairs[index][1].detach().clone() for pairs in named]

    def found(self) -> dict | None:
        """{"step", "relative", "manual", "torch"} on the CPU, or None before any step."""
        if self.step is None:
            return None
        manual, torch_side = (gradient.cpu().double() for gradient in self.gradients)
        return {"step": self.step, "relative": self.relative, "manual": manual,
                "torch": torch_side}
