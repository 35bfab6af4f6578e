"""compare.py's flags: bad usage gets one line and exit status 2, before any work starts.

A flag that takes a real number uses `finite` as its argparse type, so inf and nan are
refused by name (argparse prefixes "argument --lr: "); its range is checked after parsing,
once each option of --optimizer that was not given has its default (usage_problem).
"""

import argparse
import math
import os
from pathlib import Path

import torch

from common.data import NUM_PIXELS

DEFAULT_HIDDEN = 128  # --model mlp without --hidden
DEFAULT_CHANNELS = (16, 32)  # --model cnn without --channels
DEFAULT_RESNET_CHANNELS = (24, 48)  # --model resnet without --channels
# --optimizer: the class in manual/optim.py and torch_impl/optim.py, the flags that are its
# options, and the defaults of those not given (Adam's and AdamW's are torch's own).
OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
OPTIONS = {"sgd": ("lr", "momentum", "dampening", "weight_decay", "nesterov"),
           "adam": ("lr", "betas", "eps", "weight_decay", "amsgrad")}
OPTIONS["adamw"] = OPTIONS["adam"]
DEFAULTS = {"sgd": {"lr": 0.5, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0},
            "adam": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
            "adamw": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}}
# Each model's own defaults for the flags not given, chosen by validation accuracy (README,
# "Each model's defaults"): "sgd" holds SGD's options, which apply with --optimizer sgd only
# (with adam or adamw, torch's own defaults above); the others apply with any optimizer.
MODEL_DEFAULTS = {
    "softmax": {"epochs": 5, "lr_schedule": "constant", "label_smoothing": 0.0,
                "sgd": {"lr": 0.5, "momentum": 0.0}},
    "mlp": {"epochs": 5, "lr_schedule": "cosine", "label_smoothing": 0.0,
            "sgd": {"lr": 0.2, "momentum": 0.9}},
    "cnn": {"epochs": 3, "lr_schedule": "cosine", "label_smoothing": 0.1,
            "sgd": {"lr": 0.05, "momentum": 0.9}},
    "resnet": {"epochs": 6, "lr_schedule": "cosine", "label_smoothing": 0.1,
               "sgd": {"lr": 0.05, "momentum": 0.9}},
}


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        """Bad usage: one line on stderr (not the whole usage text), exit status 2."""
        self.exit(2, f"error: {message} (see --help)\n")


