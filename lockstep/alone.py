"""What the manual code reaches on its own, for a run that found a mismatch.

The lock step copies torch's parameters, running statistics and optimizer state into the
manual learner before every step, and torch's gradients before every update. So once the
two differ, the manual learner's accuracy is torch's, whatever its own gradients say. Here
both learners start afresh from the same parameters and train on the same first batches of
epoch 1, each on its own gradients (as --independent), and their validation accuracies are
held side by side: a one-hot in the wrong column trains to 1 %, not to torch's 90 %.
"""

import argparse
import itertools
import sys
from types import ModuleType

import torch
from tqdm import tqdm

from common.data import Splits, batches
from lockstep.epoch import Diverged
from lockstep.learner import make_learners

MOST_STEPS = 1000  # of epoch 1: a few seconds at most


def after(found, args: argparse.Namespace, data: Splits, device: str, dtype: torch.dtype,
          steps_per_epoch: int, package: ModuleType | None) -> dict | None:
    """on_its_own after a mismatch (found: the Mismatch that stopped the run, or the
    diagnosis of a run that went on), unless --independent, where each learner trained on its
    own anyway. None also where there is nothing to learn that way: no mismatch, training
    diverged, or the manual code failed (the lock step said what failed)."""
    failed = isinstance(found, Diverged) or getattr(found, "__cause__", None) is not None
    if not found or args.independent or failed:
        return None
    return on_its_own(args, data, device, dtype, steps_per_epoch, package)


def on_its_own(args: argparse.Namespace, data: Splits, device: str, dtype: torch.dtype,
               steps_per_epoch: int, package: ModuleType | None) -> dict | None:
    """{"steps": S, "manual": {...}, "torch": {...}} after S = min(steps_per_epoch,
    MOST_STEPS) steps of each learner on its own: {"val_accuracy": a}, or {"diverged_at":
    step} where the loss became NaN or infinite; {"steps": S, "cut_short": True} after a
    Ctrl-C. None when the manual code cannot even take a step on its own (its error was
    reported already). Says what it is doing first, and shows its progress on a terminal."""
    learners = make_learners(args, device, dtype, steps_per_epoch, package)
    steps = min(steps_per_epoch, MOST_STEPS)
    result = {"steps": steps}
    print(f"Now training each learner afresh on its own gradients for {steps} steps, to see "
          "what the manual code reaches by itself (Ctrl-C cuts this short) ...")
    with tqdm(total=2 * steps, desc="on its own", leave=False, file=sys.stderr,
              disable=args.quiet or not sys.stderr.isatty()) as progress:
        try:
            for name, learner in zip(("manual", "torch"), learners, strict=True):
                outcome = train_alone(learner, name, args, data, steps, progress)
                if outcome is None:
                    return None
                result[name] = outcome
        except KeyboardInterrupt:
            return {"steps": steps, "cut_short": True}
    return result


def train_alone(learner, name: str, args: argparse.Namespace, data: Splits, steps: int,
                progress) -> dict | None:
    """One learner's first `steps` steps of epoch 1 on its own gradients: {"val_accuracy":
    a} or {"diverged_at": step}; None where the manual code failed on its own path."""
    epoch = itertools.islice(batches(data.train_x, data.train_y, args.batch_size,
                                     args.seed, 1), steps)
    try:
        losses = torch.stack([train_step(learner, x, y, progress) for x, y in epoch])
        accuracy = learner.accuracy(data.val_x, data.val_y)
    except Exception:
        if name == "torch":
            raise  # the checker's or torch's: not the learner's to be told
        return None  # the learner's code failed on its own path: nothing to compare
    finite = torch.isfinite(losses)
    return ({"val_accuracy": accuracy} if finite.all() else
            {"diverged_at": int((~finite).nonzero()[0]) + 1})


def train_step(learner, x: torch.Tensor, y: torch.Tensor, progress=None) -> torch.Tensor:
    """One step of one learner on its own gradients; its loss (on the device, no sync)."""
    loss = learner.gradients(x, y).detach()
    learner.step()
    if progress is not None:
        progress.update()
    return loss
