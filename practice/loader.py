"""An exercise folder imported as the package manual, each exercise wrapped so that a stub, a
forgotten return or any error of the learner's code is told in one line."""

import ast
import functools
import importlib.util
import inspect
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from lockstep.tracebacks import one_line, place, shown
from practice.exercises import (
    EXERCISES,
    HINTS,
    NAMES,
    NOT_WRITTEN,
    ExerciseError,
    functions,
    stub,
)


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
                            f"python -m practice {folder})")
    if not (folder / "__init__.py").is_file():
        raise ExerciseError(f"{folder} is not a package: it has no __init__.py (write a new "
                            "folder with python -m practice DIR)")
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
        wrapper = checked(getattr(owner, function), name, calls)
        setattr(owner, function, wrapper)
        in_tables(owner, wrapper)
    return package


def in_tables(owner, wrapper) -> None:
    """Point owner's tables at the wrapper too (functions.LAYER_OPS holds basic_block as
    functions.py defined it): a call through a table (functions.forward) counts as a call of
    the exercise."""
    for table in [value for value in vars(owner).values() if isinstance(value, dict)]:
        for key, value in table.items():
            if value is wrapper.__wrapped__:
                table[key] = wrapper


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
                            "folder to copy it from: python -m practice NEW_DIR)")
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
    import torch  # here, not above: `pytest --help` and make test's first process need none

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


# -- what is still a stub, read from the source: nothing of the folder runs -------------------

def stubs(folder: Path) -> dict[str, str]:
    """Each exercise whose body in folder is still its stub, in EXERCISES order, with where its
    raise is ("DIR/functional.py line 21", as a stub's error names it when it runs). A stub:
    the statements after the docstring are stub(name)'s, the raise of NotImplementedError(
    "<name> is not written yet"); its hint, a comment, may be changed or gone, since it does not
    run. Read with ast, importing nothing. A file that is missing or does not parse holds no
    stub here: load() says what is wrong with it."""
    found, trees = {}, {}
    for file, name, _ in EXERCISES:
        if file not in trees:
            trees[file] = parsed(Path(folder) / file)
        function = trees[file].get(name)
        if function is not None and statements(function) == statements(stub(name)):
            found[name] = f"{shown(Path(folder) / file)} line {function.body[-1].lineno}"
    return found


def parsed(path: Path) -> dict[str, ast.FunctionDef]:
    """exercises.functions of the file at path; {} if it cannot be read or parsed."""
    try:
        return functions(path.read_text())
    except (OSError, SyntaxError, ValueError):  # ValueError: not UTF-8, or a null byte
        return {}


def statements(body: ast.FunctionDef | list[str]) -> list[str]:
    """The statements of a function after its docstring, or of lines of source, as ast.dump
    gives them: the same code whatever its comments, blank lines and indentation."""
    if isinstance(body, list):
        return [ast.dump(node) for node in ast.parse("\n".join(body)).body]
    nodes = body.body[1:] if ast.get_docstring(body) is not None else body.body
    return [ast.dump(node) for node in nodes]


def first_not_written(folder: Path, among: Iterable[str] = NAMES) -> str | None:
    """The first exercise of `among`, in EXERCISES order, that is still its stub in folder
    (stubs); None if none is. among: the exercises a run needs (exercises.needed); all of
    them by default, as the grader's "Next:" takes them."""
    among = set(among)
    return next((name for name in stubs(folder) if name in among), None)


def not_written_line(folder: Path, name: str) -> str | None:
    """The line explained() gives for exercise name's stub when it runs, from the source alone:
    "softmax is not written yet (DIR/functional.py line 21). Hint: ..."; None if name is not
    a stub in folder."""
    where = stubs(folder).get(name)
    return None if where is None else f"{name}{NOT_WRITTEN} ({where}). Hint: {HINTS[name]}"
