"""Exercises: the functions of manual/ a learner writes, and the folder to write them in.

    python -m practice DIR                 # DIR: manual/, with the bodies below taken out
    python -m pytest --manual DIR          # the gradient checks grade DIR, one function at a time
    python compare.py --manual DIR         # the lock step trains DIR's code against torch

The folder is generated from manual/ each time, never kept by hand: each function in
EXERCISES keeps its signature and its docstring (the formula and the shapes) and loses its
body, which becomes a one-line hint and `raise NotImplementedError("<name> is not written yet")`.
Everything else in manual/ (the forward passes, the helpers, the models) is copied as it is.
practice.loader imports such a folder as manual; practice.grading is the pytest plugin.
"""

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the project
MANUAL = ROOT / "manual"
NOT_WRITTEN = " is not written yet"  # how a stub's message starts, after the function's name

# (file in manual/, function, one-line hint), in the order to write them: each one's checks
# use only those before it, and after SGD.step, compare.py trains softmax regression.
# autograd.py's backward walks the graph manual/functions.py records (compare.py --engine);
# the last two, BatchNorm2d.backward and functions.py's basic_block, make the ResNet, which
# trains through that engine (compare.py --model resnet).
EXERCISES = [
    ("functional.py", "softmax",
     "exponentiate z minus each row's max (amax, keepdim=True), then divide by the row sums"),
    ("functional.py", "log_softmax",
     "(z - m) - log(sum_k exp(z_k - m)) over the last dimension, never log(softmax(z))"),
    ("functional.py", "cross_entropy",
     "check_arguments, then minus the log-probability of each target (gather), smoothed as "
     "the docstring says, then the reduction"),
    ("functional.py", "cross_entropy_grad",
     "check_arguments, refuse 'none' (raise ValueError), then softmax(logits) - "
     "target_distribution(...), divided by N for 'mean'"),
    ("layers.py", "Linear.backward",
     "weight.grad = g^T x (x is self.input), bias.grad = g summed over the batch, "
     "return g W (or None)"),
    ("optim.py", "SGD.step",
     "for param, grad in self.gradients(): weight decay, then the momentum buffer in "
     "self.state.setdefault(param, {}), then param.add_(grad, alpha=-self.lr)"),
    ("layers.py", "ReLU.backward",
     "g where the saved output is > 0, 0 elsewhere"),
    ("layers.py", "BatchNorm1d.backward",
     "set weight.grad and bias.grad, then return gamma / s (g - mean g - x_hat mean(g x_hat)); "
     "eval mode: gamma / s g"),
    ("layers.py", "Conv2d.backward",
     "weight.grad: F.conv2d(x.transpose(0, 1), g.transpose(0, 1), padding=..., dilation=stride), "
     "transposed back and cut to k x k; bias.grad: g summed over (0, 2, 3); then "
     "F.conv_transpose2d(g, W, ...) with output_padding for the uncovered rows (or None)"),
    ("layers.py", "MaxPool2d.backward",
     "zeros (N, C, H W), then scatter_add_ g into them at self.indices (each window's first "
     "maximum, at h W + w: never every tie), viewed as (N, C, H, W)"),
    ("optim.py", "Adam.step",
     "for param, grad in self.gradients(): state['step'] += 1, self.decay, exp_avg and "
     "exp_avg_sq in place, then bias_corrections and denominator"),
    ("autograd.py", "backward",
     "gradient defaults to ones; dependencies(root), then a heap of (-sequence_nr, arrival, "
     "node): pop, run(node, ...), add (+) each gradient into its target's buffer, push a "
     "target once its count reaches 0"),
    ("layers.py", "BatchNorm2d.backward",
     "view g as (N, C, H W), the (N, C, L) input BatchNorm1d.backward takes, call it "
     "(super().backward), and view the result back as (N, C, H, W)"),
    ("functions.py", "basic_block",
     "record f(x) with conv1, bn1, relu, conv2, bn2 through LAYER_OPS, then "
     "relu(block.relu, add(x, branch)): x itself, not a copy, goes into the add, so it forks "
     "and the engine adds its two gradients"),
    ("parallel.py", "DistributedDataParallel.copy_into_bucket",
     "grad times 1 / W into its place (self.view(index)) in one pass, one gradient fewer to "
     "wait for in its bucket (number self.place[index][0]), and when none is left, the "
     "bucket's all-reduce, started asynchronously, into self.handles"),
]
NAMES = [name for _, name, _ in EXERCISES]
HINTS = {name: hint for _, name, hint in EXERCISES}


class ExerciseError(Exception):
    """The exercise folder is missing, not a package, or cannot be imported; one line."""


def stub(name: str) -> list[str]:
    """The two lines that replace the body of exercise `name`: its hint and the raise."""
    return [f"# Hint: {HINTS[name]}", f'raise NotImplementedError("{name}{NOT_WRITTEN}")']


