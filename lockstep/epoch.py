"""One epoch of the lock step: both learners on the same batches, every step checked.

Each step queues a few reductions per compared tensor on the device (lockstep.checks) and
reads one number back; the tutor (lockstep.diagnosis) looks at the tensors only once one went
over the limit. A step that cannot even be compared stops the run (Mismatch), and so does a
loss that is NaN or infinite on both sides (Diverged).
"""

import torch

from lockstep import diagnosis, limits, replay
from lockstep.checks import ShapeMismatch, exceeds, levels, named_stats, relu_gate_flips
from lockstep.kinds import make
from lockstep.learner import Learner, hidden_kind
from lockstep.reference import float64_errors, torch_rounding
from lockstep.worst import WorstStep


class Diverged(Exception):
    """The loss became NaN or infinite."""


class Mismatch(Exception):
    """A step could not even be compared: tensors of different shapes, the manual forward /
    backward failed where torch's ran (the error is its __cause__), or one side's loss is NaN
    or infinite. Carries the diagnosis (lockstep.diagnosis)."""

    def __init__(self, found: dict, first: dict | None = None):
        super().__init__(found["message"])
        self.diagnosis = first or found  # the first mismatch of the epoch, should it be earlier


# What the lock step compares, by report key: (what to call it, a learner's named tensors).
# The loss and the gradients before the update, the others after it.
COMPARED = {"loss": ("loss", Learner.named_loss),
            "grad": ("gradient", Learner.named_gradients),
            "param": ("parameter", Learner.named_parameters),
            "buffer": ("buffer", Learner.named_buffers),
            "state": ("optimizer state", Learner.named_optimizer_state)}


def train_epoch_lockstep(learners: list[Learner], epoch_batches, progress,
                         independent: bool = False, first_step: int = 1,
                         diagnose: bool = True, stop: bool = False, ranks=None) -> dict:
    """One epoch of both learners on the same batches, checking every step.

    Before each step, the manual learner takes over torch's parameters, running
    statistics and optimizer state: rounding makes the two differ in the last bits, and in
    float32 a ReLU whose input lies within rounding of 0 can then let a gradient
    through on one side only, after which two MLPs drift apart for good. So every
    step is checked from the same state. Once its gradients are compared, the manual
    learner also takes over torch's, so that the update is checked on its own: Adam
    divides each entry by that entry's own running scale, so an entry whose gradient is
    all rounding (3e-9, where the largest is 1.5e-2) would move by 16 % more on one side.
    independent=True skips both copies.

    Returns the mean loss of each learner and, per step, the agreement levels
    (checks.levels) of the loss and the named gradients (backward's order), then, after the
    update, of the parameters, the running statistics and the optimizer's state tensors:
    "stats"[which] (steps, tensors, 4) and "names"[which], which in COMPARED. Each step only
    queues a few reductions on the device and reads one number back: whether the loss or a
    gradient went over the limit (or the loss is not finite). The levels are worked out once,
    at the end of the epoch. "worst": both first-layer weight gradients at the step where they
    differed most (lockstep.worst), for weights.png.

    "gate_flips" (steps, 2): the ReLU gates open on one side only (checks.relu_gate_flips) at
    each step whose loss or gradients went over the limit, zeros at the others: a pass over
    both ReLU outputs costs about 7 % of a ResNet's step.

    A step over the limit where manual's float32 result is within the limit of the exact math
    holds manual to a float64 computation of the step instead of torch's float32 one, at the
    same limit (reference.torch_rounding); "torch_rounding" lists those steps.

    diagnose: find where the first mismatch starts ("diagnosis", lockstep.diagnosis; steps are
    numbered from first_step) and, in float32, how far each side's step 1 is from float64
    ("reference"); the detail is computed only once a tensor went over the limit.

    stop: raise Mismatch, with its diagnosis, at the first step where a tensor went over the
    limit (compare.py --manual), instead of training the epoch to its end. That costs one
    more host sync a step, for the tensors compared after the update.

    ranks: this process is one rank of a distributed run (lockstep.ranks.Ranks): its checks
    across ranks run after the gradients and after the update, its tutor diagnoses a step
    over the limit, and a float32 step over it is held to float64 by every rank together
    (Ranks.rounding: a twin's gradients are its rank's alone, all-reduced there). The
    float64 report of step 1 is not made.
    """
    manual_learner, torch_learner = learners
    dtype = learners[0].parameters()[0].dtype
    limit = limits.limit(dtype)
    losses, gate_flips, found, reference, torch_off = [], [], None, None, []
    worst = WorstStep()  # the first layer's weight gradients where they differ most
    stats = {which: [] for which in COMPARED}
    for step, (x, y) in enumerate(epoch_batches, start=first_step):
        if not independent:
            manual_learner.copy_state_from(torch_learner)  # a no-op where they agree to the bit
        try:
            manual_learner.gradients(x, y)
        except Exception as error:  # e.g. a .grad of the wrong shape, refused by torch
            if ranks and ranks.lost(error):  # another rank stopped: no mismatch of manual's
                raise
            raise Mismatch(replay.of_failure(step, learners, x, y, error, limit),
                           found) from error  # compare.py: an exercise not written yet?
        torch_learner.gradients(x, y)
        if ranks:
            ranks.after_gradients(step)
        gradients = [learner.named_gradients() for learner in learners]
        try:
            before = named_stats(*(learner.named_loss() + named
                                   for learner, named in zip(learners, gradients, strict=True)))
        except ShapeMismatch as error:  # e.g. a .grad never set
            raise Mismatch(replay.of_failure(step, learners, x, y, error, limit),
                           found) from None
        losses.append(torch.stack([manual_learner.loss, torch_learner.loss]))
        over = exceeds(before, limit)  # the one host sync of the step: NaN and inf count too
        # detail, asked only where a tensor went over: ReLU gates open on one side only
        gate_flips.append(relu_flips(learners) if over else x.new_zeros(2, dtype=dtype))
        if ranks:  # every rank takes part, over the limit or not: float64 all-reduced
            excused = ranks.rounding(step, learners, x, y, before, over, limit)
        else:
            excused = over and not independent and dtype == torch.float32 and \
                torch_rounding(step, learners, x, y, before, limit)
        if excused:  # rounding: manual is within the limit of the exact math there
            before = excused[0]
            torch_off.append(excused[1])
            over = exceeds(before, limit)
        stats["loss"].append(before[:1])
        stats["grad"].append(before[1:])
        if over:
            found = over_the_limit(step, learners, x, y, losses[-1], limit, found, diagnose,
                                   independent, ranks and ranks.tutor)
            if stop and found:
                raise Mismatch(found)
        worst.update(step, before[1:], *gradients)
        if diagnose and step == 1 and dtype == torch.float32 and not ranks:
            reference = float64_errors(learners, x, y)
        if not independent:  # the update is checked on the same gradients, see above
            manual_learner.copy_gradients_from(torch_learner)
        for learner in learners:
            learner.step()  # the optimizer's, then the learning-rate schedule's
        if ranks:
            ranks.after_update(step)
        for which in AFTER:
            stats[which].append(compared(step, *COMPARED[which], learners, found))
        if stop and exceeds(torch.cat([stats[which][-1] for which in AFTER
                                       if stats[which][-1].numel()]), limit):
            _, now = first_of(stats, found, learners, limit, first_step, independent)
            raise Mismatch(now or make(step, "update", "other", (
                "the parameters, running statistics or optimizer state went over the limit "
                "at the limit's edge.")))
        progress.update()
    names = named_in(manual_learner)
    stats, found = first_of(stats, found, learners, limit, first_step, independent,
                            diagnose and not (ranks and found))  # the tutor's, across ranks
    return {"loss": torch.stack(losses).double().mean(dim=0).tolist(), "names": names,
            "stats": stats, "gate_flips": torch.stack(gate_flips).double().cpu(),
            "diagnosis": found, "reference": reference, "worst": worst.found(),
            "torch_rounding": torch_off}


