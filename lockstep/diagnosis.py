"""The tutor: where a mismatch starts, what kind it is, and why float32 is close but not equal.

compare.py checks every step with a few numbers per tensor (lockstep.checks). Only once a
tensor goes over its limit does the tutor look at the tensors themselves, once: it names the
first that differs, in the order the computation runs, and says how it differs.

The order: the running statistics (BatchNorm1d updates them in the forward pass), each hidden
layer's output (the forward pass; only the diagnosis looks at these), the loss,
dLoss/dlogits, each layer's gradients from the top layer down (its parameters', then
dLoss/d(its input)), each parameter after the update, the optimizer state.

The kinds, tried in this order, for manual's tensor a against torch's b:
    shape       the shapes differ (or a is missing); is a.T, a permutation of a's dimensions,
                or a reshape of a, equal to b?
    non-finite  NaN or inf on one side only
    rounding    float32 only: both within float32 rounding of a float64 computation of the
                same step (limits.rounding_only), or a ReLU
                input within rounding of 0 let the gradient through on one side only
    permuted    the same entries in another order: a kernel rotated by 180 degrees, in and
                out channels swapped, a flatten in another order
    scale       a = k b for one constant k (k = N, the batch size; 1/N; -1, the sign)
    shifted     dLoss/dlogits differs at the target's column and at one other in every row
    partial     only some rows, columns or entries differ (max pooling: only its ties)
    fork        (a residual block's input) manual's dLoss/dx is torch's less one path's share
    block       (a residual block's output) its forward under a known mistake
    statistics  (BatchNorm2d) statistics over other dimensions, or another running divisor
    other
A diagnosis is {"step", "tensor", "kind", "factor", "message"}; factor is k for scale.

Here: the loss and the gradients, diagnosed as they happen, and the first mismatch of an
epoch. The rest of the tutor, by what it does:
    lockstep.kinds      the kind, from the two tensors alone
    lockstep.reference  rounding or not, by a float64 twin of the step
    lockstep.replay     a failed step replayed on a recording copy; an update replayed
    lockstep.blocks     the fork, the residual block's forward, BatchNorm2d's statistics
    lockstep.graph      of no simpler pattern: the first node whose backward is wrong when
                        fed torch's own gradient (else lockstep.culprit: the layer)
"""

import torch

from lockstep.blocks import block_sentence, fork_sentence, skip_share, statistics_sentence
from lockstep.checks import REL
from lockstep.culprit import responsible
from lockstep.graph import first_wrong_node
from lockstep.kinds import agrees, axes_of, classify, distance, make, tensor_key
from lockstep.learner import Learner, hidden_names
from lockstep.reference import float64_references, rounding_sentence
from lockstep.replay import of_update
from lockstep.ties import tied_maxima


