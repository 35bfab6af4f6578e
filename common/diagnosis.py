"""The tutor: where a mismatch starts, what kind it is, and why float32 is close but not equal.

compare.py checks every step with a few numbers per tensor (checks.difference_stats). Only
once a tensor goes over its limit does this module look at the tensors themselves, once: it
names the first that differs, in the order the computation runs, and says how it differs.

The order: the running statistics (BatchNorm1d updates them in the forward pass), the loss,
dLoss/dlogits, each layer's gradients from the top layer down (its parameters', then
dLoss/d(its input)), each parameter after the update, the optimizer state.

The kinds, tried in this order, for manual's tensor a against torch's b:
    shape       the shapes differ (or a is missing); is a.T, or a reshape of a, equal to b?
    non-finite  NaN or inf on one side only
    rounding    float32 only: both within float32 rounding of a float64 computation of the
                same step (report.rounding_only), or a ReLU
                input within rounding of 0 let the gradient through on one side only
    scale       a = k b for one constant k (k = N, the batch size; 1/N; -1, the sign)
    partial     only some rows, columns or entries differ
    other
A diagnosis is {"step", "tensor", "kind", "factor", "message"}; factor is k for scale.
"""

from pathlib import Path

import torch

from common.checks import agreement, relu_gate_flips, shape_of
from common.report import REL, ROUNDING_DISTANCE, rounding_only
from common.tracebacks import first_line, place
from common.training import Learner

KINDS = ("shape", "scale", "non-finite", "partial", "rounding", "other")
SCALE_FIT = 1e-3  # a = k b: every entry within this fraction of the largest


def make(step: int, tensor: str, kind: str, sentence: str, factor: float | None = None) -> dict:
    """A diagnosis: the step, the tensor, the kind, the factor (scale only), and the
    message a learner reads."""
    return {"step": step, "tensor": tensor, "kind": kind, "factor": factor,
            "message": f"step {step}, {label(tensor)} differs first ({kind}): {sentence}"}


def label(tensor: str) -> str:
    """How a learner calls a compared tensor: "logits.grad" -> "dLoss/dlogits (logits.grad)"."""
    if tensor == "logits.grad":
        return "dLoss/dlogits (logits.grad)"
    if tensor.startswith("hidden.") and tensor.endswith(".grad"):
        return (f"dLoss/d({tensor.removesuffix('.grad')}), the hidden layer's output gradient "
                "(what the backward of the layer above it returns)")
    return tensor


# -- the kinds ------------------------------------------------------------------------------

@torch.no_grad()
def classify(a: torch.Tensor | None, b: torch.Tensor | None, limit: float, batch_size: int,
             axes: tuple[str, str] = ("row", "column"),
             rounding=None) -> tuple[str, float | None, str]:
    """(kind, factor, sentence) for manual's a against torch's b, which differ by more than
    `limit` (max|a - b| / max|b|). rounding: None, or a function of no arguments that returns
    the rounding sentence when the difference is float32 rounding, else None."""
    if a is None or b is None or a.shape != b.shape:
        return "shape", None, shape_sentence(a, b, limit)
    a, b = a.double(), b.double()
    one_side = a.isfinite() != b.isfinite()
    if one_side.any():
        return "non-finite", None, non_finite_sentence(a, b, one_side)
    if not a.isfinite().all() and agrees(a.nan_to_num(0.0, 0.0, 0.0),
                                         b.nan_to_num(0.0, 0.0, 0.0), limit):
        return "non-finite", None, "both sides are NaN or infinite at the same entries."
    sentence = rounding() if rounding else None
    if sentence:
        return "rounding", None, sentence
    a, b = a.nan_to_num(0.0, 0.0, 0.0), b.nan_to_num(0.0, 0.0, 0.0)  # both non-finite: alike
    if a.dim() == 2 and a.shape[0] == a.shape[1] and agrees(a.T, b, limit):
        return "shape", None, ("manual's transposed (a.T) equals torch's; the shapes agree only "
                               "because the matrix is square: the product is taken in the "
                               "wrong order.")
    factor = constant_factor(a, b, limit)
    if factor is not None:
        return "scale", *scale_sentence(factor, batch_size)
    differ = (a - b).abs() > limit * b.abs().amax()
    active = (a != 0) | (b != 0)  # entries that are 0 on both sides prove nothing
    sentence = partial_sentence(differ, active, axes)
    if sentence:
        return "partial", None, sentence
    return "other", None, ("no simple pattern: not a transpose, not a constant factor, not a "
                           f"few entries; max|manual - torch| / max|torch| = {distance(a, b):.1e}.")