def finite(text: str) -> float:
    """argparse type: a real number, neither inf nor nan."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def parse_args(argv: list[str] | None = None,
               description: str | None = None) -> argparse.Namespace:
    """compare.py's flags, checked, with the defaults of --optimizer's options filled in."""
    parser = make_parser(description)
    args = parser.parse_args(argv)
    problem = (world_size_problem(args) or misplaced_flag(args) or
               usage_problem(with_defaults(args)) or dtype_problem(args))
    if problem:
        parser.error(problem)
    if args.model == "mlp" and args.hidden is None:
        args.hidden = DEFAULT_HIDDEN
    if args.model in ("cnn", "resnet") and args.channels is None:
        args.channels = DEFAULT_CHANNELS if args.model == "cnn" else DEFAULT_RESNET_CHANNELS
    args.channels = None if args.channels is None else tuple(args.channels)
    if args.plots is None:  # an exercise run is for its verdict: plots only when asked
        args.plots = args.manual is None
    return args


def make_parser(description: str | None = None) -> ArgumentParser:
    """compare.py's flags, each with its help: what it does, and its default."""
    parser = ArgumentParser(description=description, epilog=defaults_table(),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("softmax", "mlp", "cnn", "resnet"),
                        default="softmax",
                        help="softmax regression, an MLP with one hidden layer and ReLU, a "
                             "CNN: 5x5 convolutions, ReLU and 2x2 max pooling, or a ResNet: "
                             "convolutions with BatchNorm2d and residual blocks, trained "
                             "through the engine (default %(default)s)")
    parser.add_argument("--hidden", type=int, help="hidden units of --model mlp (default 128)")
    parser.add_argument("--batchnorm", action="store_true",
                        help="--model mlp: BatchNorm1d between the hidden Linear and the ReLU")
    parser.add_argument("--channels", type=int, nargs="+", metavar="C",
                        help="--model cnn: the output channels of each convolution, one block "
                             "(Conv2d, ReLU, MaxPool2d) per number (default 16 32); --model "
                             "resnet: the width of each stage (Conv2d, BatchNorm2d, ReLU, "
                             "MaxPool2d, a residual block) (default 24 48)")
    parser.add_argument("--epochs", type=int,
                        help="passes over the training set (default: the model's, below)")
    parser.add_argument("--batch-size", type=int, default=100,
                        help="examples per step (default %(default)s)")
    parser.add_argument("--optimizer", choices=tuple(OPTIMIZERS), default="sgd",
                        help="torch.optim's SGD, Adam or AdamW, each also written by hand "
                             "(default %(default)s)")
    parser.add_argument("--lr", type=finite,
                        help="learning rate (default: sgd, the model's, below; adam and "
                             "adamw, 1e-3)")
    parser.add_argument("--momentum", type=finite,
                        help="sgd: momentum (default: the model's, below)")
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
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"),
                        help="cosine: anneal the lr to 0 over the whole run, step by step "
                             "(default: the model's, below)")
    parser.add_argument("--label-smoothing", type=finite,
                        help="in [0, 1) (default: the model's, below)")
    parser.add_argument("--engine", action="store_true",
                        help="compute manual's gradients through its engine (manual/autograd.py): "
                             "forward records torch's graph, backward walks it")
    parser.add_argument("--graph", action="store_true",
                        help="print manual's graph and torch's side by side at step 1, node by "
                             "node, with a verdict, and stop")
    parser.add_argument("--independent", action="store_true",
                        help="never copy torch's state or gradients into the manual learner: "
                             "each follows its own trajectory (an MLP's drift apart in float32)")
    parser.add_argument("--world-size", type=int, metavar="W",
                        help="train on W processes of this machine (ranks, gloo on the CPU), "
                             "each on 1/W of every batch: DistributedDataParallel against "
                             "manual/parallel.py's, checked across the ranks too (default 1; "
                             "under torchrun, the number of ranks it started)")
    parser.add_argument("--sync-batchnorm", action="store_true",
                        help="--world-size: every BatchNorm normalizes with all ranks' examples "
                             "(SyncBatchNorm), as one process on the whole batch does")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds parameters, split, batches (default %(default)s)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                        help="of the data, the parameters and every computation "
                             "(default %(default)s)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda where there is one, else cpu (default %(default)s)")
    parser.add_argument("--data-root", help="folder holding MNIST/raw/ "
                        "(default: $MNIST_ROOT, else ./data; downloaded when missing)")
    parser.add_argument("--subset", type=int,
                        help="train on the first N training images only (default: all 55,000)")
    parser.add_argument("--standardize", action="store_true",
                        help="scale pixels to mean 0, std 1 (0.1307, 0.3081)")
    parser.add_argument("--manual", type=Path, metavar="DIR",
                        help="train DIR, an exercise folder written by python -m practice, as "
                             "the manual implementation, and stop at the first step it "
                             "differs (default: manual/)")
    parser.add_argument("--out", type=Path, help="output folder (default: runs/<timestamp>); "
                        "one that holds a run is refused, unless --overwrite")
    parser.add_argument("--overwrite", action="store_true",
                        help="let --out name a folder that holds an earlier run, and replace it")
    parser.add_argument("--plots", action=argparse.BooleanOptionalAction,
                        help="--no-plots: write report.json only (default: plots, except "
                             "with --manual)")
    parser.add_argument("--keep-going", action="store_true",
                        help="--manual: train every epoch after a mismatch too, as manual/ does")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar (there is none when stderr is not a terminal)")
    return parser


def world_size_problem(args: argparse.Namespace) -> str | None:
    """Set args.world_size: --world-size, else torchrun's WORLD_SIZE, else 1. A problem: the
    two disagree, or one rank's share of the batch is impossible. None otherwise."""
    started = os.environ.get("WORLD_SIZE") if "RANK" in os.environ else None
    if started is not None and args.world_size not in (None, int(started)):
        return f"--world-size {args.world_size}, but {started} ranks were started (WORLD_SIZE)"
    if args.world_size is None:
        args.world_size = int(started or 1)
    if args.world_size < 1:
        return f"--world-size must be positive, got {args.world_size}"
    if args.sync_batchnorm and (args.world_size == 1 or not (args.batchnorm or
                                                             args.model == "resnet")):
        return ("--sync-batchnorm applies to --world-size 2 or more, with BatchNorm (--model "
                "mlp --batchnorm, --model resnet)")
    if args.world_size == 1:
        return None
    if args.batch_size % args.world_size:
        lower = args.batch_size - args.batch_size % args.world_size
        such = " or ".join(str(size) for size in (lower, lower + args.world_size) if size > 0)
        return (f"--batch-size {args.batch_size} cannot be split into {args.world_size} equal "
                f"shards (--world-size {args.world_size}): choose a multiple of "
                f"{args.world_size}, such as {such}")
    for flag in ("graph", "independent"):
        if getattr(args, flag):
            return f"--{flag} applies to one process only, not --world-size {args.world_size}"
    return None


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