@torch.no_grad()
def of_gradients(step: int, learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
                 limit: float, independent: bool) -> dict:
    """The first of the loss, dLoss/dlogits and the gradients (backward's order) that is over
    `limit` at this step (should none be, at the limit's edge: the furthest apart), and its
    kind. Called right after both backward passes, before the update, so the parameters are
    still those the step started from. A hidden output that differs in the forward pass
    comes before them all: the loss and every gradient below it follow from it (not with
    independent, where each learner's own parameters make its own forward pass)."""
    forward = zip(*(learner.named_hidden_outputs() for learner in learners), strict=True)
    for index, ((_, a), (name, b)) in enumerate([] if independent else forward):  # they drift
        if a.shape != b.shape or not agrees(a, b, limit):
            named = a.shape == b.shape and residual(a, learners[1].model, index, limit)
            if named:
                return make(step, name, *named)
            kind, factor, sentence = classify(a, b, limit, len(x), axes_of(name),
                                              layout=around(learners[1].model, name).get("layout"))
            return make(step, name, kind, sentence, factor)
    pairs = list(zip(*(learner.named_loss() + learner.named_gradients()
                       for learner in learners), strict=True))
    over = [not agrees(a, b, limit) for (_, a), (_, b) in pairs]  # NaN never agrees
    index = over.index(True) if any(over) else max(
        range(len(pairs)), key=lambda i: distance(pairs[i][0][1], pairs[i][1][1]))
    (name, a), (_, b) = pairs[index]
    share = around(learners[1].model, name).get("skip")
    fork = share is not None and a.shape == b.shape and fork_sentence(a, b, share, limit)
    if fork:
        return make(step, tensor_key("grad", name), "fork", fork)
    references = {}

    def rounding():
        references.update(references or float64_references(learners, x, y, independent))
        return rounding_sentence(learners, name, index, a, b, references, limit, independent)

    kind, factor, sentence = classify(a, b, limit, len(x), axes_of(name),
                                      rounding if a.dtype == torch.float32 else None,
                                      targets=y if name == "logits" else None,
                                      ties=around(learners[1].model, name).get("ties"))
    node = kind == "other" and first_wrong_node(learners, x, y, limit)
    culprit = kind == "other" and not node and responsible(learners[0], name, {
        named: went for ((named, _), _), went in zip(pairs, over, strict=True)})
    if node:  # no simpler pattern: the node whose backward is wrong, fed torch's gradient
        sentence = f"{node}."
    elif culprit:  # the function to look at, at least
        sentence = f"{culprit}; {sentence[0].lower()}{sentence[1:]}"
    return make(step, tensor_key("loss" if index == 0 else "grad", name), kind, sentence, factor)


def residual(a: torch.Tensor, model, index: int, limit: float) -> tuple[str, str] | None:
    """(kind, sentence) where manual's hidden output `index` (a) is a residual block's output
    under a known mistake ("block"), or a BatchNorm2d's normalized over other dimensions
    ("statistics"): lockstep.blocks; else None."""
    said = block_sentence(a, model, index, limit)
    if said:
        return "block", said
    said = statistics_sentence(a, model, index, limit)
    return ("statistics", said) if said else None


def around(model, name: str) -> dict:
    """What the tutor knows of the layers next to hidden output `name` of `model` (torch's,
    after its forward): {"ties": the tied maxima of a max pooling it is the input of},
    {"layout": (C, H, W) of the image a Flatten made it from}, {"skip": the skip's share of
    its gradient, dLoss/ds, where it is a residual block's input}, or {}."""
    names = hidden_names(model)
    if name not in names:
        return {}
    index, outputs = names.index(name), model.hidden_outputs
    share = skip_share(model, index)
    if share is not None:
        return {"skip": share}
    above = model.layers[index + 1]
    if type(above).__name__ == "MaxPool2d":
        return {"ties": tied_maxima(outputs[index].detach(), above.kernel_size, above.stride)}
    if type(model.layers[index]).__name__ == "Flatten" and index:
        return {"layout": tuple(outputs[index - 1].shape[1:])}
    return {}


# Within one step: the running statistics (forward), the loss and gradients, the parameters
# after the update, the optimizer state.
ORDER = ("buffer", "grad", "param", "state")


def first_of_epoch(found: dict | None, levels: dict, names: dict, learners: list[Learner],
                   limit: float, first_step: int, independent: bool) -> dict | None:
    """The first mismatch of the epoch: `found` (the loss or a gradient, diagnosed as it
    happened), unless a running statistic, a parameter after the update or an optimizer state
    tensor went over `limit` before it, in the order of the computation; then that one,
    diagnosed by of_update. levels: {group: (steps, tensors, 4)} as checks.levels; names: the
    tensors' names by group; the first step is numbered first_step."""
    first = None if found is None else (found["step"], ORDER.index("grad"))
    later = None
    for group in ("buffer", "param", "state"):
        over = ~(levels[group][..., REL] <= limit)  # NaN included
        if over.numel() and over.any():
            row = int(over.any(dim=1).nonzero()[0])
            candidate = (first_step + row, ORDER.index(group))
            if first is None or candidate < first:
                first = candidate
                later = (group, names[group][int(over[row].nonzero()[0])])
    if later is None:
        return found
    return of_update(first[0], *later, learners, limit, independent)
