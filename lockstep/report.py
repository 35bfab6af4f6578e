"""What compare.py measured: per-epoch history, the verdict, the final table, report.json.

Gradient, parameter, buffer and optimizer-state stats come as tensors (steps, tensors, 4)
with the columns of checks.levels: max abs diff, max rel diff, identical, close. Each
tensor compared is named. The gradients: each parameter's ("weight", "layers.0.weight",
...), then each hidden output's ("hidden.relu", ...); the buffers are BatchNorm1d's running
statistics; the optimizer's state is named by parameter and torch's key
("weight.momentum_buffer", "layers.0.weight.exp_avg", ...).
"""

import argparse
import json
import time
from pathlib import Path

import torch

from common.data import Splits
from lockstep import overflow
from lockstep.checks import ABS, CLOSE, IDENTICAL, REL
from lockstep.learning import alone_did_not_learn, not_learning
from lockstep.limits import (
    FLOAT32_EPS,
    MAX_ACCURACY_GAP,
    MAX_GRAD_REL_DIFF,
    MIN_PREDICTION_AGREEMENT,
    ROUNDING_SLACK,
    WITHIN_THE_LIMIT_TOO,
    rounding_only,
)

NAMES = ("manual", "torch")  # the report's names for the manual and torch_impl learners


class History:
    """Per-epoch losses and accuracies of both learners, and every step's difference stats."""

    def __init__(self, independent: bool = False, initial_loss: list[float] | None = None):
        self.independent = independent  # else the manual learner takes torch's state each step
        self.initial_loss = initial_loss  # both validation losses before training, if measured
        self.train_loss = {name: [] for name in NAMES}
        self.val_accuracy = {name: [] for name in NAMES}
        self.val_loss = {name: [] for name in NAMES}
        self.stats = {"loss": [], "grad": [], "param": [], "buffer": [], "state": [], "gate": []}
        self.names = {which: [] for which in self.stats}  # of the tensors compared
        self.diagnosis = None  # where the first mismatch starts (lockstep.diagnosis), if any
        self.worst = None  # the first layer's weight gradients at their worst step (worst.py)
        self.reference = None  # float32: step 1 against float64 (reference.float64_errors)
        self.torch_rounding = []  # steps manual was held to float64 (reference.torch_rounding)

    @property
    def grad_names(self) -> list[str]:
        return self.names["grad"]

    def add_epoch(self, result: dict, val_accuracies: list[float],
                  val_losses: list[float] | None = None) -> None:
        """result: what lockstep.epoch.train_epoch_lockstep returns for one epoch; then both
        learners' validation accuracies and, if measured, losses."""
        for name, loss, accuracy in zip(NAMES, result["loss"], val_accuracies, strict=True):
            self.train_loss[name].append(loss)
            self.val_accuracy[name].append(accuracy)
        for name, loss in zip(NAMES, val_losses or [], strict=False):
            self.val_loss[name].append(loss)
        for which, stats in result["stats"].items():
            self.stats[which].append(stats)
            self.names[which] = result["names"][which]
        self.stats["gate"].append(result["gate_flips"])
        self.diagnosis = self.diagnosis or result.get("diagnosis")
        worst = result.get("worst")
        if worst and (self.worst is None or worst["relative"] > self.worst["relative"]):
            self.worst = worst
        self.reference = self.reference or result.get("reference")
        self.torch_rounding += result.get("torch_rounding", [])

    def all_steps(self, which: str) -> torch.Tensor:
        """(steps, tensors, 4) stats of every step so far; which: "loss", "grad", "param",
        "buffer" or "state"; "gate": (steps, 2), the ReLU gates open on one side only
        (checks.relu_gate_flips), asked at the steps whose gradients went over the limit."""
        stats = self.stats[which]
        return torch.cat(stats) if stats else torch.full((1, 1, 4), float("nan"))

    @property
    def resynchronized(self) -> bool:
        """Whether the manual learner's results are torch's, not its own: a mismatch was
        found, and the lock step gave it torch's state before every step."""
        return self.diagnosis is not None and not self.independent

    def epoch_line(self, epoch: int) -> str:
        loss, accuracy = self.train_loss, self.val_accuracy
        torch_accuracy = f"torch {accuracy['torch'][-1]:.2%}"
        accuracies = (f"{torch_accuracy} (manual: re-synchronized to torch)"
                      if self.resynchronized else
                      f"manual {accuracy['manual'][-1]:.2%} {torch_accuracy}")
        return (f"epoch {epoch}: train loss manual {loss['manual'][-1]:.4f} "
                f"torch {loss['torch'][-1]:.4f} | val accuracy {accuracies} | "
                f"worst gradient rel diff so far {self.all_steps('grad')[..., REL].max():.1e}")


