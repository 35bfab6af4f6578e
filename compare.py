"""Train the manual and the torch implementation side by side and prove they match.

Both start from the same parameters and see the same batches. On every step
the two gradients are compared; then both optimizers step on torch's gradients,
and the two parameter sets, running statistics and optimizer states are compared;
before the next step the manual learner takes over torch's state, so that every
step is checked from the same starting point (--independent: never, and see
float32 trajectories drift apart). At the end, their test accuracies and
predictions are compared. Prints a verdict, writes report.json and plots, and
exits 0 on MATCH, 1 on MISMATCH or a diverging run, 2 on bad usage or bad data.

    python compare.py                      # defaults: softmax regression, 5 epochs, lr 0.5
    python compare.py --dtype float64      # gradients must agree to 1e-10
    python compare.py --model mlp --batchnorm --lr 0.1    # a hidden layer, normalized
    python compare.py --model mlp --optimizer adam --lr 1e-3   # Adam, its state compared too
    python compare.py --manual exercises   # your own code (python -m common.exercises) as manual
"""

import argparse
import math
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
from tqdm import tqdm

import manual
import torch_impl
from common import diagnosis, exercises, plots, report
from common.checks import ShapeMismatch, exceeds, levels, named_stats, relu_gate_flips
from common.data import NUM_CLASSES, NUM_PIXELS, DataError, batches, load_splits, resolve_root
from common.flags import ArgumentParser, finite
from common.training import Learner

DEFAULT_HIDDEN = 128  # --model mlp without --hidden
# --optimizer: the class in manual/optim.py and torch_impl/optim.py, the flags that are its
# options, and the defaults of those not given (Adam's and AdamW's are torch's own).
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
OPTIONS = {"sgd": ("lr", "momentum", "dampening", "weight_decay", "nesterov"),
           "adam": ("lr", "betas", "eps", "weight_decay", "amsgrad")}
OPTIONS["adamw"] = OPTIONS["adam"]
DEFAULTS = {"sgd": {"lr": 0.5, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
            "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
            "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}}


class Diverged(Exception):
    """The loss became NaN or infinite."""


class Mismatch(Exception):
    """A step could not even be compared: tensors of different shapes, the manual forward /
    backward failed where torch's ran, or one side's loss is NaN or infinite. Carries the
    diagnosis (common.diagnosis)."""

    def __init__(self, found: dict, first: dict | None = None):
        super().__init__(found["message"])
        self.diagnosis = first or found  # the first mismatch of the epoch, should it be earlier


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("softmax", "mlp"), default="softmax",
                        help="softmax regression, or an MLP with one hidden layer and ReLU")
    parser.add_argument("--hidden", type=int, help="hidden units of --model mlp (default 128)")
    parser.add_argument("--batchnorm", action="store_true",
                        help="--model mlp: BatchNorm1d between the hidden Linear and the ReLU")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=100, help="examples per step")
    parser.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="sgd",
                        help="torch.optim's SGD, Adam or AdamW, each also written by hand")
    parser.add_argument("--lr", type=finite,
                        help="learning rate (default 0.5 for sgd; 1e-3 for adam and adamw)")
    parser.add_argument("--momentum", type=finite, help="sgd: momentum (default 0)")
    parser.add_argument("--dampening", type=finite, help="sgd: momentum dampening (default 0)")
    parser.add_argument("--nesterov", action="store_true", help="sgd: Nesterov momentum")
    parser.add_argument("--betas", type=finite, nargs=2, metavar=("B1", "B2"),
                        help="adam, adamw: decay rates of the running means of the gradient "
                             "and of its square (default 0.9 0.999)")
    parser.add_argument("--eps", type=finite,
                        help="adam, adamw: added to the denominator (default 1e-8)")
    parser.add_argument("--amsgrad", action="store_true",
                        help="adam, adamw: divide by the largest second moment so far")
    parser.add_argument("--weight-decay", type=finite,
                        help="sgd, adam: L2 penalty added to the gradient (default 0); adamw: "
                             "decoupled weight decay (default 1e-2)")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default="constant",
                        help="cosine: anneal the lr to 0 over the whole run, step by step")
    parser.add_argument("--label-smoothing", type=finite, default=0.0, help="in [0, 1)")
    parser.add_argument("--independent", action="store_true",
                        help="never copy torch's state or gradients into the manual learner: "
                             "each follows its own trajectory (an MLP's drift apart in float32)")
    parser.add_argument("--seed", type=int, default=0, help="seeds parameters, split, batches")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--data-root", help="folder holding MNIST/raw/ "
                        "(default: $MNIST_ROOT, else ./data; downloaded when missing)")
    parser.add_argument("--subset", type=int, help="train on the first N training images only")
    parser.add_argument("--standardize", action="store_true",
                        help="scale pixels to mean 0, std 1 (0.1307, 0.3081)")
    parser.add_argument("--manual", type=Path, metavar="DIR",
                        help="train DIR, an exercise folder written by python -m "
                             "common.exercises, as the manual implementation")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<timestamp>)")
    parser.add_argument("--no-plots", action="store_true", help="write report.json only")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    problem = misplaced_flag(args) or usage_problem(with_defaults(args))
    if problem:
        parser.error(problem)
    if args.model == "mlp" and args.hidden is None:
        args.hidden = DEFAULT_HIDDEN
    return args


