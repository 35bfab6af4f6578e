"""Grading an exercise folder: python -m pytest --manual DIR (written by python -m practice).

The gradient-check suite (GRADED) runs against DIR, imported as the package `manual`, instead
of manual/; the deliberately broken twins (marker "twin"), which test the checks rather than
the learner, stay out. Each check counts for the last exercise it reached in this run, in the
order of practice.exercises.EXERCISES: the earlier ones it calls have checks of their own. A
check that reaches a function not written yet is skipped, not failed. At the end, one line per
exercise says whether its checks pass, which fail and why (in the tutor's words where a check
holds the learner's tensor against torch's: lockstep.kinds, as compare.py says them), or that
it is not written yet, with its hint; then what to do next. An exercise whose body is still its
stub (practice.loader.stubs, read from the source) is not written yet even where no check
reached it, and "Next:" names the first of them, the one compare.py names
(loader.first_not_written). The tracebacks are left out (--tb=short brings them back).

The property checks (hypothesis) try as many examples as in make test, but a failing one is
reported as found, not shrunk to a smaller one first (the summary shows no example anyway), and
no failing example is kept for the next run (no database): each run grades the folder afresh,
in seconds, whatever the runs before it found.
"""

import linecache
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import hypothesis
import pytest

from lockstep.tracebacks import place
from practice import exercises, loader

GRADED = ("test_functional.py", "test_model.py", "test_layers.py", "test_conv.py",
          "test_optim.py", "test_training_step.py", "test_autograd.py", "test_graph.py",
          "test_resnet.py", "test_all_reduce.py")
SHOWN_FAILURES = 3  # per exercise
NO_PATTERN = "no simple pattern"  # what lockstep.kinds says of a difference it cannot name
hypothesis.settings.register_profile("grading", database=None, phases=[
    phase for phase in hypothesis.Phase if phase not in (hypothesis.Phase.shrink,
                                                         hypothesis.Phase.explain)])
TESTS = Path(__file__).resolve().parent.parent / "tests"  # where GRADED are
# Plugins a grading has no use for, and what each would cost it: nbmake (no notebook here, and
# no advert for it); logging, which around every phase of every check walks every logger (torch
# makes nearly 200) and hooks its handler into each that keeps its records from the root;
# unraisableexception, a full garbage collection at the end.
UNUSED_PLUGINS = ("nbmake", "logging", "unraisableexception")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--manual", type=Path, metavar="DIR",
                     help="grade DIR, an exercise folder (python -m practice DIR): "
                          "run the gradient checks against it instead of manual/")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> int | None:
    """With --manual DIR: import DIR as manual before any test module imports manual, or
    stop with one line and exit status 2."""
    folder = config.getoption("manual")
    if folder is None:
        return None
    grading = Grading(folder)
    try:
        loader.load(folder, keep=True, calls=grading.called)
    except exercises.ExerciseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    hypothesis.settings.load_profile("grading")  # before the test modules make their settings
    if config.args_source != pytest.Config.ArgsSource.ARGS:  # no test files named
        config.args = [str(TESTS / name) for name in GRADED]
    if config.option.tbstyle == "auto":
        config.option.tbstyle = "no"
    if config.option.reportchars == "fE":  # the default: the summary below says it instead
        config.option.reportchars = ""
    for plugin in UNUSED_PLUGINS:  # before they are configured, so that none starts
        if config.pluginmanager.has_plugin(plugin):
            config.pluginmanager.unregister(name=plugin)
    config.pluginmanager.register(grading, "grading")
    return None


@dataclass
class Check:
    test: str  # tests/test_model.py::test_backward_matches_autograd[float32]
    exercise: str | None  # the last exercise it called; None if it called none
    called: set[str]
    outcome: str  # passed, failed or skipped
    message: str = ""
    told: bool = False  # the message is the tutor's: how the learner's tensor differs