def summarize(args: argparse.Namespace, device: str, learners: list, data: Splits,
              history: History, seconds: float, own: dict | None = None) -> dict:
    """Everything report.json holds, the verdict included. own: lockstep.alone.on_its_own,
    for a run whose manual learner was re-synchronized to torch after a mismatch."""
    predictions = [learner.predict(data.test_x) for learner in learners]
    grads, params = history.all_steps("grad"), history.all_steps("param")
    summary = {"config": config(args, device), "diverged": False, "seconds": round(seconds, 3)}
    for name, prediction in zip(NAMES, predictions, strict=True):
        summary[name] = {"test_accuracy": (prediction == data.test_y).double().mean().item(),
                         "val_accuracy": history.val_accuracy[name],
                         "val_loss": history.val_loss[name],
                         "train_loss": history.train_loss[name]}
    summary |= {
        "max_grad_abs_diff": grads[..., ABS].max().item(),
        "max_grad_rel_diff": grads[..., REL].max().item(),
        "max_param_abs_diff": params[..., ABS].max().item(),
        "max_param_rel_diff": params[..., REL].max().item(),
        "first_step_grad_rel_diff": grads[0, :, REL].max().item(),
        "prediction_agreement": (predictions[0] == predictions[1]).double().mean().item(),
        "test_images": len(data.test_y),
        "relu_gate_flips": gate_flips(history, MAX_GRAD_REL_DIFF[args.dtype]),
        "loss_agreement": agreement(history, "loss"),
        "gradient_agreement": agreement(history, "grad"),
        "parameter_agreement": agreement(history, "param"),
        "buffer_agreement": agreement(history, "buffer"),
        "state_agreement": agreement(history, "state"),
    }
    summary["thresholds"] = {"max_grad_rel_diff": MAX_GRAD_REL_DIFF[args.dtype],
                             "max_accuracy_gap": MAX_ACCURACY_GAP,
                             "min_prediction_agreement": MIN_PREDICTION_AGREEMENT}
    summary["match"] = all(verdict_checks(summary).values())
    summary["diagnosis"] = None if summary["match"] else history.diagnosis
    summary["float64_reference"] = history.reference
    summary["torch_rounding"] = history.torch_rounding
    summary["resynchronized"] = history.resynchronized
    summary["on_its_own"] = own
    summary["unseen"] = overflow.unseen(learners[0].package.functional, learners[0].params[0],
                                        args.manual)
    measured = history.initial_loss and all(history.val_loss.values())
    summary["not_learning"] = not_learning(
        history.train_loss, history.val_loss, history.val_accuracy, history.initial_loss,
        args.lr) if measured else None
    return summary


def agreement(history: History, which: str) -> dict:
    """{name: levels} of each tensor compared; which: "loss", "grad", "param", "buffer" or
    "state"."""
    stats = history.all_steps(which)
    return {name: levels(stats[:, i]) for i, name in enumerate(history.names[which])}


def levels(stats: torch.Tensor) -> dict:
    """The three levels of agreement of one named tensor over all steps (steps, 4)."""
    return {"steps": len(stats), "identical_steps": int(stats[:, IDENTICAL].sum()),
            "close_steps": int(stats[:, CLOSE].sum()), "max_abs_diff": stats[:, ABS].max().item(),
            "max_rel_diff": stats[:, REL].max().item()}