def misplaced_flag(args: argparse.Namespace) -> str | None:
    """A flag given that is not an option of --optimizer (--momentum with adam, --amsgrad
    with sgd), or None."""
    for name, family in (("sgd", "sgd"), ("adam", "adam or adamw")):
        for option in OPTIONS[name]:
            value = getattr(args, option)  # None, or False for a switch, when not given
            if option not in OPTIONS[args.optimizer] and value is not None and value is not False:
                return (f"--{option.replace('_', '-')} applies to --optimizer {family} only, "
                        f"not {args.optimizer}")
    return None


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """args, with each option of --optimizer that was not given set to its default."""
    for option, value in DEFAULTS[args.optimizer].items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    if args.betas is not None:
        args.betas = tuple(args.betas)
    return args


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is impossible about these flags (their defaults filled in), or None."""
    if args.model == "softmax" and (args.hidden is not None or args.batchnorm):
        flag = "--hidden" if args.hidden is not None else "--batchnorm"
        return f"{flag} applies to --model mlp only (softmax regression has no hidden layer)"
    if args.hidden is not None and args.hidden < 1:
        return f"--hidden must be positive, got {args.hidden}"
    if args.batchnorm and args.batch_size == 1:
        return "--batchnorm needs --batch-size 2 or more (a batch of 1 has no variance)"
    for flag in ("epochs", "batch_size", "lr"):
        if not getattr(args, flag) > 0:
            return f"--{flag.replace('_', '-')} must be positive, got {getattr(args, flag)}"
    if args.weight_decay < 0:
        return f"--weight-decay must not be negative, got {args.weight_decay}"
    if args.optimizer == "sgd":
        if not 0 <= args.momentum < 1:
            return f"--momentum must be in [0, 1), got {args.momentum}"
        if not 0 <= args.dampening <= 1:
            return f"--dampening must be in [0, 1], got {args.dampening}"
        if args.nesterov and (args.momentum <= 0 or args.dampening != 0):
            return "--nesterov needs --momentum > 0 and --dampening 0"
    else:
        if not all(0 <= beta < 1 for beta in args.betas):
            return f"--betas must each be in [0, 1), got {args.betas[0]} {args.betas[1]}"
        if not args.eps > 0:
            return f"--eps must be positive, got {args.eps}"
    if not 0 <= args.label_smoothing < 1:
        return f"--label-smoothing must be in [0, 1), got {args.label_smoothing}"
    if not 0 <= args.seed < 2**32:
        return f"--seed must be in [0, {2**32 - 1}], got {args.seed}"
    if args.subset is not None and args.subset < 1:
        return f"--subset must be positive, got {args.subset}"
    if args.device == "cuda" and not torch.cuda.is_available():
        return "--device cuda: no CUDA device is available (try --device cpu)"
    return None


def make_learners(args: argparse.Namespace, device: str, dtype: torch.dtype,
                  steps_per_epoch: int | None = None,
                  manual_package: ModuleType = manual) -> list[Learner]:
    """The manual and the torch learner, each built right after torch.manual_seed(seed).

    --lr-schedule cosine anneals over epochs * steps_per_epoch steps, so it needs the latter.
    manual_package: manual, or an exercise folder (common.exercises.load).
    """
    options = {option: getattr(args, option) for option in OPTIONS[args.optimizer]}
    anneal_steps = None
    if args.lr_schedule == "cosine":
        if steps_per_epoch is None:
            raise ValueError("--lr-schedule cosine: make_learners needs steps_per_epoch")
        anneal_steps = args.epochs * steps_per_epoch
    learners = []
    for package in (manual_package, torch_impl):
        torch.manual_seed(args.seed)
        learners.append(Learner(package, NUM_PIXELS, NUM_CLASSES, options,
                                args.label_smoothing, device, dtype, anneal_steps,
                                args.hidden, args.batchnorm, OPTIMIZERS[args.optimizer]))
    return learners


# What the lock step compares, by report key: (what to call it, a learner's named tensors).
# The loss and the gradients before the update, the others after it.
COMPARED = {"loss": ("loss", Learner.named_loss),
            "grad": ("gradient", Learner.named_gradients),
            "param": ("parameter", Learner.named_parameters),
            "buffer": ("buffer", Learner.named_buffers),
            "state": ("optimizer state", Learner.named_optimizer_state)}


def train_epoch_lockstep(learners: list[Learner], epoch_batches, progress,
                         independent: bool = False, first_step: int = 1,
                         diagnose: bool = True) -> dict:
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
    at the end of the epoch.

    diagnose: find where the first mismatch starts ("diagnosis", common.diagnosis; steps are
    numbered from first_step) and, in float32, how far each side's step 1 is from float64
    ("reference"); the detail is computed only once a tensor went over the limit.
    """
    manual_learner, torch_learner = learners
    dtype = learners[0].parameters()[0].dtype
    limit = report.limit(dtype)
    losses, gate_flips, found, reference = [], [], None, None
    stats = {which: [] for which in COMPARED}
    for step, (x, y) in enumerate(epoch_batches, start=first_step):
        if not independent:
            manual_learner.copy_state_from(torch_learner)  # a no-op where they agree to the bit
        try:
            manual_learner.gradients(x, y)
        except Exception as error:  # e.g. a .grad of the wrong shape, refused by torch
            if exercises.unfinished(error):  # an exercise not written yet: main says which
                raise
            raise Mismatch(diagnosis.of_failure(step, learners, x, y, error, limit),
                           found) from None
        torch_learner.gradients(x, y)
        try:
            before = named_stats(*(learner.named_loss() + learner.named_gradients()
                                   for learner in learners))
        except ShapeMismatch as error:  # e.g. a .grad never set
            raise Mismatch(diagnosis.of_failure(step, learners, x, y, error, limit),
                           found) from None
        stats["loss"].append(before[:1])
        stats["grad"].append(before[1:])
        losses.append(torch.stack([manual_learner.loss, torch_learner.loss]))
        if exceeds(before, limit):  # the one host sync of the step: NaN and inf count too
            found = over_the_limit(step, learners, x, y, losses[-1], limit, found, diagnose,
                                   independent)
        if diagnose and step == 1 and dtype == torch.float32:
            reference = diagnosis.float64_errors(learners, x, y)
        gate_flips.append(relu_flips(learners))
        if not independent:  # the update is checked on the same gradients, see above
            manual_learner.copy_gradients_from(torch_learner)
        for learner in learners:
            learner.step()  # the optimizer's, then the learning-rate schedule's
        for which in ("param", "buffer", "state"):
            stats[which].append(compared(step, *COMPARED[which], learners, found))
        progress.update()
    names = {which: [name for name, _ in named(manual_learner)]
             for which, (_, named) in COMPARED.items()}
    stats = {which: levels(torch.stack(steps), dtype).cpu() for which, steps in stats.items()}
    if diagnose:  # the update and the running statistics: found from the levels, replayed
        found = diagnosis.first_of_epoch(found, stats, names, learners, limit, first_step,
                                         independent)
    return {"loss": torch.stack(losses).double().mean(dim=0).tolist(), "names": names,
            "stats": stats, "gate_flips": torch.stack(gate_flips).double().cpu(),
            "diagnosis": found, "reference": reference}