def constant_factor(a: torch.Tensor, b: torch.Tensor, limit: float) -> float | None:
    """k when a = k b entry by entry (least squares, every entry within SCALE_FIT of the
    largest) and k is not 1 within `limit`; else None."""
    size = (b * b).sum()
    if size == 0:
        return None
    k = ((a * b).sum() / size).item()
    residual = (a - k * b).abs().amax()  # what k b leaves: small against a, and against k - 1
    fits = residual <= SCALE_FIT * a.abs().amax() and residual <= 0.1 * abs(k - 1) * b.abs().amax()
    return k if fits and abs(k - 1) > limit else None


def scale_sentence(k: float, batch_size: int) -> tuple[float, str]:
    """(the factor, the sentence) for a = k b: k = N, 1/N and -1 are named, and given exactly;
    any other k to 6 significant digits."""
    if batch_size > 1 and abs(k / batch_size - 1) < SCALE_FIT:
        return float(batch_size), (
            f"manual's is {batch_size} x torch's, the batch size N = {batch_size}: did you "
            "forget to divide by the batch size?")
    if batch_size > 1 and abs(k * batch_size - 1) < SCALE_FIT:
        return 1 / batch_size, (
            f"manual's is 1/{batch_size} of torch's, 1/N for the batch size N = {batch_size}: "
            "did you divide by the batch size where torch sums (a mean instead of a sum)?")
    if abs(k + 1) < SCALE_FIT:
        return -1.0, "manual's is -1 x torch's: the sign is flipped."
    if k == 0:
        return 0.0, "manual's is all zeros where torch's is not: was it ever computed?"
    k = float(f"{k:.6g}")
    return k, f"manual's is {k:.6g} x torch's: off by a constant factor of {k:.6g}."


def shape_sentence(a: torch.Tensor | None, b: torch.Tensor | None, limit: float) -> str:
    if a is None or b is None:
        which, shape = ("manual", b) if a is None else ("torch", a)
        return f"{which}'s was never set (None); the other's is {shape_of(shape)}."
    start = f"manual's is {shape_of(a)}, torch's {shape_of(b)}"
    if a.dim() == 2 and a.T.shape == b.shape and agrees(a.T, b, limit):
        return (f"{start}, and manual's transposed (a.T) equals torch's: the product is "
                "taken in the wrong order (x^T g where g^T x belongs?).")
    if a.numel() == b.numel() and agrees(a.reshape(b.shape), b, limit):
        return (f"{start}, and manual's reshaped to {shape_of(b)} equals torch's: a stray "
                "dimension (keepdim=True?).")
    return f"{start}; neither manual's transposed nor a reshape of it equals torch's."


def agrees(a: torch.Tensor, b: torch.Tensor, limit: float) -> bool:
    """max|a - b| <= limit max|b|: the verdict's test."""
    return bool((a.double() - b.double()).abs().amax() <= limit * b.double().abs().amax())


def non_finite_sentence(a: torch.Tensor, b: torch.Tensor, one_side: torch.Tensor) -> str:
    side, values = ("manual", a) if (~a.isfinite() & one_side).any() else ("torch", b)
    entries = (one_side & ~values.isfinite()).nonzero()
    nans = int(values[one_side].isnan().sum())
    what = "NaN" if nans == len(entries) else "inf" if nans == 0 else "NaN or inf"
    if values.dim() == 0:
        return f"{side}'s is {what} where the other side's is finite."
    return (f"{side}'s has {len(entries)} {what} entr{'y' if len(entries) == 1 else 'ies'} "
            f"(the first at {entries[0].tolist()}) where the other side's is finite.")


def partial_sentence(differ: torch.Tensor, active: torch.Tensor,
                     axes: tuple[str, str]) -> str | None:
    """Which rows or columns differ, when only some of those with a nonzero entry do; or which
    entries, when fewer than half of the nonzero ones do; else None (not partial)."""
    if differ.dim() == 2:
        for dim, axis in ((1, axes[0]), (0, axes[1])):
            lines, nonzero = differ.any(dim=dim), active.any(dim=dim)
            if (nonzero & ~lines).any():
                return (f"only some {axis}s differ: {listed(lines.nonzero().flatten())} "
                        f"({int(lines.sum())} of the {int(nonzero.sum())} with a nonzero "
                        "entry).")
    if int(differ.sum()) * 2 < int(active.sum()):
        return (f"only some entries differ: {int(differ.sum())} of the {int(active.sum())} "
                f"nonzero ones, at {listed(differ.nonzero())}.")
    return None