def gate_flips(history: History, limit: float) -> dict:
    """How many steps had a ReLU gate open on one side only, how many entries in all, how far
    from 0 such an input was at most (relative to the layer's largest output), and how many
    of the steps whose gradients went over `limit` had a flipped gate. The gates are asked
    only where the loss or a gradient went over the limit (a flip that changed nothing is
    not counted)."""
    flips, worst = history.all_steps("gate"), history.all_steps("grad")[..., REL].amax(dim=-1)
    flipped, over = flips[:, 0] > 0, ~(worst <= limit)  # NaN counts as over
    return {"steps": int(flipped.sum()), "entries": int(flips[:, 0].sum()),
            "max_relative_distance": flips[flipped, 1].max().item() if flipped.any() else 0.0,
            "steps_over_limit": int(over.sum()),
            "over_limit_with_flip": int((over & flipped).sum()),
            "first_step_over_limit": int(over.nonzero()[0]) + 1 if over.any() else None}


def verdict_checks(summary: dict) -> dict[str, bool]:
    """Each condition of MATCH, by name. NaN never passes."""
    limits = summary["thresholds"]
    gap = abs(summary["manual"]["test_accuracy"] - summary["torch"]["test_accuracy"])
    checks = {"gradients": summary["max_grad_rel_diff"] <= limits["max_grad_rel_diff"]}
    # held to the same limit: the parameters after each update (the optimizer's step), the
    # running statistics (BatchNorm1d) and the optimizer's state, where there are such
    for check, key in WITHIN_THE_LIMIT_TOO.items():
        if summary[key]:
            checks[check] = all(level["max_rel_diff"] <= limits["max_grad_rel_diff"]
                                for level in summary[key].values())
    return checks | {
        "accuracies": gap <= limits["max_accuracy_gap"] + 1e-12,
        "predictions": summary["prediction_agreement"] >= limits["min_prediction_agreement"]}


def final_table(summary: dict) -> str:
    """The closing table a learner reads: accuracies, agreement levels, verdict."""
    loss = summary["loss_agreement"]["loss"]
    lines = [*accuracy_lines(summary), "",
             f"loss on each step: max abs diff {loss['max_abs_diff']:.2e}, max rel diff "
             f"{loss['max_rel_diff']:.2e}",
             *agreement_rows("gradient", summary["gradient_agreement"])]
    lines.append(f"parameters after each update: max abs diff {summary['max_param_abs_diff']:.2e}, "
                 f"max rel diff {summary['max_param_rel_diff']:.2e}")
    if summary["buffer_agreement"]:
        lines += ["", *agreement_rows("after each step", summary["buffer_agreement"])]
    if summary["state_agreement"]:
        lines += ["", *agreement_rows("optimizer state", summary["state_agreement"])]
    lines.append("(close: within torch.testing.assert_close's default tolerances; gradient "
                 "logits: dLoss/dlogits)")
    if summary["float64_reference"]:
        lines.append(reference_line(summary["float64_reference"]))
    if summary.get("torch_rounding"):
        lines.append(torch_rounding_line(summary["torch_rounding"], summary["thresholds"]))
    limits, checks = summary["thresholds"], verdict_checks(summary)
    marks = {key: "ok" if passed else "FAILED" for key, passed in checks.items()}
    if summary.get("resynchronized"):  # torch's accuracy and predictions against themselves
        marks |= {"accuracies": "n/a: re-synchronized", "predictions": "n/a: re-synchronized"}
    too = [f"{check} [{marks[check]}]" for check in WITHIN_THE_LIMIT_TOO if check in checks]
    running = f"within it too: {', '.join(too)}; " if too else ""
    gap = abs(summary["manual"]["test_accuracy"] - summary["torch"]["test_accuracy"])
    lines += ["", f"{'MATCH' if summary['match'] else 'MISMATCH'} ({summary['config']['dtype']}): "
              f"gradients max rel diff {summary['max_grad_rel_diff']:.1e} "
              f"{'<=' if checks['gradients'] else '>'} {limits['max_grad_rel_diff']:.0e} "
              f"[{marks['gradients']}]; {running}test accuracies "
              + (f"within {limits['max_accuracy_gap']:.1%}" if checks["accuracies"] else
                 f"{gap:.2%} apart, more than {limits['max_accuracy_gap']:.1%}")
              + f" [{marks['accuracies']}]; predictions agree "
              + (">=" if checks["predictions"] else f"on {summary['prediction_agreement']:.1%} <")
              + f" {limits['min_prediction_agreement']:.1%} [{marks['predictions']}]"]
    if summary["diagnosis"]:
        lines.append(f"diagnosis: {summary['diagnosis']['message']}")
    return "\n".join(lines)