def over_the_limit(step: int, learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
                   loss: torch.Tensor, limit: float, found: dict | None, diagnose: bool,
                   independent: bool) -> dict | None:
    """A step whose loss or gradients went over the limit. Both losses (loss: (2,)) NaN or
    infinite: training diverged (raises Diverged). Otherwise its diagnosis, unless the epoch
    already has one (found) or diagnose is off; and a loss NaN or infinite on one side only
    is a mismatch that stops the run (raises Mismatch), whatever found."""
    finite = torch.isfinite(loss)
    if not finite.any():
        raise Diverged(f"step {step}: loss {loss.tolist()}")
    if (found is None and diagnose) or not finite.all():
        now = diagnosis.of_gradients(step, learners, x, y, limit, independent)
        if not finite.all():
            raise Mismatch(now, found)
        found = found or now
    return found


def relu_flips(learners: list[Learner]) -> torch.Tensor:
    """(2,): checks.relu_gate_flips of the two models' ReLU outputs (the worst, should there
    be several ReLU layers); zeros for a model without ReLU."""
    pairs = zip(*(learner.named_hidden_outputs() for learner in learners), strict=True)
    flips = [relu_gate_flips(m, t) for (name, m), (_, t) in pairs if name == "hidden.relu"]
    return torch.stack(flips).amax(dim=0) if flips else torch.zeros(2)


