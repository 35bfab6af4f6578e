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
import functools
import importlib.util
import inspect
import sys
from pathlib import Path
from types import ModuleType

import torch

from common.tracebacks import one_line, place, shown

ROOT = Path(__file__).resolve().parent.parent  # the project
MANUAL = ROOT / "manual"
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
    found = {name: node for name, node in functions(source).items() if name in names}
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"manual/ defines no {', '.join(missing)}: update common/exercises.py")
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


def load(folder: Path, keep: bool = False, calls: set[str] | None = None) -> ModuleType:
    """Import folder as the package `manual` (its files import each other by that name) and
    return it, each exercise wrapped by checked(). keep=False puts the real manual/ back in
    sys.modules afterwards (compare.py); keep=True leaves folder's in its place, so that
    `import manual` finds it (the tests). calls: a set each exercise adds its name to when
    called. Raises ExerciseError, one line, when folder is missing, not a package, fails to
    import or lacks an exercise."""
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
    for file, name, _ in EXERCISES:
        owner, function = owner_of(package, file, name)
        setattr(owner, function, checked(getattr(owner, function), name, calls))
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
        where = place(error, folder)
        at = where.at if where else folder
        raise ExerciseError(f"{at}: cannot import it: {one_line(error)}") from None
    missing = [f"{name} in {file}" for file, name, _ in EXERCISES
               if not callable(getattr(*owner_of(package, file, name), None))]
    if missing:
        raise ExerciseError(f"{folder} has no {', '.join(missing)}: put it back (a fresh "
                            "folder to copy it from: python -m common.exercises NEW_DIR)")
    return package


def owner_of(package: ModuleType, file: str, name: str) -> tuple[object, str]:
    """(the module or class that holds exercise name, the function's name in it):
    ("functional.py", "softmax") -> (package.functional, "softmax"),
    ("layers.py", "Linear.backward") -> (package.layers.Linear, "backward")."""
    owner = getattr(package, file.removesuffix(".py"), None)
    *classes, function = name.split(".")
    for part in classes:
        owner = getattr(owner, part, None)
    return owner, function


class ReturnedNothing(TypeError):
    """An exercise that must return a tensor returned None."""


def checked(function, name: str, calls: set[str] | None = None):
    """function, which adds name to calls when called, and raises ReturnedNothing where it
    returns None though its signature says it returns a tensor (a forgotten return)."""
    returns_tensor = inspect.signature(function).return_annotation is torch.Tensor
    code = inspect.unwrap(function).__code__

    @functools.wraps(function)
    def exercise(*args, **kwargs):
        if calls is not None:
            calls.add(name)
        result = function(*args, **kwargs)
        if result is None and returns_tensor:
            raise ReturnedNothing(f"{name} returned None ({shown(code.co_filename)} line "
                                  f"{code.co_firstlineno}): did you forget its return?")
        return result
    return exercise


def stub_name(error: BaseException) -> str | None:
    """The exercise whose stub raised error, exactly as written: "softmax" for
    NotImplementedError("softmax is not written yet"); None for any other error."""
    if type(error) is NotImplementedError:
        name = str(error).removesuffix(NOT_WRITTEN)
        if name in HINTS and str(error) == f"{name}{NOT_WRITTEN}":
            return name
    return None


def unfinished(error: BaseException) -> bool:
    """Whether error says an exercise is not finished: a stub, or a forgotten return."""
    return stub_name(error) is not None or isinstance(error, ReturnedNothing)


def explained(error: BaseException, folder: Path, anywhere: bool = False) -> str | None:
    """One line for an error of the learner's: a stub's ("softmax is not written yet
    (DIR/functional.py line 21). Hint: ..."), a forgotten return, or any other raised in
    folder ("DIR/functional.py line 23, in softmax: TypeError: ..."); with anywhere, also one
    raised elsewhere while folder's code ran. None for any other error."""
    name, where = stub_name(error), place(error, folder)
    if name is not None:
        at = f" ({where.at})" if where else ""
        return f"{name}{NOT_WRITTEN}{at}. Hint: {HINTS[name]}"
    if isinstance(error, ReturnedNothing):
        return str(error)
    if where is not None:
        return f"{where}: {one_line(error)}"
    anyplace = place(error) if anywhere else None
    if anyplace is not None:
        return f"{anyplace}: {one_line(error)} (with {folder} as manual)"
    return None


def manual_flag(folder: Path) -> str:
    """"--manual DIR", or "--manual=DIR" for a folder outside the project: pytest reads the
    former's DIR as a test path too, before it knows the option, and from one outside the
    project it would not find the project's settings and plugin."""
    inside = folder.resolve().is_relative_to(ROOT)
    return f"--manual {folder}" if inside else f"--manual={folder}"


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
    flag = manual_flag(folder)
    print(f"Each docstring gives the formula and the shapes. Then, after each function:\n"
          f"  python -m pytest {flag}    the gradient checks, exercise by exercise\n"
          f"  python compare.py {flag}   the lock step against torch "
          "(softmax regression needs 1-6; --model mlp 7, --batchnorm 8, --optimizer adam 9)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