def listed(indices: torch.Tensor, most: int = 5) -> str:
    shown = [str(index.tolist()) for index in indices[:most]]
    return ", ".join(shown) + (", ..." if len(indices) > most else "")


# -- the gradient phase, diagnosed as it happens ----------------------------------------------

def tensor_key(group: str, name: str) -> str:
    """The diagnosis's name of a compared tensor: gradients get ".grad"."""
    return f"{name}.grad" if group == "grad" else name


def axes_of(name: str) -> tuple[str, str]:
    """What the rows and columns of a compared gradient are, for partial_sentence."""
    if name == "logits":
        return "example (row)", "class (column)"
    if name.startswith("hidden."):
        return "example (row)", "unit (column)"
    return "row", "column"


@torch.no_grad()
def of_gradients(step: int, learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
                 limit: float, independent: bool) -> dict:
    """The first of the loss, dLoss/dlogits and the gradients (backward's order) that is over
    `limit` at this step (should none be, at the limit's edge: the furthest apart), and its
    kind. Called right after both backward passes, before the update, so the parameters are
    still those the step started from."""
    pairs = list(zip(*(learner.named_loss() + learner.named_gradients()
                       for learner in learners), strict=True))
    over = [not agrees(a, b, limit) for (_, a), (_, b) in pairs]  # NaN never agrees
    index = over.index(True) if any(over) else max(
        range(len(pairs)), key=lambda i: distance(pairs[i][0][1], pairs[i][1][1]))
    (name, a), (_, b) = pairs[index]
    references = {}

    def rounding():
        references.update(references or float64_references(learners, x, y, independent))
        return rounding_sentence(learners, name, index, a, b, references, limit, independent)

    kind, factor, sentence = classify(a, b, limit, len(x), axes_of(name),
                                      rounding if a.dtype == torch.float32 else None)
    return make(step, tensor_key("loss" if index == 0 else "grad", name), kind, sentence, factor)


def float64_references(learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
                       independent: bool) -> dict[str, list[torch.Tensor]]:
    """{name: [reference for manual, reference for torch]}: the loss and every gradient of this
    step computed by torch in float64, from torch's parameters, and (independent) from
    manual's own for manual. Named as manual names them."""
    manual_learner, torch_learner = learners
    twins = [torch_learner.twin(torch.float64)]
    if independent:
        twins.insert(0, torch_learner.twin(torch.float64))
        twins[0].copy_state_from(manual_learner)
    with torch.enable_grad():
        for twin in twins:
            twin.gradients(x.double(), y)
    names = [name for name, _ in manual_learner.named_loss() + manual_learner.named_gradients()]
    tensors = [[tensor for _, tensor in twin.named_loss() + twin.named_gradients()]
               for twin in twins]
    return {name: [tensors[0][i], tensors[-1][i]] for i, name in enumerate(names)}


def distance(side: torch.Tensor, reference: torch.Tensor) -> float:
    """max|side - reference| / max|reference| (0 when both are all zeros), in reference's
    dtype: checks.agreement's relative difference."""
    return agreement("", side.to(reference.dtype), reference).max_rel_diff


def rounding_sentence(learners: list[Learner], name: str, index: int, a: torch.Tensor,
                      b: torch.Tensor, references: dict, limit: float,
                      independent: bool) -> str | None:
    """Why a and b differ by rounding only, or None if they do not."""
    tie = relu_tie(learners, index)
    if tie is not None:
        return (f"not an error: a ReLU input within float32 rounding of 0 (at most "
                f"{tie:.0e} of the layer's largest output) was positive on one side only, so "
                "one side let its gradient through and the other did not. Each is right for "
                "its own rounding; in float64 such a tie is far rarer.")
    reference_a, reference_b = references[name]
    off_a, off_b = distance(a, reference_a), distance(b, reference_b)
    if not rounding_only(off_a, off_b):
        return None
    numbers = (f"against a float64 computation of the same step, manual is off by {off_a:.1e} "
               f"and torch by {off_b:.1e} (relative to the largest entry)")
    exact = distance(reference_a, reference_b)  # the exact math from each side's parameters
    if independent and exact > limit:
        return (f"not an error in either: {numbers}, each from its own parameters. But from "
                f"the two sides' parameters the exact math itself differs by {exact:.1e}: the "
                f"parameters have drifted apart (max rel diff {parameter_drift(learners):.1e}) "
                "since step 1, which agreed. Unstable training (too large --lr for this "
                "--batch-size) amplifies rounding differences: try a smaller --lr.")
    size = reference_b.abs().amax().item()
    return (f"not an error: {numbers}, so both are float32 rounding of the same math. The "
            f"difference is large only next to the tensor itself, nearly 0 here (largest "
            f"entry {size:.1e}), as when a small batch is already classified well: a tiny "
            "result of much larger terms, whose rounding remains. --dtype float64 rounds "
            "about 5e8 times finer.")