def compared(step: int, what: str, named, learners: list[Learner],
             found: dict | None = None) -> torch.Tensor:
    """(tensors, 3): checks.named_stats of named(manual) against named(torch); tensors of
    different shapes stop the run as a Mismatch (they must never pass by broadcasting)."""
    try:
        return named_stats(*(named(learner) for learner in learners))
    except ShapeMismatch as error:
        raise Mismatch(diagnosis.make(step, what, "shape", f"manual's {what} holds {error}."),
                       found) from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, args.dtype)
    out = args.out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    try:
        package = exercises.load(args.manual) if args.manual else manual
        report.prepare_folder(out)
        data = load_splits(resolve_root(args.data_root), seed=args.seed, subset=args.subset,
                           standardize=args.standardize, dtype=dtype, device=device)
    except (exercises.ExerciseError, DataError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.batchnorm and len(data.train_x) % args.batch_size == 1:
        print(f"error: --batchnorm needs 2 or more examples in every batch, but --batch-size "
              f"{args.batch_size} leaves a last batch of 1 from {len(data.train_x)} training "
              "images: change --batch-size or --subset", file=sys.stderr)
        return 2
    try:
        return train_and_compare(args, package, data, device, dtype, out)
    except Exception as error:  # a learner's code, --manual DIR, can raise anything
        line = args.manual and exercises.explained(error, args.manual, anywhere=True)
        if not line:
            raise
        print(line if exercises.unfinished(error) else f"error: {line}", file=sys.stderr)
        return 1


def train_and_compare(args: argparse.Namespace, package: ModuleType, data, device: str,
                      dtype: torch.dtype, out: Path) -> int:
    """Train both learners in lock step, epoch by epoch; then the verdict, report and plots.
    The exit status: 0 on MATCH, 1 on MISMATCH or a diverging run."""
    start = time.perf_counter()
    steps_per_epoch = math.ceil(len(data.train_x) / args.batch_size)
    learners = make_learners(args, device, dtype, steps_per_epoch, package)
    pairs = zip(*(learner.parameters() for learner in learners), strict=True)
    assert all(torch.equal(m, t) for m, t in pairs), "both must start from identical parameters"
    initial = [learner.package.functional.cross_entropy(learner.logits(data.val_x), data.val_y)
               for learner in learners]
    print(f"initial validation loss: manual {initial[0]:.4f}, torch {initial[1]:.4f} "
          f"(an untrained {NUM_CLASSES}-class classifier should give about ln {NUM_CLASSES} = "
          f"{math.log(NUM_CLASSES):.4f})")

    history = report.History()
    for epoch in range(1, args.epochs + 1):
        epoch_batches = batches(data.train_x, data.train_y, args.batch_size, args.seed, epoch)
        with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", leave=False,
                  disable=args.quiet, file=sys.stderr) as progress:
            try:
                result = train_epoch_lockstep(learners, epoch_batches, progress,
                                              args.independent,
                                              (epoch - 1) * steps_per_epoch + 1,
                                              diagnose=history.diagnosis is None)
            except Diverged as error:
                print(f"error: training diverged in epoch {epoch}, {error}: "
                      f"lower --lr (now {args.lr:g})", file=sys.stderr)
                report.write(out, report.stopped(args, device, history,
                                                 time.perf_counter() - start))
                return 1
            except Mismatch as error:
                first = history.diagnosis or error.diagnosis
                print(f"MISMATCH ({args.dtype}) in epoch {epoch}, {error}")
                if first["message"] != str(error):
                    print(f"diagnosis: {first['message']}")
                report.write(out, report.stopped(args, device, history,
                                                 time.perf_counter() - start, str(error),
                                                 first))
                return 1
        history.add_epoch(result, [learner.accuracy(data.val_x, data.val_y)
                                   for learner in learners])
        print(history.epoch_line(epoch))

    summary = report.summarize(args, device, learners, data, history, time.perf_counter() - start)
    print(report.final_table(summary))
    report.write(out, summary)
    if not args.no_plots:
        plots.save_all(out, learners, data, history)
    print(f"wrote {out}/report.json" + ("" if args.no_plots else " and plots"))
    return 0 if summary["match"] else 1


if __name__ == "__main__":
    sys.exit(main())
