"""The tutor's questions about a residual network: the fork's gradient, the block's forward,
and BatchNorm2d's statistics.

Each question holds manual's tensor a against what torch's would be under one named mistake,
computed from torch's side of the same step, and answers with a sentence or None:
    fork        a = b - dLoss/ds (the skip's share missing: the fork overwrote its gradient),
                or a = dLoss/ds (the branch's missing), at the input of a residual block
    block       the block's output is x + relu(f(x)) (the ReLU before the add), relu(f(x))
                (no skip) or x + f(x) (no ReLU)
    statistics  BatchNorm2d's output normalized over other dimensions than each channel's
                N H W values: over N alone, per (channel, row), per (channel, column)
    running_var BatchNorm2d's running variance divided by another count than N H W - 1
"""

import copy

import torch

from lockstep.kinds import agrees
from lockstep.learner import Learner

FORK = ("manual's dLoss/dx is torch's minus the skip's share (dLoss/ds, s = x + f(x), the "
        "gradient the add passes to x unchanged): did the fork overwrite its gradient "
        "instead of adding to it? x feeds both f and the skip; the engine must add (+) the two "
        "gradients that reach it (autograd.backward), and the block must put x itself, not a "
        "copy, into the add (functions.basic_block).")
BRANCH = ("manual's dLoss/dx is the skip's share alone (dLoss/ds, s = x + f(x)): the gradient "
          "through f was lost or overwritten where x's two gradients meet; the engine must add "
          "(+) both (autograd.backward).")


def skip_share(model, index: int) -> torch.Tensor | None:
    """dLoss/ds of the residual block above hidden output `index` of torch's model, after
    its backward: the block's output y = relu(s) kept its gradient g, and dLoss/ds = g where
    y > 0. None where the layer above is no block."""
    above = model.layers[index + 1]
    if type(above).__name__ != "BasicBlock":
        return None
    output = model.hidden_outputs[index + 1]
    return None if output.grad is None else output.grad * (output > 0)


def fork_sentence(a: torch.Tensor, b: torch.Tensor, share: torch.Tensor,
                  limit: float) -> str | None:
    """FORK or BRANCH, where manual's dLoss/dx (a) is torch's (b) less one of its shares."""
    if agrees(a, b - share, limit):
        return FORK
    if agrees(a, share, limit):
        return BRANCH
    return None


@torch.no_grad()
def block_sentence(a: torch.Tensor, model, index: int, limit: float) -> str | None:
    """Where hidden output `index` of torch's model is a residual block's output and
    manual's (a) is that block's output under a known mistake, the sentence naming it."""
    block = model.layers[index]
    if type(block).__name__ != "BasicBlock" or index == 0:
        return None
    x = model.hidden_outputs[index - 1].detach()
    f = copy.deepcopy(block).branch(x)  # a copy: its BatchNorm2d layers update their statistics
    wrong = {"x + relu(f(x)): the ReLU comes before the add, where the block adds first, "
             "relu(x + f(x)) (torchvision's BasicBlock; the ReLU after the sum)": x + f.relu(),
             "relu(f(x)): the skip is missing; the block adds x first, relu(x + f(x))":
             f.relu(),
             "x + f(x): the ReLU after the add is missing, relu(x + f(x))": x + f}
    for told, output in wrong.items():
        if agrees(a, output, limit):
            return f"manual's block output is {told}."
    return None


# Other dimensions a BatchNorm2d might take its statistics over, for x (N, C, H, W).
DIMENSIONS = {(0,): "over N alone, per (channel, row, column)",
              (0, 3): "over (N, W), per (channel, row)",
              (0, 2): "over (N, H), per (channel, column)",
              (2, 3): "over (H, W), per (example, channel)",
              (0, 1, 2, 3): "over the whole batch, one mean for all channels"}


@torch.no_grad()
def statistics_sentence(a: torch.Tensor, model, index: int, limit: float) -> str | None:
    """Where hidden output `index` of torch's model is a BatchNorm2d's output (training mode)
    and manual's (a) is it normalized over other dimensions (DIMENSIONS), the sentence."""
    layer = model.layers[index]
    if type(layer).__name__ != "BatchNorm2d" or index == 0 or not layer.training:
        return None
    x = model.hidden_outputs[index - 1].detach()
    weight, bias = (p.view(1, -1, 1, 1) for p in (layer.weight, layer.bias))
    for dims, told in DIMENSIONS.items():
        var, mean = torch.var_mean(x, dim=dims, keepdim=True, correction=0)
        if agrees(a, (x - mean) / (var + layer.eps).sqrt() * weight + bias, limit):
            return (f"BatchNorm2d's statistics are taken {told}, where torch's are over each "
                    "channel's N H W values (dims (0, 2, 3)): a channel's pixels are its "
                    "examples.")
    return None


@torch.no_grad()
def running_var_sentence(learners: list[Learner], name: str, limit: float) -> str | None:
    """Where buffer `name` is a BatchNorm2d's running_var: both sides' layers, on copies
    from torch's state with momentum 1 (running_var = the batch's estimate alone), take one
    forward pass on the same batch of 8 images; the ratio of manual's to torch's,
    (n - 1) / d, gives manual's divisor d for n = 8 H W values a channel. Torch's is n - 1
    (unbiased); the sentence names manual's where it is another."""
    if not name.endswith("running_var") or learners[0].image_shape is None:
        return None
    probes = [learner.twin() for learner in learners]
    probes[0].copy_state_from(learners[1])
    layers = [dict(named_layers(probe.model))[name.rpartition(".")[0]] for probe in probes]
    if type(layers[1]).__name__ != "BatchNorm2d":
        return None
    for layer in layers:
        layer.momentum = 1.0
    x = torch.randn(8, *learners[1].image_shape, generator=torch.Generator().manual_seed(0),
                    dtype=probes[1].params[0].dtype).to(probes[1].params[0].device)
    for probe in probes:
        probe.model.train()
        probe.model(x)
    a, b = (dict(probe.named_buffers())[name] for probe in probes)
    k = (a / b).mean().item()
    if not agrees(a, k * b, limit) or k == 1:
        return None
    shape = probes[1].model.hidden_outputs[int(name.split(".")[1])].shape  # (8, C, H, W)
    n = shape[0] * shape[2] * shape[3]
    divisor = (n - 1) / k
    said = {n: f"n = {n}, the N H W values a channel has: the biased variance",
            8 - 1: "N - 1, the examples alone: per pixel, not per channel"}
    told = next((text for count, text in said.items() if abs(divisor - count) < 0.5),
                f"{divisor:.6g}")
    return (f"BatchNorm2d's running variance divides the batch's squared deviations by "
            f"{told}, where torch's divides by n - 1 = {n - 1} (the unbiased estimate over "
            f"each channel's n = N H W values): manual's is {k:.6g} x torch's with momentum 1.")


def named_layers(model) -> list[tuple[str, object]]:
    """("layers.1", layer), ("layers.4.bn1", layer), ...: every layer of a Chain by its name,
    a residual block's own layers too (manual's BasicBlock.named_children, nn's)."""
    named = []
    for index, layer in enumerate(model.layers):
        named.append((f"layers.{index}", layer))
        children = getattr(layer, "named_children", None)
        named += [(f"layers.{index}.{child}", sub) for child, sub in
                  (children() if children else [])]
    return named