def accuracy_lines(summary: dict) -> list[str]:
    """The test accuracies and how often the predictions agree. Where the manual learner was
    re-synchronized to torch after a mismatch, its accuracy is torch's: not shown as its own,
    and what its code reaches on its own (lockstep.alone) is said instead."""
    header = f"{'':16}{'manual':>10}{'torch':>10}"
    if not summary.get("resynchronized"):
        accuracies = [f"{summary[name]['test_accuracy']:>10.2%}" for name in NAMES]
        return [header, f"{'test accuracy':16}{''.join(accuracies)}",
                f"predictions agree on {summary['prediction_agreement']:.2%} of "
                f"{summary['test_images']} test images"]
    own = summary.get("on_its_own")
    return [header, f"{'test accuracy':16}{'-':>10}{summary['torch']['test_accuracy']:>10.2%}",
            "manual: not its own result. A mismatch was found, and the lock step "
            "re-synchronized the manual learner to torch before every step (parameters, "
            "state, then gradients), so its accuracy is torch's.",
            *([alone_sentence(own)] if own else [])]


def stop_line(diagnosis: dict, independent: bool) -> str:
    """The last line of a compare.py --manual run stopped at its first mismatch."""
    line = ("Stopped at the first mismatch. --keep-going trains on"
            + (", each learner on its own." if independent else
               "; the manual learner is then re-synchronized to torch before every step, so "
               "its accuracy will be torch's."))
    if diagnosis.get("kind") == "rounding":
        line += (" This one is float32 rounding, not your code: --dtype float64 checks it to "
                 "1e-10.")
    return line


def alone_sentence(own: dict) -> str:
    """What lockstep.alone.on_its_own found, for a learner to read."""
    start = ("On its own, each learner trained afresh on its own gradients (as --independent) "
             f"for the first {own['steps']} steps of epoch 1")
    if own.get("cut_short"):
        return f"{start}: cut short by Ctrl-C."
    found = []
    for name in NAMES:
        side = own[name]
        found.append(f"{name} {side['val_accuracy']:.2%}" if "val_accuracy" in side else
                     f"{name} diverged (its loss became NaN or infinite at step "
                     f"{side['diverged_at']})")
    line = f"{start}: validation accuracy {', '.join(found)}."
    if alone_did_not_learn(own["torch"].get("val_accuracy")):
        line += (" Torch's own run did not learn either, so this comparison says nothing "
                 "about your code: lower --lr, or leave the training flags to the model's "
                 "defaults (--help).")
    return line


def reference_line(reference: dict) -> str:
    """float32: how far each side's step 1 is from a float64 computation of it."""
    line = (f"step 1 against float64, the exact math to ~1e-16: manual is off by "
            f"{reference['manual']:.1e}, torch by {reference['torch']:.1e} (the worst of the "
            "loss and the gradients, relative to each tensor's largest entry).")
    further = [name for name, (by_hand, by_torch) in reference["tensors"].items()
               if not rounding_only(by_hand, by_torch)]
    if further:
        return (f"{line} Manual's {', '.join(further)} more than {ROUNDING_SLACK} times "
                "further off than torch's: more than float32 rounding.")
    return (f"{line} Both round each float32 operation (to {FLOAT32_EPS / 2:.1e}), in "
            "their own order: that is why they are close but not bit-identical.")


def torch_rounding_line(found: list[dict], thresholds: dict) -> str:
    """The steps where manual, over the limit from torch, was held to float64 instead."""
    worst = max(((name, off) for step in found for name, off in step["tensors"].items()),
                key=lambda item: item[1][1])
    name, (by_hand, by_torch) = worst
    steps = ", ".join(str(step["step"]) for step in found[:5]) + (", ..." if len(found) > 5
                                                                   else "")
    return (f"at {len(found)} step{'s' if len(found) > 1 else ''} ({steps}) manual's and torch's "
            f"float32 results differed by more than {thresholds['max_grad_rel_diff']:.0e}, and "
            "manual was held to a float64 computation of the same step instead, and was within "
            f"it (worst: {name}, torch {by_torch:.1e} from it, manual {by_hand:.1e}): a long sum "
            "that nearly cancels keeps float32's rounding of its terms, each side's in its own "
            "order.")


