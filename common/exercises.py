"""Exercises: the functions of manual/ a learner writes, and the folder to write them in.

    python -m common.exercises DIR         # DIR: manual/, with the bodies below taken out
    python -m pytest --manual DIR          # the gradient checks grade DIR, one function at a time
    python compare.py --manual DIR         # the lock step trains DIR's code against torch

The folder is generated from manual/ each time, never kept by hand: each function in
EXERCISES keeps its signature and its docstring (the formula and the shapes) and loses its
body, which becomes a one-line hint and `raise NotImplementedError("<name> is not written yet")`.
Everything else in manual/ (the forward passes, the helpers, the models) is copied as it is.
"""

import argparse
import ast
import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType

MANUAL = Path(__file__).resolve().parent.parent / "manual"
NOT_WRITTEN = " is not written yet"  # how a stub's message starts, after the function's name

# (file in manual/, function, one-line hint), in the order to write them: each one's checks
# use only those before it, and after SGD.step, compare.py trains softmax regression.
EXERCISES = [
    ("functional.py", "softmax",
     "exponentiate z minus each row's max (amax, keepdim=True), then divide by the row sums"),
    ("functional.py", "log_softmax",
     "(z - m) - log(sum_k exp(z_k - m)) over the last dimension, never log(softmax(z))"),
    ("functional.py", "cross_entropy",
     "check_arguments, then minus the log-probability of each target (gather), smoothed as "
     "the docstring says, then the reduction"),
    ("functional.py", "cross_entropy_grad",
     "check_arguments and refuse 'none', then softmax(logits) - target_distribution(...), "
     "divided by N for 'mean'"),
    ("layers.py", "Linear.backward",
     "weight.grad = g^T x (x is self.input), bias.grad = g summed over the batch, "
     "return g W (or None)"),
    ("optim.py", "SGD.step",
     "for param, grad in self.gradients(): weight decay, then the momentum buffer in "
     "self.state[param], then param.add_(grad, alpha=-self.lr)"),
    ("layers.py", "ReLU.backward",
     "g where the saved output is > 0, 0 elsewhere"),
    ("layers.py", "BatchNorm1d.backward",
     "set weight.grad and bias.grad, then return gamma / s (g - mean g - x_hat mean(g x_hat)); "
     "eval mode: gamma / s g"),
    ("optim.py", "Adam.step",
     "for param, grad in self.gradients(): state['step'] += 1, self.decay, exp_avg and "
     "exp_avg_sq in place, then bias_corrections and denominator"),
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
    found = {}
    for node in ast.parse(source).body:
        functions = node.body if isinstance(node, ast.ClassDef) else [node]
        prefix = f"{node.name}." if isinstance(node, ast.ClassDef) else ""
        for function in functions:
            if isinstance(function, ast.FunctionDef) and prefix + function.name in names:
                found[prefix + function.name] = function
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"manual/ defines no {', '.join(missing)}: update common/exercises.py")
    for name, function in sorted(found.items(), key=lambda item: -item[1].lineno):
        first = function.body[0]
        keep = first.end_lineno if ast.get_docstring(function) else first.lineno - 1
        indent = " " * first.col_offset
        lines[keep:function.end_lineno] = [f"{indent}{line}\n" for line in stub(name)]
    return "".join(lines)


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


