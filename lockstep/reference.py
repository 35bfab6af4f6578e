"""The float64 reference: the same step computed again by torch in float64, to tell float32
rounding (both sides a few roundings from the exact math) from an error, and a ReLU gate
flipped by rounding from one flipped by a bug."""

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from lockstep.checks import REL, levels, named_stats, relu_gate_flips
from lockstep.kinds import distance
from lockstep.learner import Learner, hidden_kind
from lockstep.limits import DRIFTED, ROUNDING_DISTANCE, rounding_only


def float64_references(learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
                       independent: bool,
                       synchronized: bool = False) -> dict[str, list[torch.Tensor]]:
    """{name: [reference for manual, reference for torch]}: the loss and every gradient of this
    step computed by torch in float64, from torch's parameters, and (independent) from
    manual's own for manual. Named as manual names them. Each ReLU's gate and each max
    pooling's winners are torch's float32 forward's (decided): in float64 a ReLU input within
    rounding of 0 can fall on the other side, and move a max pooling's winner after it, a
    difference of a whole gradient entry that is not the float32 rounding asked about.
    synchronized: the twins keep SyncBatchNorm (a distributed run's, every rank alike)."""
    manual_learner, torch_learner = learners
    twins = [torch_learner.twin(torch.float64, synchronized)]
    if independent:
        twins.insert(0, torch_learner.twin(torch.float64))
        twins[0].copy_state_from(manual_learner)
    made = decisions(torch_learner, x, synchronized)
    with torch.enable_grad():
        for twin in twins:
            with decided(twin.model, made):
                twin.gradients(x.double(), y)
    names = [name for name, _ in manual_learner.named_loss() + manual_learner.named_gradients()]
    tensors = [[tensor for _, tensor in twin.named_loss() + twin.named_gradients()]
               for twin in twins]
    return {name: [tensors[0][i], tensors[-1][i]] for i, name in enumerate(names)}


@torch.no_grad()
def decisions(learner: Learner, x: torch.Tensor,
              synchronized: bool = False) -> dict[str, list[torch.Tensor]]:
    """{module name: per call, the ReLU's gate (input > 0) or the max pooling's winners} of
    learner's (torch_impl's) float32 forward on x, taken on a twin (its BatchNorm layers
    update their own running statistics)."""
    probe, found = learner.twin(synchronized=synchronized), {}

    def keep(name):
        def hook(module, args, output):
            found.setdefault(name, []).append(args[0] > 0 if isinstance(module, nn.ReLU) else
                                              F.max_pool2d(args[0], module.kernel_size,
                                                           module.stride, return_indices=True)[1])
        return hook

    handles = [module.register_forward_hook(keep(name))
               for name, module in probe.model.named_modules()
               if isinstance(module, (nn.ReLU, nn.MaxPool2d))]
    probe.model(probe.as_input(x))
    for handle in handles:
        handle.remove()
    return found


@contextlib.contextmanager
def decided(model, found: dict[str, list[torch.Tensor]]):
    """Within it, each ReLU and max pooling of model (torch_impl's, in float64) takes the
    decisions found (decisions): y = x gate, and y = x at the winners (gather)."""
    calls = {name: iter(each) for name, each in found.items()}

    def hook_of(name):
        def hook(module, args, output):
            made = next(calls[name])
            if isinstance(module, nn.ReLU):
                return args[0] * made
            return args[0].flatten(2).gather(2, made.flatten(2)).view_as(output)
        return hook

    handles = [module.register_forward_hook(hook_of(name))
               for name, module in model.named_modules() if name in calls]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def rounding_sentence(learners: list[Learner], name: str, index: int, a: torch.Tensor,
                      b: torch.Tensor, references: dict, limit: float,
                      independent: bool) -> str | None:
    """Why a and b differ by rounding only, or None if they do not.

    Drift is asked first where the parameters differ by more than rounding (more than
    DRIFTED, relative): a ReLU gate open on one side only is then open in float64 too, from
    each side's own parameters, one more consequence of the drift. Parameters a step's
    rounding apart make a tie a tie."""
    reference_a, reference_b = references[name]
    off_a, off_b = distance(a, reference_a), distance(b, reference_b)
    rounding = rounding_only(off_a, off_b)
    exact = distance(reference_a, reference_b)  # the exact math from each side's parameters
    drift = parameter_drift(learners) if independent and exact > limit and rounding else None
    if drift is not None and drift > DRIFTED:
        return drift_sentence(off_a, off_b, exact, drift)
    tie = relu_tie(learners, index)
    if tie is not None:
        return (f"not an error: a ReLU input within float32 rounding of 0 (at most "
                f"{tie:.0e} of the layer's largest output) was positive on one side only, so "
                "one side let its gradient through and the other did not. Each is right for "
                "its own rounding; in float64 such a tie is far rarer.")
    if drift is not None:
        return drift_sentence(off_a, off_b, exact, drift)
    if not rounding:
        return None
    size = reference_b.abs().amax().item()
    return (f"not an error: {float64_numbers(off_a, off_b)}, so both are float32 rounding of "
            f"the same math. The difference is large only next to the tensor itself, nearly 0 "
            f"here (largest entry {size:.1e}), as when a small batch is already classified "
            "well: a tiny result of much larger terms, whose rounding remains. --dtype "
            "float64 rounds about 5e8 times finer.")


