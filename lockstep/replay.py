"""Replays: a step the manual code failed, on a copy that records what it assigns; an update
that went over the limit, from the same state on copies of both optimizers."""

from pathlib import Path

import torch

from lockstep.blocks import running_var_sentence
from lockstep.kinds import agrees, classify, distance, make, shape_sentence, tensor_key
from lockstep.learner import Learner
from lockstep.tracebacks import first_line, lies_in, place


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
    torch_learner = torch_learner.twin()  # a process's own gradients: no rank waits on it
    with torch.enable_grad():
        torch_learner.gradients(x, y)
    pairs = zip(probe.named_loss() + probe.named_gradients(),
                torch_learner.named_loss() + torch_learner.named_gradients(), strict=True)
    named = [(tensor_key("loss" if index == 0 else "grad", name), a, b)
             for index, ((name, a), (_, b)) in enumerate(pairs)]
    for tensor, a, b in named:  # what was set, in backward's order, of the wrong shape
        if a is not None and b is not None and a.shape != b.shape:
            where = place(error)  # where torch refused it: the line that assigned the .grad
            mine = where and lies_in(where.file, Path(probe.package.__file__).parent.resolve())
            at = f" At {where}." if mine else ""
            return make(step, tensor, "shape", shape_sentence(a, b, limit) + at)
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
    divisor = group == "buffer" and running_var_sentence(learners, name, limit)
    if divisor:
        return make(step, tensor, "statistics", divisor)
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