def load(folder: Path, keep: bool = False) -> ModuleType:
    """Import folder as the package `manual` (its files import each other by that name) and
    return it. keep=False puts the real manual/ back in sys.modules afterwards (compare.py);
    keep=True leaves folder's in its place, so that `import manual` finds it (the tests).
    Raises ExerciseError, one line, when folder is missing, not a package, fails to import or
    lacks an exercise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExerciseError(f"{folder}: no such folder (write one with "
                            f"python -m common.exercises {folder})")
    if not (folder / "__init__.py").is_file():
        raise ExerciseError(f"{folder} is not a package: it has no __init__.py (write a new "
                            "folder with python -m common.exercises DIR)")
    real = {name: sys.modules.pop(name) for name in list(sys.modules) if is_manual(name)}
    try:
        package = import_as_manual(folder)
    except ExerciseError:
        keep = False
        raise
    finally:
        if not keep:
            for name in [name for name in sys.modules if is_manual(name)]:
                del sys.modules[name]
            sys.modules.update(real)
    return package


def is_manual(module: str) -> bool:
    return module == "manual" or module.startswith("manual.")


def import_as_manual(folder: Path) -> ModuleType:
    """folder's __init__.py run as the package manual, which imports its modules."""
    spec = importlib.util.spec_from_file_location(
        "manual", folder / "__init__.py", submodule_search_locations=[str(folder)])
    package = sys.modules["manual"] = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(package)
    except SyntaxError as error:  # IndentationError too
        raise ExerciseError(f"{shown(error.filename)} line {error.lineno}: "
                            f"{type(error).__name__}: {error.msg}") from None
    except Exception as error:  # the learner's file runs at import: any error is theirs
        raise ExerciseError(f"{located(error, folder) or folder}: cannot import it: "
                            f"{type(error).__name__}: {first_line(error)}") from None
    missing = [f"{name} in {file}" for file, name, _ in EXERCISES
               if not has(package, file.removesuffix(".py"), name)]
    if missing:
        raise ExerciseError(f"{folder} is not an exercise folder: it has no "
                            f"{', '.join(missing)} (write a new one with python -m "
                            "common.exercises DIR)")
    return package


def has(package: ModuleType, module: str, name: str) -> bool:
    """Whether package.module defines name ("softmax", "Linear.backward")."""
    owner = getattr(package, module, None)
    for part in name.split("."):
        owner = getattr(owner, part, None)
    return callable(owner)


def shown(path: str | Path) -> str:
    """path relative to the working folder where it lies below it, else as it is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def located(error: BaseException, folder: Path) -> str | None:
    """'DIR/file.py line N' for the innermost frame of error's traceback that lies in folder,
    or None if none does."""
    frame = innermost(error, folder)
    return f"{shown(frame.filename)} line {frame.lineno}" if frame else None


def innermost(error: BaseException, folder: Path) -> traceback.FrameSummary | None:
    folder = Path(folder).resolve()
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if folder in Path(frame.filename).resolve().parents]
    return frames[-1] if frames else None


def explained(error: BaseException, folder: Path, anywhere: bool = False) -> str | None:
    """One line for an error raised by code in folder (with anywhere, by any code), None for
    any other error. A stub's NotImplementedError: "softmax is not written yet
    (DIR/functional.py line 21). Hint: ..."; any other: "DIR/functional.py line 23, in
    softmax: TypeError: ..."."""
    frame = innermost(error, folder)
    if frame is None and anywhere and error.__traceback__ is not None:
        frame = traceback.extract_tb(error.__traceback__)[-1]
    if frame is None:
        return None
    where = f"{shown(frame.filename)} line {frame.lineno}"
    if isinstance(error, NotImplementedError):
        name = exercise_of(error, frame)
        hint = f" Hint: {HINTS[name]}" if name in HINTS else ""
        return f"{name}{NOT_WRITTEN} ({where}).{hint}"
    return f"{where}, in {frame.name}: {type(error).__name__}: {first_line(error)}"


def first_line(error: BaseException) -> str:
    """The first line of error's message, with ' ...' if there are more."""
    lines = str(error).strip().splitlines() or [""]
    return lines[0] + (" ..." if len(lines) > 1 else "")


def exercise_of(error: NotImplementedError, frame: traceback.FrameSummary) -> str:
    """The exercise whose stub raised error: the name its message starts with, else the
    function it was raised in."""
    message = str(error)
    return message.split(NOT_WRITTEN)[0] if NOT_WRITTEN in message else frame.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, nargs="?", default=Path("exercises"),
                        help="the folder to write (default: exercises)")
    folder = parser.parse_args(argv).folder
    try:
        write(folder)
    except (ExerciseError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {folder}/: manual/ with these {len(EXERCISES)} functions for you to write, "
          "in this order:")
    for number, (file, name, _) in enumerate(EXERCISES, start=1):
        print(f"  {number}. {name:22} {folder}/{file}")
    print(f"Each docstring gives the formula and the shapes. Then, after each function:\n"
          f"  python -m pytest --manual {folder}    the gradient checks, exercise by exercise\n"
          f"  python compare.py --manual {folder}   the lock step against torch "
          "(softmax regression needs 1-6; --model mlp 7, --batchnorm 8, --optimizer adam 9)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