def defaults_table() -> str:
    """--help's last lines: each model's defaults (MODEL_DEFAULTS), a line a model."""
    lines = ["each model's defaults, for the flags not given (with --optimizer adam or",
             "adamw: torch's own, lr 1e-3, in place of sgd's options):"]
    for model, recipe in MODEL_DEFAULTS.items():
        options = ", ".join(f"{option.replace('_', ' ')} {value:g}"
                            for option, value in recipe["sgd"].items())
        smoothing = (f", label smoothing {recipe['label_smoothing']:g}"
                     if recipe["label_smoothing"] else "")
        lines.append(f"  --model {model:8} sgd: {options}; {recipe['epochs']} epochs, "
                     f"{recipe['lr_schedule']} lr{smoothing}")
    return "\n".join(lines)


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """args, with each flag that was not given set to its default: the model's
    (MODEL_DEFAULTS), and each option of --optimizer (sgd's from the model's too)."""
    recipe = MODEL_DEFAULTS[args.model]
    for flag in ("epochs", "lr_schedule", "label_smoothing"):
        if getattr(args, flag) is None:
            setattr(args, flag, recipe[flag])
    own = recipe["sgd"] if args.optimizer == "sgd" else {}
    for option, value in (DEFAULTS[args.optimizer] | own).items():
        if getattr(args, option) is None:
            setattr(args, option, value)
    if args.betas is not None:
        args.betas = tuple(args.betas)
    return args


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is impossible about these flags (their defaults filled in), or None."""
    if args.model != "mlp" and (args.hidden is not None or args.batchnorm):
        flag = "--hidden" if args.hidden is not None else "--batchnorm"
        return f"{flag} applies to --model mlp only, not {args.model}"
    if args.model not in ("cnn", "resnet") and args.channels is not None:
        return f"--channels applies to --model cnn and resnet only, not {args.model}"
    if args.hidden is not None and args.hidden < 1:
        return f"--hidden must be positive, got {args.hidden}"
    if args.channels is not None and not all(c > 0 for c in args.channels):
        return f"--channels must each be positive, got {' '.join(map(str, args.channels))}"
    side = math.isqrt(NUM_PIXELS)  # MNIST's 28 x 28
    if args.channels is not None and side >> len(args.channels) == 0:
        return (f"--channels: {len(args.channels)} blocks halve a {side} x {side} image to nothing "
                "(at most 4)")
    if args.batchnorm and args.batch_size == 1:
        return "--batchnorm needs --batch-size 2 or more (a batch of 1 has no variance)"
    if args.model == "resnet" and args.batch_size == 1 and last_side(args) == 1:
        return ("--model resnet with 4 stages needs --batch-size 2 or more (its last "
                "BatchNorm2d sees 1 x 1 images: one value a channel has no variance)")
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
    if args.keep_going and args.manual is None:
        return "--keep-going applies to --manual only (manual/ always trains every epoch)"
    if args.subset is not None and args.subset < 1:
        return f"--subset must be positive, got {args.subset}"
    if args.device == "cuda" and not torch.cuda.is_available():
        return "--device cuda: no CUDA device is available (try --device cpu)"
    return None


# The flags that take a real number; each must be one that --dtype can hold.
REAL_FLAGS = ("lr", "momentum", "dampening", "weight_decay", "eps", "betas", "label_smoothing")


def dtype_problem(args: argparse.Namespace) -> str | None:
    """A real-number flag whose value --dtype cannot hold (its defaults filled in), or None:
    --lr 1e40 is inf in float32, and --eps 1e-50 is 0."""
    dtype = getattr(torch, args.dtype)
    for flag in REAL_FLAGS:
        values = getattr(args, flag)
        for value in values if isinstance(values, tuple) else [values]:
            if value is None:
                continue
            held = torch.tensor(value, dtype=torch.float64).to(dtype).item()
            if math.isinf(held):
                return (f"--{flag.replace('_', '-')} {value:g} is too large for {args.dtype}, "
                        f"whose largest number is {torch.finfo(dtype).max:.1e}")
            if held == 0 and value != 0:
                return f"--{flag.replace('_', '-')} {value:g} rounds to 0 in {args.dtype}"
    return None


def last_side(args: argparse.Namespace) -> int:
    """The side of the images the ResNet's last stage sees: 28 halved once a stage."""
    return math.isqrt(NUM_PIXELS) >> len(args.channels or DEFAULT_RESNET_CHANNELS)


def data_problem(args: argparse.Namespace, train_size: int) -> str | None:
    """What is impossible about these flags for a training set of train_size images, or None.
    With --world-size W, each rank trains on its shard, ceil(train_size / W) images, in
    batches of B / W."""
    if args.world_size > 1:
        train_size = -(-train_size // args.world_size)
        args = argparse.Namespace(**vars(args) | {"batch_size": args.batch_size //
                                                  args.world_size})
    flag = ("--batchnorm" if args.batchnorm else
            "--model resnet with 4 stages" if args.model == "resnet" and last_side(args) == 1
            else None)
    if flag and train_size % args.batch_size == 1:
        return (f"{flag} needs 2 or more examples in every batch, but --batch-size "
                f"{args.batch_size} leaves a last batch of 1 from {train_size} training "
                "images: change --batch-size or --subset")
    return None