class Grading:
    """The plugin --manual registers: records which exercises each check calls (through
    practice.loader.load) and turns each check's result into guidance."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.called: set[str] = set()  # by the running check
        self.checks: list[Check] = []
        self.not_written: dict[str, str] = {}  # exercise: "DIR/functional.py line 21"

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
        error = deciding(call.excinfo.value) if call.excinfo else None
        stub = loader.stub_name(error) if error else None
        if stub is not None:
            where = place(error, self.folder)
            check.exercise, check.outcome = stub, "skipped"
            report.outcome = "skipped"
            report.longrepr = (where.file, where.line,
                               f"Skipped: {loader.explained(error, self.folder)}")
            self.not_written.setdefault(stub, where.at)
        elif report.outcome == "failed" and error is None:  # no exception: a strict xfail passed
            check.message = str(report.longrepr)
        elif report.outcome == "failed":
            tutor = getattr(error, "told", None) or refused_gradient(error, self.folder)
            check.message = tutor or loader.explained(error, self.folder) or first_lines(error)
            check.told = tutor is not None
        self.checks.append(check)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        # what is still a stub in the source counts as not written yet even where no check
        # reached it (a -k run): "Next:" names loader.first_not_written's, as compare.py does
        self.not_written = loader.stubs(self.folder) | self.not_written
        write = terminalreporter.write_line
        write(f"\nthe exercises of {self.folder}/, in the order to write them (a check counts "
              "for the last exercise it reached):")
        failing: set[str] = set()  # exercises that fail checks of their own
        for number, name in enumerate(exercises.NAMES, start=1):
            line, *failures = self.row(name, failing)
            write(f"{number:2}. {name:21} {line}")
            for failure in failures:
                write(failure)
        others = [check for check in self.checks if check.exercise is None]
        broken = [check for check in others if check.outcome == "failed"]
        write(f"    everything else in {self.folder}/ (forward passes, initialization, names): "
              f"{len(others) - len(broken)} of {len(others)} checks pass")
        for failure in failure_lines(broken):
            write(failure)
        write(self.next_step(failing or broken))

    def row(self, name: str, failing: set[str]) -> list[str]:
        """The summary's line for exercise name, and the failures it shows; adds name to
        failing if it fails checks of its own (not only through an earlier exercise)."""
        mine = [check for check in self.checks if check.exercise == name]
        failed = [check for check in mine if check.outcome == "failed"]
        own = [check for check in failed if not check.called & failing]
        passed = sum(check.outcome == "passed" for check in mine)
        if name in self.not_written:
            return [f"not written yet ({self.not_written[name]}). "
                    f"Hint: {exercises.HINTS[name]}"]
        if own:
            failing.add(name)
            return [f"FAILS {len(own)} of its {len(mine)} checks, for example:",
                    *failure_lines(own)]
        if failed:
            causes = ordered(set.union(*(check.called & failing for check in failed)))
            return [f"{passed} checks pass; {len(failed)} fail because they use "
                    f"{' and '.join(causes)}, which fails checks of its own"]
        if passed:
            return [f"ok: its {passed} checks pass"]
        waits = ordered({check.exercise for check in self.checks
                         if check.outcome == "skipped" and name in check.called})
        if waits:
            return [f"its checks wait for {' and '.join(waits)} (not written yet)"]
        return ["no check reached it in this run"]

    def next_step(self, failures: bool) -> str:
        if failures:
            return ("Fix the first exercise that fails: the later ones' checks use it too. "
                    "--tb=short shows the tracebacks.")
        left = [name for name in exercises.NAMES if name in self.not_written]
        if left:
            return f"Next: {left[0]}, in {self.not_written[left[0]]}."
        graded = {check.exercise for check in self.checks if check.outcome == "passed"}
        if not set(exercises.NAMES) <= graded:
            return ("Some exercises had no check in this run: run it without test paths "
                    "or -k to grade them all.")
        return (f"All {len(exercises.NAMES)} exercises pass their checks. Now train them "
                f"against torch: python compare.py --manual {self.folder}")


def ordered(names: set[str]) -> list[str]:
    return sorted(names, key=exercises.NAMES.index)


def failure_lines(checks: list[Check]) -> list[str]:
    """An indented line for the first failure of each of the first SHOWN_FAILURES tests
    (parametrizations aside); first those the tutor could tell how the tensor differs, and
    of those first the ones that found more than "no simple pattern" (the node whose
    backward is wrong, fed torch's gradient: test_graph.py)."""
    first = {}
    for check in sorted(checks, key=lambda check: (not check.told,
                                                   NO_PATTERN in check.message)):
        first.setdefault(check.test.split("[")[0], check)
    return [f"       {check.test.removeprefix('tests/')}: {check.message}"
            for check in list(first.values())[:SHOWN_FAILURES]]


ASSIGNED = re.compile(r"attempting to assign a gradient of size '\[([\d, ]*)\]' to a tensor of "
                      r"size '\[([\d, ]*)\]'")


def refused_gradient(error: BaseException | None, folder: Path) -> str | None:
    """The tutor's sentence for a .grad of the wrong shape, which torch refused to take
    (RuntimeError: attempting to assign a gradient of size ...), named from the learner's
    line that assigned it ("self.weight.grad = ..."); None for any other error."""
    from lockstep.kinds import shapes_sentence, told  # torch: not before a grading needs it

    found = ASSIGNED.search(str(error)) if isinstance(error, RuntimeError) else None
    where = found and place(error, folder)
    if not where:
        return None
    assigned = re.search(r"([\w.]+)\.grad\s*=", linecache.getline(where.file, where.line))
    name = f"{assigned.group(1).removeprefix('self.')}.grad" if assigned else ".grad"
    shapes = [tuple(int(size) for size in sizes.split(",") if size.strip())
              for sizes in found.groups()]
    return f"{where.at}: {told(name, 'shape', shapes_sentence(*shapes))}"


def deciding(error: BaseException) -> BaseException:
    """The error that decides a check's outcome. Hypothesis groups the distinct errors it
    found: the first that is not a stub's, else the first."""
    leaves = [error]
    while any(getattr(leaf, "exceptions", None) for leaf in leaves):
        leaves = [inner for leaf in leaves for inner in getattr(leaf, "exceptions", [leaf])]
    return next((leaf for leaf in leaves if loader.stub_name(leaf) is None), leaves[0])


def first_lines(error: BaseException | None, limit: int = 200) -> str:
    """The first lines of error's message (and its type, unless an AssertionError), joined into
    one, at most `limit` characters; without pytest's "Use -v" advice or gradcheck's tensors."""
    text = str(error).split("numerical:tensor")[0].rstrip(" ,\n")
    lines = [line.strip() for line in text.splitlines()
             if line.strip() and not line.strip().startswith("Use -v")]
    if not isinstance(error, AssertionError) or not lines:
        lines.insert(0, type(error).__name__ + (":" if lines else ""))
    text = " ".join(lines[:4])
    return text if len(text) <= limit else text[:limit - 3] + "..."