def agreement_rows(title: str, agreement: dict) -> list[str]:
    """The table of agreement levels, one row per named tensor."""
    width = max(len(title), *map(len, agreement)) + 2
    rows = [f"{title:{width}}{'bit-identical':>16}{'close':>16}{'max abs diff':>14}"
            f"{'max rel diff':>14}"]
    for name, level in agreement.items():
        rows.append(f"{name:{width}}{level['identical_steps']:>9}/{level['steps']:<6}"
                    f"{level['close_steps']:>9}/{level['steps']:<6}"
                    f"{level['max_abs_diff']:>14.2e}{level['max_rel_diff']:>14.2e}")
    return rows


def stopped(args: argparse.Namespace, device: str, history: History, seconds: float,
            mismatch: str | None = None, diagnosis: dict | None = None,
            own: dict | None = None) -> dict:
    """The report of a run stopped early: by a NaN or infinite loss on both sides (diverged),
    by a `mismatch` that could not even be measured (shapes differ, the manual code failed,
    one side's loss is not finite), or, with --manual, by the first mismatch. diagnosis: where
    the first mismatch starts; own: lockstep.alone.on_its_own. No test accuracy: the run
    stopped before the end."""
    summary = {"config": config(args, device), "diverged": mismatch is None, "match": False,
               "stopped_by": mismatch, "resynchronized": False, "seconds": round(seconds, 3),
               "prediction_agreement": None,
               "max_grad_abs_diff": None, "max_grad_rel_diff": None, "max_param_abs_diff": None,
               "diagnosis": diagnosis or history.diagnosis,
               "float64_reference": history.reference, "on_its_own": own}
    for name in NAMES:
        summary[name] = {"test_accuracy": None, "val_accuracy": history.val_accuracy[name],
                         "train_loss": history.train_loss[name]}
    return summary


def config(args: argparse.Namespace, device: str) -> dict:
    """Every flag's value, JSON-ready, and the device actually used."""
    return {key: str(value) if isinstance(value, Path) else value
            for key, value in vars(args).items()} | {"device_used": device}


# What a run writes into its folder: report.json, then the plots (lockstep.plots)
WRITTEN = ("report.json", "curves.png", "gradients.png", "weights.png", "predictions.png",
           "confusion.png", "features.png")


def new_folder(runs: Path) -> Path:
    """runs/<date>-<time>, with -2, -3, ... where a run of the same second has it already."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder, number = runs / stamp, 1
    while folder.exists():
        number += 1
        folder = runs / f"{stamp}-{number}"
    return folder


def prepare_folder(out: Path, overwrite: bool = False) -> list[Path]:
    """Create `out` and prove it is writable, before any training time is spent. Returns the
    folders it made, `out` last (for discard). A folder that holds a run (its report.json) is
    refused, unless overwrite (write then replaces that run's files)."""
    made = [folder for folder in (out, *out.parents) if not folder.exists()][::-1]
    if (out / "report.json").exists() and not overwrite:
        raise OSError(f"--out {out} holds an earlier run (its report.json): choose another "
                      "folder, or add --overwrite to replace it")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise OSError(f"cannot write to --out {out}: {error.strerror or error}") from None
    return made


def discard(made: list[Path]) -> None:
    """Remove the folders prepare_folder made, `out` first, those that are still empty: a run
    that stopped before writing anything leaves no folder behind."""
    for folder in reversed(made):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def write(out: Path, summary: dict) -> None:
    """report.json, in place of an earlier run's files (--overwrite): they stay until now, so
    that a run that stops before its report leaves the earlier one whole."""
    for name in WRITTEN:
        (out / name).unlink(missing_ok=True)
    (out / "report.json").write_text(json.dumps(summary, indent=2) + "\n")
