"""Whether a run learned: MATCH says the two implementations agree, not that either learned.

Two learners that agree step by step can agree on learning nothing: the CNN with softmax
regression's lr and no momentum stays at about 11 %, and --lr 1e6 sends the loss to 1e30.
One line after the verdict names what went wrong and the flag to change first:
    UNSTABLE        the training loss of an epoch grew to BLEW_UP times the initial validation
                    loss or more: the steps are far too large
    NOT LEARNING    the validation accuracy of the last epoch is at most NEAR_CHANCE on both sides
    UNSTABLE        neither side's validation loss fell below its initial value, whatever the
                    accuracy: a loss that rises while the accuracy looks fine is a warning
"""

import math

from common.data import NUM_CLASSES

NEAR_CHANCE = 2 / NUM_CLASSES  # 20 %: a guess is right 10 % of the time
BLEW_UP = 100  # two orders of magnitude above the untrained loss (about ln 10 = 2.30)


def not_learning(train_loss: dict, val_loss: dict, val_accuracy: dict, initial: list[float],
                 lr: float) -> str | None:
    """The line that says this run did not learn, or did not learn well, or None. Each dict
    holds a list per learner ("manual", "torch"), one entry per epoch; initial: both initial
    validation losses."""
    start = max(initial)
    losses = [loss for side in train_loss.values() for loss in side]
    worst = next((loss for loss in losses if math.isnan(loss)), max(losses))  # NaN first
    last = {name: accuracies[-1] for name, accuracies in val_accuracy.items()}
    shown = f"validation accuracy manual {last['manual']:.2%}, torch {last['torch']:.2%}"
    if not worst < BLEW_UP * start:  # NaN included
        tag, why = "UNSTABLE", (f"the training loss grew by orders of magnitude, to {worst:.3g} "
                                f"from {start:.4f} at the start ({shown}): the steps are far "
                                "too large")
    elif all(accuracy <= NEAR_CHANCE for accuracy in last.values()):
        tag, why = "NOT LEARNING", f"{shown}: near chance, {1 / NUM_CLASSES:.0%}"
    elif all(not side[-1] < before for side, before in zip(val_loss.values(), initial,
                                                           strict=True)):  # NaN: not below
        tag, why = "UNSTABLE", (f"the validation loss ended at "
                                f"{min(v[-1] for v in val_loss.values()):.4f}, not below its "
                                f"start, {min(initial):.4f}, though {shown}: the steps are too "
                                "large for the loss to settle")
    else:
        return None
    return (f"{tag}: {why}. The two agree, but agreeing is not learning: lower --lr (now "
            f"{lr:g}), or leave the training flags to the model's defaults (compare.py --help).")


def alone_did_not_learn(accuracy: float | None) -> bool:
    """Whether torch's own run in lockstep.alone learned nothing: diverged (None) or near
    chance. Then what the manual learner reaches alone says nothing about its code."""
    return accuracy is None or accuracy <= NEAR_CHANCE