def drift_sentence(off_a: float, off_b: float, exact: float, drift: float) -> str:
    return (f"not an error in either: {float64_numbers(off_a, off_b)}, each from its own "
            f"parameters. But from the two sides' parameters the exact math itself differs by "
            f"{exact:.1e}: the parameters have drifted apart (max rel diff {drift:.1e}) since "
            "step 1, which agreed. Unstable training (too large --lr for this --batch-size) "
            "amplifies rounding differences: try a smaller --lr.")


def float64_numbers(off_a: float, off_b: float) -> str:
    return (f"against a float64 computation of the same step, manual is off by {off_a:.1e} "
            f"and torch by {off_b:.1e} (relative to the largest entry)")


def relu_tie(learners: list[Learner], index: int) -> float | None:
    """The largest flipped ReLU input, relative to the layer's largest output, if a ReLU gate
    was open on one side only at this step, within rounding of 0, and the compared tensor
    number `index` (loss first, then the gradients) comes after that ReLU in backward; else
    None. With several ReLU layers (the CNN's), each one above the tensor is asked."""
    names = ["loss"] + [name for name, _ in learners[0].named_gradients()]
    for relu in [name for name in names[:index] if hidden_kind(name) == "relu"]:
        tie = one_relu_tie(learners, names, relu)
        if tie is not None:
            return tie
    return None


def one_relu_tie(learners: list[Learner], names: list[str], relu: str) -> float | None:
    """relu_tie for the ReLU layer whose output is `relu` ("hidden.relu", "hidden.relu.4")."""
    outputs = [dict(learner.named_hidden_outputs())[relu] for learner in learners]
    count, relative = relu_gate_flips(*outputs).tolist()
    if not count or relative > ROUNDING_DISTANCE["float32"]:
        return None
    # the gradient the ReLU passes on must differ nowhere else than at the flipped gates
    passed = names[names.index(relu) + 1]
    below = [dict(learner.named_gradients())[passed] for learner in learners]
    flipped = (outputs[0] > 0) != (outputs[1] > 0)
    elsewhere = (below[0] - below[1]).abs().masked_fill(flipped, 0).amax()
    return relative if elsewhere <= ROUNDING_DISTANCE["float32"] * below[1].abs().amax() else None


def parameter_drift(learners: list[Learner]) -> float:
    """The largest max|a - b| / max|b| over the parameters of the two learners."""
    return max(distance(a, b) for a, b in zip(*(learner.parameters() for learner in learners),
                                              strict=True))


@torch.no_grad()
def float64_errors(learners: list[Learner], x: torch.Tensor, y: torch.Tensor) -> dict:
    """How far each side's loss and gradients of this step are from torch's float64
    computation from the same parameters: {"manual": worst, "torch": worst, "tensors":
    {name: [manual's, torch's]}}, each max|side - float64| / max|float64|."""
    references = float64_references(learners, x, y, independent=False)
    named = [[tensor for _, tensor in learner.named_loss() + learner.named_gradients()]
             for learner in learners]
    tensors = {name: [distance(side[i], reference[1]) for side in named]
               for i, (name, reference) in enumerate(references.items())}
    worst = [max(errors[i] for errors in tensors.values()) for i in range(2)]
    return {"manual": worst[0], "torch": worst[1], "tensors": tensors}


@torch.no_grad()
def torch_rounding(step: int, learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
                   stats: torch.Tensor, limit: float,
                   references: dict | None = None) -> tuple[torch.Tensor, dict] | None:
    """A float32 step whose loss or gradients went over the limit, manual's against torch's,
    where manual's is within the limit of the exact math: (stats with each such tensor held
    against a float64 computation of the step instead of torch's float32 one, what was found:
    {"step", "tensors": {name: [manual's distance from float64, torch's]}}), or None where
    some tensor over the limit is further than the limit from float64 on manual's side too.

    A long sum that nearly cancels (a convolution's weight gradient under BatchNorm2d: 19,600
    products a weight at 14 x 14, batch 100, adding to almost 0 late in training) keeps
    float32's rounding of its terms: torch's kernel was measured 2.2e-4 from float64 where
    manual's order of the same sum was 3.0e-5, and at another step 9.2e-5 and 1.7e-5, their
    difference 1.2e-4. Manual is then held to the exact math, at the same limit. stats (T, 3):
    the loss and the gradients, manual's against torch's, the manual learner holding torch's
    state. references: float64_references's, where the caller has them (a distributed run's,
    its parameters' gradients all-reduced: lockstep.ranks)."""
    names = [name for name, _ in learners[0].named_loss() + learners[0].named_gradients()]
    sides = [[t for _, t in learner.named_loss() + learner.named_gradients()]
             for learner in learners]
    over = (~(levels(stats, stats.dtype)[:, REL] <= limit)).nonzero().flatten().tolist()
    references = references or float64_references(learners, x, y, independent=False)
    held, found = stats.clone(), {}
    for index in over:
        reference = references[names[index]][1]
        off = [distance(side[index], reference) for side in sides]
        if not off[0] <= limit:
            return None
        found[names[index]] = off
        held[index] = named_stats([("", sides[0][index].double())],
                                  [("", reference)])[0].to(stats.dtype)
    return (held, {"step": step, "tensors": found}) if found else None