def relu_tie(learners: list[Learner], index: int) -> float | None:
    """The largest flipped ReLU input, relative to the layer's largest output, if a ReLU gate
    was open on one side only at this step, within rounding of 0, and the compared tensor
    number `index` (loss first, then the gradients) comes after the ReLU in backward; else
    None."""
    names = ["loss"] + [name for name, _ in learners[0].named_gradients()]
    if "hidden.relu" not in names or index <= names.index("hidden.relu"):
        return None
    outputs = [dict(learner.named_hidden_outputs())["hidden.relu"] for learner in learners]
    count, relative = relu_gate_flips(*outputs).tolist()
    if not count or relative > ROUNDING_DISTANCE["float32"]:
        return None
    # the gradient the ReLU passes on must differ nowhere else than at the flipped gates
    passed = names[names.index("hidden.relu") + 1]
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


# -- a step that could not even be compared ---------------------------------------------------

class Recorder(torch.Tensor):
    """A parameter that keeps whatever is assigned to its .grad, whatever its shape (torch
    refuses a .grad of the wrong shape): for replaying a failed manual backward."""

    @property
    def grad(self):
        return self.__dict__.get("assigned")

    @grad.setter
    def grad(self, value):
        self.__dict__["assigned"] = value


@torch.no_grad()
def of_failure(step: int, learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
               error: Exception, limit: float) -> dict:
    """The manual forward / backward raised `error`, or left a tensor of the wrong shape:
    replay the step on a copy of the manual learner whose parameters record what is assigned
    to their .grad, and name the first tensor, in backward's order, that is missing or whose
    shape differs from torch's. Missing because the replay failed before it: the error."""
    manual_learner, torch_learner = learners
    probe = manual_learner.twin()
    for owner in getattr(probe.model, "layers", [probe.model]):
        for name, param in owner.named_parameters():
            setattr(owner, name, param.as_subclass(Recorder))
    probe.loss = probe.last_logits = None
    failed = None
    try:
        probe.gradients(x, y)
    except Exception as again:  # any error of the manual code is the learner's to see
        failed = again
    with torch.enable_grad():
        torch_learner.gradients(x, y)
    pairs = zip(probe.named_loss() + probe.named_gradients(),
                torch_learner.named_loss() + torch_learner.named_gradients(), strict=True)
    named = [(tensor_key("loss" if index == 0 else "grad", name), a, b)
             for index, ((name, a), (_, b)) in enumerate(pairs)]
    for tensor, a, b in named:  # what was set, in backward's order, of the wrong shape
        if a is not None and b is not None and a.shape != b.shape:
            return make(step, tensor, "shape", shape_sentence(a, b, limit))
    if failed is not None:
        where = place(failed, Path(probe.package.__file__).parent)
        return make(step, unreached(named, where.function if where else ""), "other", (
            f"the manual code failed before computing it: {raised(failed, probe)}"))
    for tensor, a, b in named:
        if a is None or b is None:
            return make(step, tensor, "shape", shape_sentence(a, b, limit))
    return make(step, "loss", "other", (
        f"the manual forward / backward failed: {raised(error, manual_learner)}"))


def unreached(named: list[tuple[str, torch.Tensor | None, torch.Tensor | None]],
              function: str) -> str:
    """The first tensor a failed replay did not set, given the function that failed
    ("Linear.backward"). The loss and dLoss/dlogits (named[:2]) are kept only once the whole
    backward has returned: a failure in a layer's backward comes after both, so it names the
    first gradient after those it set; one in cross_entropy_grad, dLoss/dlogits; else the loss."""
    gradients, name = named[2:], function.rpartition(".")[2]
    if name == "backward" or any(a is not None for _, a, _ in gradients):
        return next((tensor for tensor, a, _ in gradients if a is None), "loss")
    return named[1][0] if name == "cross_entropy_grad" else "loss"