def take_out(source: str, names: list[str]) -> str:
    """source with the body of each function in names ("softmax", "Linear.backward") after
    its docstring replaced by stub(name). Raises ValueError for a name it does not define."""
    lines = source.splitlines(keepends=True)
    found = {name: node for name, node in functions(source).items() if name in names}
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"manual/ defines no {', '.join(missing)}: update practice/exercises.py")
    for name, function in sorted(found.items(), key=lambda item: -item[1].lineno):
        first = function.body[0]
        keep = first.end_lineno if ast.get_docstring(function) else first.lineno - 1
        indent = " " * first.col_offset
        lines[keep:function.end_lineno] = [f"{indent}{line}\n" for line in stub(name)]
    return "".join(lines)


def functions(source: str) -> dict[str, ast.FunctionDef]:
    """Every function of a module and of its classes, by name ("softmax", "Linear.backward")."""
    found = {}
    for node in ast.parse(source).body:
        owned = node.body if isinstance(node, ast.ClassDef) else [node]
        prefix = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
        found |= {prefix + function.name: function for function in owned
                  if isinstance(function, ast.FunctionDef)}
    return found


def write(folder: Path, names: list[str] = NAMES, source: Path = MANUAL) -> None:
    """Write the exercise folder: every .py file of source (manual/), the body of each
    exercise in names taken out. Refuses a folder that exists and is not empty: it may hold
    a learner's work."""
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise ExerciseError(f"{folder} already exists and is not empty: it may hold your "
                            "work; choose another folder, or remove it first")
    texts = {}
    for path in sorted(source.glob("*.py")):
        here = [name for file, name, _ in EXERCISES if file == path.name and name in names]
        texts[path.name] = take_out(path.read_text(), here)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in texts.items():
        (folder / name).write_text(text)


def needed(model: str = "softmax", batchnorm: bool = False, optimizer: str = "sgd",
           engine: bool = False, parallel: bool = False) -> list[str]:
    """The exercises a compare.py run calls, in EXERCISES order, by its flags: --model
    ("softmax", "mlp", "cnn", "resnet"), --batchnorm, --optimizer ("sgd", "adam", "adamw")
    and --engine. Softmax regression: 1-5 and the optimizer's step (SGD.step, or Adam.step,
    which AdamW's is); the MLP adds ReLU.backward (and BatchNorm1d.backward), the CNN
    ReLU.backward, Conv2d.backward and MaxPool2d.backward; --engine, autograd.py's backward,
    which runs the layers' backwards. The ResNet trains through the engine, whatever
    --engine says: the CNN's, BatchNorm1d.backward (BatchNorm2d's calls it), backward,
    BatchNorm2d.backward and basic_block. --world-size 2 or more (parallel) trains through the
    engine too, and adds DistributedDataParallel.copy_into_bucket."""
    names = {*NAMES[:5], "SGD.step" if optimizer == "sgd" else "Adam.step"}
    if engine or model == "resnet" or parallel:
        names.add("backward")
    if parallel:
        names.add("DistributedDataParallel.copy_into_bucket")
    if model in ("mlp", "cnn", "resnet"):
        names.add("ReLU.backward")
    if batchnorm or model == "resnet":
        names.add("BatchNorm1d.backward")
    if model in ("cnn", "resnet"):
        names |= {"Conv2d.backward", "MaxPool2d.backward"}
    if model == "resnet":
        names |= {"BatchNorm2d.backward", "basic_block"}
    return [name for name in NAMES if name in names]


def in_project(folder: Path) -> Path:
    """folder as the commands take it from the project's folder (ROOT): relative to ROOT where
    it lies inside it ("exercises"), else absolute."""
    folder = Path(folder).resolve()
    return folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder


def manual_flag(folder: Path) -> str:
    """"--manual DIR", or "--manual=DIR" for a folder outside the project, DIR as in_project
    gives it: pytest reads the former's DIR as a test path too, before it knows the option,
    and with a path outside the project it takes that path's folder for its root, where it
    finds neither the project's settings nor its plugin (error: unrecognized arguments:
    --manual). Either form works only from the project's folder, for that same reason."""
    folder = in_project(folder)
    return f"--manual={folder}" if folder.is_absolute() else f"--manual {folder}"


def commands(folder: Path) -> list[str]:
    """What python -m practice says to run after each function, and where: the project's
    folder (ROOT), the only one from which pytest finds the grader."""
    flag = manual_flag(folder)
    return [f"Then, after each function, from the project's folder (cd {ROOT}):",
            f"  python -m pytest {flag}    the gradient checks, exercise by exercise",
            f"  python compare.py {flag}   the lock step against torch (softmax regression "
            "needs 1-6; --model mlp 7, --batchnorm 8, --model cnn 9-10, --optimizer adam 11, "
            "--engine 12, --model resnet 13-14)"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """python -m practice's flags: the folder to write."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=Path("exercises"),
                        help="the folder to write (default: exercises)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    folder = parse_args(argv).folder
    try:
        write(folder)
    except (ExerciseError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {folder}/: manual/ with these {len(EXERCISES)} functions for you to write, "
          "in this order:")
    for number, (file, name, _) in enumerate(EXERCISES, start=1):
        print(f"  {number:2}. {name:22} {folder}/{file}")
    print("Each docstring gives the formula and the shapes.", *commands(folder), sep="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