AFTER = ("param", "buffer", "state")  # compared after the update


def named_in(learner: Learner) -> dict[str, list[str]]:
    """The names of the tensors compared, by report key (COMPARED)."""
    return {which: [name for name, _ in named(learner)] for which, (_, named) in COMPARED.items()}


def first_of(stats: dict, found: dict | None, learners: list[Learner], limit: float,
             first_step: int, independent: bool,
             diagnose: bool = True) -> tuple[dict, dict | None]:
    """(the levels, the first mismatch) of the steps so far: stats, {which: [(tensors, 3)
    per step]}, become checks.levels (steps, tensors, 4) on the CPU, and the first mismatch is
    `found` (the loss or a gradient), unless the update or the running statistics went over
    the limit before it (diagnosis.first_of_epoch, which replays an update). diagnose=False:
    `found` as it is."""
    dtype = learners[0].parameters()[0].dtype
    stats = {which: levels(torch.stack(steps), dtype).cpu() for which, steps in stats.items()}
    if not diagnose:
        return stats, found
    return stats, diagnosis.first_of_epoch(found, stats, named_in(learners[0]), learners,
                                           limit, first_step, independent)


def over_the_limit(step: int, learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
                   loss: torch.Tensor, limit: float, found: dict | None, diagnose: bool,
                   independent: bool, tutor=None) -> dict | None:
    """A step whose loss or gradients went over the limit. Both losses (loss: (2,)) NaN or
    infinite: training diverged (raises Diverged). Otherwise its diagnosis, unless the epoch
    already has one (found) or diagnose is off; and a loss NaN or infinite on one side only
    is a mismatch that stops the run (raises Mismatch), whatever found. tutor: in place of
    diagnosis.of_gradients, with its arguments (a distributed run's, lockstep.ranks)."""
    finite = torch.isfinite(loss)
    if not finite.any():
        raise Diverged(f"step {step}: loss {loss.tolist()}")
    if (found is None and diagnose) or not finite.all():
        now = (tutor or diagnosis.of_gradients)(step, learners, x, y, limit, independent)
        if not finite.all():
            raise Mismatch(now, found)
        found = found or now
    return found


def relu_flips(learners: list[Learner]) -> torch.Tensor:
    """(2,): checks.relu_gate_flips of the two models' ReLU outputs (the worst, should there
    be several ReLU layers); zeros for a model without ReLU."""
    pairs = zip(*(learner.named_hidden_outputs() for learner in learners), strict=True)
    flips = [relu_gate_flips(m, t) for (name, m), (_, t) in pairs if hidden_kind(name) == "relu"]
    return torch.stack(flips).amax(dim=0) if flips else torch.zeros(2)


def compared(step: int, what: str, named, learners: list[Learner],
             found: dict | None = None) -> torch.Tensor:
    """(tensors, 3): checks.named_stats of named(manual) against named(torch); tensors of
    different shapes stop the run as a Mismatch (they must never pass by broadcasting)."""
    try:
        return named_stats(*(named(learner) for learner in learners))
    except ShapeMismatch as error:
        raise Mismatch(make(step, what, "shape", f"manual's {what} holds {error}."),
                       found) from None