def raised(error: Exception, learner: Learner) -> str:
    """'TypeError (at DIR/functional.py line 23, in softmax): ...': the error, and where in the
    learner's package it was raised."""
    where = place(error, Path(learner.package.__file__).parent)
    at = f" (at {where})" if where else ""
    return f"{type(error).__name__}{at}: {first_line(error)}"


# -- the update and the running statistics, found at the end of the epoch ---------------------

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


# -- the update, replayed once it went over ---------------------------------------------------

@torch.no_grad()
def of_update(step: int, group: str, name: str, learners: list[Learner], limit: float,
              independent: bool) -> dict:
    """The parameters after the update (group "param"), the running statistics ("buffer") or
    the optimizer state ("state") first went over `limit` at this step, at tensor `name`.

    By now both learners have moved on, so the update is replayed: copies of both optimizers
    take one step from torch's current parameters and state with torch's last gradients, and
    manual's change of each parameter is held against torch's (the state, as it is after).
    The running statistics are compared as they are now."""
    if group == "buffer":
        a, b = (dict(learner.named_buffers())[name] for learner in learners)
        what = name
    else:
        a, b = replayed_update(learners, group, name)
        what = f"update of {name} (after - before)" if group == "param" else name
    tensor = f"{name} after the update" if group == "param" else name
    rates = [learner.lr() for learner in learners]
    if group != "buffer" and abs(rates[0] - rates[1]) > limit * abs(rates[1]):
        return make(step, tensor, "other", (
            f"the learning rates differ: manual's is now {rates[0]:.6g}, torch's {rates[1]:.6g}"
            " (the learning-rate schedule?)."))
    if agrees(a, b, limit) and a.isfinite().all() == b.isfinite().all():
        return agreeing_replay(step, tensor, group, what, a, b, learners, independent)
    kind, factor, sentence = classify(a, b, limit, batch_size=0)
    sentence = sentence.replace("manual's", f"manual's {what}", 1)
    return make(step, tensor, kind, sentence, factor)


def agreeing_replay(step: int, tensor: str, group: str, what: str, a: torch.Tensor,
                    b: torch.Tensor, learners: list[Learner], independent: bool) -> dict:
    """What it means that `tensor` went over the limit at `step` though, replayed (or, the
    running statistics, looked at now), manual's and torch's agree: --independent, within
    rounding, the learners drifted apart (or, at step 1, the update magnified the gradients'
    rounding); else the difference depended on the step."""
    rounding = 10 * torch.finfo(b.dtype).eps  # relative: a few roundings of one update
    if independent and group != "buffer" and agrees(a, b, rounding):
        if step == 1:
            adam = any(key.endswith(".exp_avg_sq") for key, _ in
                       learners[1].named_optimizer_state())
            why = (": Adam divides each entry by its own running scale, so an entry whose "
                   "gradient is all rounding moves differently on each side" if adam else "")
            return make(step, tensor, "rounding", (
                "not an error in either: replayed from the same state with the same gradients, "
                f"the two updates agree to rounding, so the update magnified the rounding "
                f"differences of the gradients{why}. Without --independent each update is "
                "checked on torch's gradients."))
        return make(step, tensor, "rounding", (
            "not an error in either: step 1 agreed, and replayed from the same state the two "
            "updates agree to rounding, so the parameters drifted apart step by step, from "
            "rounding. Unstable training (too large --lr for this --batch-size) amplifies "
            "such differences: try a smaller --lr."))
    looked = "looked at after the epoch" if group == "buffer" else "replayed from torch's state"
    return make(step, tensor, "other", (
        f"it went over the limit at step {step}, but {what}, {looked}, agrees within "
        f"{distance(a, b):.1e}: "
        "the difference depends on the step (or accumulated over steps)."))


def replayed_update(learners: list[Learner], group: str, name: str) -> list[torch.Tensor]:
    """[manual's, torch's]: one optimizer step of copies of both, from torch's parameters,
    state and gradients: each parameter's change (group "param") or the state tensor
    `name` after the step (group "state")."""
    manual_learner, torch_learner = learners
    probes = [manual_learner.twin(), torch_learner.twin()]
    probes[0].copy_state_from(torch_learner)
    probes[0].copy_gradients_from(torch_learner)
    before = [param.clone() for param in probes[1].parameters()]
    for probe in probes:
        probe.optimizer.step()
    if group == "param":
        position = [key for key, _ in probes[0].named_parameters()].index(name)
        return [probe.parameters()[position] - before[position] for probe in probes]
    return [dict(probe.named_optimizer_state())[name] for probe in probes]
