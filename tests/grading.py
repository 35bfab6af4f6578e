"""Grading an exercise folder: python -m pytest --manual DIR (written by common.exercises).

The gradient-check suite (GRADED) runs against DIR, imported as the package `manual`, instead
of manual/; the deliberately broken twins (marker "twin"), which test the checks rather than
the learner, stay out. Each check counts for the last exercise it calls, in the order of
common.exercises.EXERCISES: the earlier ones it calls have checks of their own. A check that
reaches a function not written yet is skipped, not failed. At the end, one line per exercise
says whether its checks pass, which fail and why, or that it is not written yet, with its hint.
The tracebacks are left out (--tb=short brings them back).
"""

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from common import exercises

GRADED = ("test_functional.py", "test_model.py", "test_layers.py", "test_optim.py",
          "test_training_step.py")
SHOWN_FAILURES = 3  # per exercise


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--manual", type=Path, metavar="DIR",
                     help="grade DIR, an exercise folder (python -m common.exercises DIR): "
                          "run the gradient checks against it instead of manual/")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """With --manual DIR: import DIR as manual before any test module imports manual, or
    stop with one line and exit status 2."""
    folder = config.getoption("manual")
    if folder is None:
        return None
    try:
        package = exercises.load(folder, keep=True)
    except exercises.ExerciseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if config.args_source == pytest.Config.ArgsSource.TESTPATHS:  # no test files named
        config.args = [str(Path(__file__).parent / name) for name in GRADED]
    if config.option.tbstyle == "auto":
        config.option.tbstyle = "no"
    if config.option.reportchars == "fE":  # the default: the summary below says it instead
        config.option.reportchars = ""
    config.pluginmanager.register(Grading(folder, package), "grading")
    return None


@dataclass
class Check:
    test: str  # tests/test_model.py::test_backward_matches_autograd[float32]
    exercise: str | None  # the last exercise it called; None if it called none
    called: set[str]
    outcome: str  # passed, failed or skipped
    message: str = ""


class Grading:
    """The plugin --manual registers: wraps each exercise function of the package to record
    that it was called, and turns each check's result into guidance."""

    def __init__(self, folder: Path, package):
        self.folder = folder
        self.called: set[str] = set()  # by the running check
        self.checks: list[Check] = []
        self.not_written: dict[str, str] = {}  # exercise: the line that says so
        for file, name, _ in exercises.EXERCISES:
            module = getattr(package, file.removesuffix(".py"))
            owner, _, function = name.rpartition(".")
            owner = getattr(module, owner) if owner else module
            setattr(owner, function, self.recording(getattr(owner, function), name))

    def recording(self, function, name: str):
        @functools.wraps(function)
        def recorded(*args, **kwargs):
            self.called.add(name)
            return function(*args, **kwargs)
        return recorded

    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        twins = [item for item in items if item.get_closest_marker("twin")]
        config.hook.pytest_deselected(items=twins)
        items[:] = [item for item in items if not item.get_closest_marker("twin")]

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        self.called.clear()
        yield

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = (yield).get_result()
        if call.when != "call":
            return
        called = sorted(self.called, key=exercises.NAMES.index)
        check = Check(item.nodeid, called[-1] if called else None, set(called), report.outcome)
        error = first_leaf(call.excinfo.value) if call.excinfo else None
        frame = exercises.innermost(error, self.folder) if error else None
        if isinstance(error, NotImplementedError) and frame:
            check.exercise = exercises.exercise_of(error, frame)
            check.outcome = report.outcome = "skipped"
            report.longrepr = (frame.filename, frame.lineno,
                               f"Skipped: {exercises.explained(error, self.folder)}")
            where = f"{exercises.shown(frame.filename)} line {frame.lineno}"
            self.not_written.setdefault(check.exercise, where)
        elif report.outcome == "failed":
            check.message = exercises.explained(error, self.folder) or first_lines(error)
        self.checks.append(check)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        write = terminalreporter.write_line
        write(f"\nthe exercises of {self.folder}/, in the order to write them (a check counts "
              "for the last exercise it calls):")
        failing: set[str] = set()  # exercises that fail checks of their own
        for number, name in enumerate(exercises.NAMES, start=1):
            mine = [check for check in self.checks if check.exercise == name]
            failed = [check for check in mine if check.outcome == "failed"]
            own = [check for check in failed if not check.called & failing]
            passed = sum(check.outcome == "passed" for check in mine)
            head = f"{number:2}. {name:21}"
            if name in self.not_written:
                write(f"{head} not written yet ({self.not_written[name]}). "
                      f"Hint: {exercises.HINTS[name]}")
            elif own:
                failing.add(name)
                write(f"{head} FAILS {len(own)} of its {len(mine)} checks, for example:")
                for check in examples(own):
                    write(f"       {check.test.removeprefix('tests/')}: {check.message}")
            elif failed:
                causes = sorted(set.union(*(check.called & failing for check in failed)),
                                key=exercises.NAMES.index)
                write(f"{head} {passed} checks pass; {len(failed)} fail because they use "
                      f"{' and '.join(causes)}, which fails checks of its own")
            elif passed:
                write(f"{head} ok: its {passed} checks pass")
            else:
                write(f"{head} no check reached it yet")
        others = [check for check in self.checks if check.exercise is None]
        broken = [check for check in others if check.outcome == "failed"]
        write(f"    everything else in {self.folder}/ (forward passes, initialization, names): "
              f"{len(others) - len(broken)} of {len(others)} checks pass")
        for check in examples(broken):
            write(f"       {check.test.removeprefix('tests/')}: {check.message}")
        left = [name for name in exercises.NAMES if name in self.not_written]
        if failing or broken:
            write("Fix the first exercise that fails first: later checks use it too. "
                  "--tb=short shows the tracebacks.")
        elif left:
            write(f"Next: {left[0]}, in {self.not_written[left[0]]}.")
        else:
            write(f"All {len(exercises.NAMES)} exercises pass their checks. Now train them "
                  f"against torch: python compare.py --manual {self.folder}")


def examples(checks: list[Check]) -> list[Check]:
    """The first failure of each of the first SHOWN_FAILURES tests (parametrizations aside)."""
    first = {}
    for check in checks:
        first.setdefault(check.test.split("[")[0], check)
    return list(first.values())[:SHOWN_FAILURES]


def first_leaf(error: BaseException) -> BaseException:
    """error, or the first error it groups (hypothesis groups the distinct failures it found)."""
    while getattr(error, "exceptions", None):
        error = error.exceptions[0]
    return error


def first_lines(error: BaseException | None, limit: int = 200) -> str:
    """The first lines of error's message (and its type, unless an AssertionError), joined into
    one, at most `limit` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not isinstance(error, AssertionError) or not lines:
        lines.insert(0, type(error).__name__ + (":" if lines else ""))
    text = " ".join(lines[:4])
    return text if len(text) <= limit else text[:limit - 3] + "..."
