"""The exercises: the folder python -m practice writes, and its grading by the gradient checks.

`python -m pytest --manual DIR` runs in a process of its own here (tests.processes: the folders
in turn), since it imports DIR as the package `manual` for the whole pytest run. Each folder is
one a learner could have: fresh, half done, done, with a seeded bug, with a syntax error.
compare.py --manual: test_compare_exercises.py.
"""

import ast
import inspect
import os
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import hypothesis
import pytest
import torch
from hypothesis import Phase

import manual
from lockstep.learner import Learner
from practice import exercises, loader
from practice.exercises import EXERCISES, NAMES, ExerciseError
from practice.grading import Check, Grading
from tests.processes import pytest_in_turn
from tests.test_autograd import ADDS_AT_FAN_OUT, OVERWRITES_AT_FAN_OUT

ROOT = Path(__file__).resolve().parent.parent
MANUAL = ROOT / "manual"

# What a learner writes: softmax as in manual/, and a cross_entropy of their own that does
# not call log_softmax (not written yet), each put in place of its stub.
LEARNER_SOFTMAX = """\
    exp = (logits - logits.amax(dim=-1, keepdim=True)).exp()
    return exp / exp.sum(dim=-1, keepdim=True)
"""
LEARNER_CROSS_ENTROPY = """\
    check_arguments(reduction, label_smoothing)
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    log_p = shifted - shifted.exp().sum(dim=-1, keepdim=True).log()
    losses = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    losses = (1 - label_smoothing) * losses - label_smoothing * log_p.mean(dim=-1)
    return {"mean": losses.mean, "sum": losses.sum, "none": lambda: losses}[reduction]()
"""


def solve(folder: Path, name: str, body: str) -> None:
    """Put body in place of exercise name's hint and raise, as a learner does."""
    file = folder / dict((name, file) for file, name, _ in EXERCISES)[name]
    stub = "".join(f"{' ' * (8 if '.' in name else 4)}{line}\n" for line in exercises.stub(name))
    assert stub in file.read_text(), name
    file.write_text(file.read_text().replace(stub, body))


RIGHT_GRAD = "grad = softmax(logits) - target_distribution(logits, targets, label_smoothing)"
# The mistakes every learner makes, each seeded into a folder with every exercise written:
# the file, manual/'s line, the learner's line in its place, the exercise it belongs to, and
# what the tutor says, in compare.py and in the grader alike: the kind, then its words.
SEEDED = {
    "one-hot-shifted": (
        "functional.py", RIGHT_GRAD,
        "grad = softmax(logits) - target_distribution(logits, (targets + 1) % logits.shape[-1], "
        "label_smoothing)", "cross_entropy_grad", "shifted",
        r"in every row the difference sits at the target's column y and at column y \+ 1: the "
        r"one-hot is shifted"),
    "bias-gradient-as-mean": (
        "layers.py", "self.bias.grad = grad_output.sum(dim=0)",
        "self.bias.grad = grad_output.mean(dim=0)", "Linear.backward", "scale",
        r"manual's is 1/(\d+) of torch's, 1/N for the batch size N = \1: did you divide by the "
        r"batch size where torch sums"),
    "sign-flipped": (
        "functional.py", RIGHT_GRAD,
        "grad = target_distribution(logits, targets, label_smoothing) - softmax(logits)",
        "cross_entropy_grad", "scale", r"manual's is -1 x torch's: the sign is flipped\."),
    "weight-gradient-transposed": (
        "layers.py", "self.weight.grad = grad_output.T @ self.input",
        "self.weight.grad = self.input.T @ grad_output", "Linear.backward", "shape",
        r"manual's is \((\d+), (\d+)\), torch's \(\2, \1\), .*the product is taken in the wrong "
        r"order \(x\^T g where g\^T x belongs\?\)\."),
}


def seed(case: str):
    """The function that writes mistake SEEDED[case] into a folder: manual/'s line (the first
    of them, Linear's in layers.py) replaced by the learner's."""
    file, right, wrong = SEEDED[case][:3]

    def write(folder: Path) -> None:
        path = folder / file
        assert right in path.read_text(), case
        path.write_text(path.read_text().replace(right, wrong, 1))
    return write


# cross_entropy_grad as a learner writes it, refusing 'none' in words of their own
OWN_REFUSAL = """\
    check_arguments(reduction, label_smoothing)
    if reduction == "none":
        raise ValueError("no single gradient for a vector of losses")
    grad = softmax(logits) - target_distribution(logits, targets, label_smoothing)
    return grad / len(logits) if reduction == "mean" else grad
"""


def overwrite_at_fan_out(folder: Path) -> None:
    """The engine's mistake: = where backward must add (+) into a node's buffer."""
    path = folder / "autograd.py"
    assert path.read_text().count(ADDS_AT_FAN_OUT) == 1
    path.write_text(path.read_text().replace(ADDS_AT_FAN_OUT, OVERWRITES_AT_FAN_OUT))


def write_softmax_and_cross_entropy(folder: Path) -> None:
    solve(folder, "softmax", LEARNER_SOFTMAX)
    solve(folder, "cross_entropy", LEARNER_CROSS_ENTROPY)


def write_a_softmax_that_raises(folder: Path) -> None:
    """An error of the learner's own, a NotImplementedError that is no stub's among them."""
    solve(folder, "softmax", "    raise NotImplementedError('the max shift later')\n")


# The folders python -m pytest --manual grades below: (the exercises left to write, then what
# the learner did). None: no folder at all.
FOLDERS = {
    "fresh": (NAMES, lambda folder: None),
    "softmax-and-cross-entropy": (NAMES, write_softmax_and_cross_entropy),
    "softmax-regression-done": (NAMES[6:], lambda folder: None),
    "all-done": ([], lambda folder: None),
    **{case: ([], seed(case)) for case in SEEDED},
    "own-refusal": (["cross_entropy_grad"], lambda folder: solve(
        folder, "cross_entropy_grad", OWN_REFUSAL)),
    "softmax-raises": (NAMES, write_a_softmax_that_raises),
    "syntax-error": (NAMES, lambda folder: (folder / "functional.py").write_text("def f(:\n")),
    "engine-overwrites": ([], overwrite_at_fan_out),
    "missing": None,
}
# Where the grading also prints hypothesis's statistics: which phases each property check ran.
SHOWN_STATISTICS = {"softmax-raises": ["--hypothesis-show-statistics"]}
# Where only some checks run (all of them take seconds): the test files, or -k, by case.
FUNCTIONAL = str(ROOT / "tests" / "test_functional.py")
NARROW = {"one-hot-shifted": [FUNCTIONAL, "-k", "cross_entropy_grad"],
          "engine-overwrites": [str(ROOT / "tests" / "test_autograd.py")],
          "sign-flipped": [FUNCTIONAL, "-k", "cross_entropy_grad"],
          "weight-gradient-transposed": [str(ROOT / "tests" / "test_model.py")],
          "own-refusal": [FUNCTIONAL, "-k", "cross_entropy_grad"]}


def printed_arguments(folder: Path) -> tuple[Path, list[str]]:
    """Where to run the grader for folder and its arguments, as python -m practice prints them
    (exercises.commands): the project's folder, then `python -m pytest ARGS`."""
    where, command = exercises.commands(folder)[:2]
    assert where.endswith(f"from the project's folder (cd {ROOT}):"), where
    words = shlex.split(command.split("    ")[0])
    assert words[:3] == ["python", "-m", "pytest"], command
    return ROOT, words[3:]


# The grader run as the printed command is not: from outside the project, and with a space
# between --manual and a folder outside the project (the fresh folder's), each failing alike.
ELSEWHERE = {"outside-the-project": lambda base, folder: (base, [f"--manual={folder}"]),
             "a-space-before-a-folder-outside": lambda base, folder: (
                 ROOT, ["--manual", str(folder)])}


class Graded(dict):
    """Each folder of FOLDERS graded by the command python -m practice prints for it
    (`python -m pytest --manual=DIR` from the project's folder), by case: (exit status, stdout
    and stderr, the summary's line of each exercise by name); and the fresh folder graded as
    ELSEWHERE says. The gradings run in turn in a process of their own (tests.processes),
    started at the first lookup (not at the fixture's setup, so that `pytest --setup-only`
    starts none)."""

    def __init__(self, base: Path):
        super().__init__()
        self.base = base

    def __missing__(self, case: str) -> tuple[int, str, dict[str, str]]:
        folders = {}
        for name, how in FOLDERS.items():
            folders[name] = self.base / name
            if how is not None:
                exercises.write(folders[name], names=how[0])
                how[1](folders[name])
        runs = [(*printed_arguments(folder), name) for name, folder in folders.items()]
        runs += [(*where(self.base, folders["fresh"]), name) for name, where in ELSEWHERE.items()]
        done = pytest_in_turn([(cwd, dict(os.environ), [*args, "-p", "no:cacheprovider",
                                                        *SHOWN_STATISTICS.get(name, []),
                                                        *NARROW.get(name, [])])
                               for cwd, args, name in runs])
        for (_, _, name), (status, output) in zip(runs, done, strict=True):
            rows = dict(re.findall(r"^ ?\d+\. (\S+) +(.*)$", output, re.MULTILINE))
            self[name] = status, output, rows
        return self[case]


@pytest.fixture(scope="module")  # make test keeps a module's tests in one process (--dist loadfile)
def graded(tmp_path_factory) -> Graded:
    return Graded(tmp_path_factory.mktemp("grading"))


def rename_relu_backward(folder: Path) -> None:
    layers = folder / "layers.py"
    before, relu = layers.read_text().split("class ReLU:")
    layers.write_text(before + "class ReLU:" + relu.replace("def backward(", "def backwards(", 1))


# -- the folder ----------------------------------------------------------------------------

def test_every_exercise_loses_its_body_and_keeps_its_signature_and_docstring(tmp_path):
    """Each exercise: manual's signature and docstring, then the hint and the raise; every other
    function of manual/, and every other file, exactly as in manual/."""
    exercises.write(tmp_path / "ex")
    assert sorted(path.name for path in (tmp_path / "ex").iterdir()) == \
        sorted(path.name for path in MANUAL.glob("*.py"))
    for path in MANUAL.glob("*.py"):
        source, written = path.read_text(), (tmp_path / "ex" / path.name).read_text()
        originals, stubs = exercises.functions(source), exercises.functions(written)
        assert originals.keys() == stubs.keys(), path.name
        here = {name for file, name, _ in exercises.EXERCISES if file == path.name}
        for name, original in originals.items():
            stub = stubs[name]
            if name in here:  # functions.py's log_softmax is its node, not the exercise
                assert ast.get_docstring(stub) == ast.get_docstring(original), name
                assert ast.unparse(stub.args) == ast.unparse(original.args), name
                assert len(stub.body) == 2 and isinstance(stub.body[1], ast.Raise), name
                hint = written.splitlines()[stub.body[1].lineno - 2].strip()
                assert hint == f"# Hint: {exercises.HINTS[name]}", name
            else:
                assert ast.unparse(stub) == ast.unparse(original), name
    defined = {(path.name, name) for path in MANUAL.glob("*.py")
               for name in exercises.functions(path.read_text())}
    assert {(file, name) for file, name, _ in exercises.EXERCISES} <= defined


def test_an_exercise_manual_does_not_define_is_refused():
    """The list cannot drift from manual/: a name it does not define stops the writing."""
    with pytest.raises(ValueError, match=r"manual/ defines no Linear\.forwards"):
        exercises.take_out((MANUAL / "layers.py").read_text(), ["Linear.forwards"])


def test_the_command_writes_the_folder_and_refuses_to_overwrite_work(tmp_path, capsys):
    """python -m practice DIR lists the exercises in order; run again, it refuses with
    one line and exit 2 rather than overwrite what the learner wrote."""
    assert exercises.main([str(tmp_path / "ex")]) == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^ +\d+\. (\S+)", out, re.MULTILINE)
    assert listed == NAMES
    assert f"python -m pytest --manual={tmp_path / 'ex'}" in out  # outside the project
    assert exercises.main([str(tmp_path / "ex")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "already exists and is not empty" in err


def test_the_flag_has_an_equals_sign_only_for_a_folder_outside_the_project(tmp_path,
                                                                          monkeypatch):
    """pytest reads "--manual DIR" right only for a DIR inside the project (see manual_flag);
    DIR as seen from the project's folder, wherever python -m practice ran."""
    monkeypatch.chdir(ROOT)
    assert exercises.manual_flag(Path("exercises")) == "--manual exercises"
    assert exercises.manual_flag(ROOT / "ex") == "--manual ex"
    assert exercises.manual_flag(tmp_path) == f"--manual={tmp_path}"
    monkeypatch.chdir(ROOT / "practice")
    assert exercises.manual_flag(Path("ex")) == f"--manual {Path('practice', 'ex')}"
    monkeypatch.chdir(tmp_path)
    assert exercises.manual_flag(Path("ex")) == f"--manual={tmp_path / 'ex'}"


def test_the_commands_say_to_run_them_from_the_project_and_name_it(tmp_path, monkeypatch,
                                                                     capsys):
    """python -m practice run outside the project (with the project importable): the commands
    it prints name the project's folder to run them from, and the folder as seen from there.
    That they work from there, and only from there: the gradings below run them
    (printed_arguments, ELSEWHERE)."""
    monkeypatch.chdir(tmp_path)
    assert exercises.main(["ex"]) == 0
    out = capsys.readouterr().out
    assert f"Then, after each function, from the project's folder (cd {ROOT}):\n" in out
    assert f"  python -m pytest --manual={tmp_path / 'ex'}    the gradient checks" in out
    assert f"  python compare.py --manual={tmp_path / 'ex'}   the lock step" in out


# -- what is not written yet, read from the source (compare.py names the same first) ------------

def test_first_not_written_reads_the_stubs_from_the_source(tmp_path):
    """The first exercise, in order, whose body is still the stub: softmax in a fresh folder,
    then the next one as each is written; among: only those a run needs. Its hint edited or
    gone, a stub is a stub (it raises the same); code before the raise makes it written. A file
    that does not parse holds no stub (load says what is wrong). Nothing is imported."""
    folder = tmp_path / "ex"
    exercises.write(folder)
    modules = set(sys.modules)
    assert loader.first_not_written(folder) == "softmax"
    assert list(loader.stubs(folder)) == NAMES
    assert loader.first_not_written(folder, among=NAMES[6:]) == "ReLU.backward"
    solve(folder, "softmax", LEARNER_SOFTMAX)
    assert loader.first_not_written(folder) == "log_softmax"
    functional = folder / "functional.py"
    functional.write_text(functional.read_text().replace(
        f"# Hint: {exercises.HINTS['log_softmax']}\n", "# my turn next\n"))
    assert loader.first_not_written(folder) == "log_softmax"
    functional.write_text(functional.read_text().replace(
        "    # my turn next\n", "    shifted = logits - logits.amax(dim=-1, keepdim=True)\n"))
    assert loader.first_not_written(folder) == "cross_entropy"
    assert set(sys.modules) == modules  # none of the folder's files ran
    functional.write_text("def f(:\n")
    assert loader.first_not_written(folder) == "Linear.backward"
    written = tmp_path / "done"
    exercises.write(written, names=[])
    assert loader.first_not_written(written) is None and loader.stubs(written) == {}
    assert loader.first_not_written(tmp_path / "missing") is None


def test_not_written_line_is_the_line_the_stub_gives_when_it_runs(tmp_path):
    """For each exercise of a fresh folder, not_written_line (from the source) is the very line
    loader.explained gives for the stub's error when it runs: compare.py can say it before
    running anything. None for an exercise that is written."""
    folder = tmp_path / "ex"
    exercises.write(folder)
    package = loader.load(folder)
    for file, name, _ in EXERCISES:
        function = getattr(*loader.owner_of(package, file, name))
        parameters = inspect.signature(function).parameters.values()
        arguments = [None] * sum(parameter.default is inspect.Parameter.empty
                                 for parameter in parameters)
        with pytest.raises(NotImplementedError) as error:
            function(*arguments)
        assert loader.not_written_line(folder, name) == loader.explained(error.value, folder)
    solve(folder, "softmax", LEARNER_SOFTMAX)
    assert loader.not_written_line(folder, "softmax") is None


CONFIGURATIONS = [("softmax", False, "sgd"), ("mlp", False, "sgd"), ("mlp", True, "adam"),
                  ("cnn", False, "adamw"), ("resnet", False, "sgd")]


@pytest.mark.parametrize("engine", [False, True], ids=["chain", "engine"])
@pytest.mark.parametrize(("model", "batchnorm", "optimizer"), CONFIGURATIONS)
def test_needed_lists_the_exercises_a_run_calls(tmp_path, model, batchnorm, optimizer, engine):
    """exercises.needed (what compare.py looks for with first_not_written) against the calls a
    training step of compare.py's Learner makes, for the model and optimizer of its flags.
    --engine adds backward (autograd.py's); the ResNet trains through the engine either way,
    and calls BatchNorm2d.backward and basic_block (through functions.LAYER_OPS, which
    loader.load points at the wrapper). Its step calls the rest but
    three of the loss's functions: the loss is functions.cross_entropy, which calls
    functional's log_softmax and whose gradient is the graph's, not cross_entropy_grad;
    compare.py needs them all the same (the validation loss, the tutor)."""
    exercises.write(tmp_path / "ex", names=[])
    calls = set()
    package = loader.load(tmp_path / "ex", calls=calls)
    images = model in ("cnn", "resnet")
    learner = Learner(package, 64, 10, {"lr": 0.01}, hidden=16 if model == "mlp" else None,
                      batchnorm=batchnorm, optimizer={"sgd": "SGD", "adam": "Adam",
                                                      "adamw": "AdamW"}[optimizer],
                      channels=(2, 3) if images else None, dtype=torch.float64,
                      engine=engine, resnet=model == "resnet")
    x, y = torch.rand(8, 64, dtype=torch.float64), torch.arange(8) % 10
    learner.gradients(x, y)
    learner.step()
    needed = exercises.needed(model, batchnorm, optimizer, engine)
    through_engine = engine or model == "resnet"
    assert needed == exercises.needed(model, batchnorm, optimizer) + [
        "backward"] * (engine and model != "resnet")
    loss = ["softmax", "cross_entropy", "cross_entropy_grad"] if through_engine else []
    assert sorted(calls, key=NAMES.index) == [name for name in needed if name not in loss]
    if model == "resnet":
        assert needed[-3:] == ["backward", "BatchNorm2d.backward", "basic_block"]


# -- loading it as the package manual ----------------------------------------------------------

def test_load_imports_the_folder_as_manual_and_puts_manual_back(tmp_path):
    exercises.write(tmp_path / "ex")
    package = loader.load(tmp_path / "ex")
    assert Path(package.functional.__file__).parent == tmp_path / "ex"
    assert package.model.SoftmaxRegression.backward is package.layers.Linear.backward
    assert sys.modules["manual"] is manual  # the real one, for every other test
    with pytest.raises(NotImplementedError, match="softmax is not written yet"):
        package.functional.softmax(None)


@pytest.mark.parametrize(("make", "message"), [
    (lambda folder: None, "no such folder"),
    (lambda folder: folder.mkdir(), "is not a package: it has no __init__.py"),
    (lambda folder: (folder / "layers.py").write_text("def f(:\n"),
     r"layers.py line 1: SyntaxError: "),
    (lambda folder: (folder / "optim.py").write_text("import torch\n\n  x = 1\n"),
     r"optim.py line 3: IndentationError: unexpected indent"),
    (lambda folder: (folder / "model.py").write_text("from manual.layers import Conv3d\n"),
     r"model.py line 1: cannot import it: ImportError: cannot import name 'Conv3d'"),
    (rename_relu_backward,
     r"has no ReLU\.backward in layers\.py: put it back"),
])
def test_a_bad_folder_gets_one_line(tmp_path, make, message):
    """Missing, not a package, a syntax error (with file and line), an error at import, or an
    exercise gone."""
    folder = tmp_path / "ex"
    if message not in ("no such folder", "is not a package: it has no __init__.py"):
        exercises.write(folder)
    make(folder)
    with pytest.raises(ExerciseError, match=message) as error:
        loader.load(folder)
    assert "\n" not in str(error.value)
    assert sys.modules["manual"] is manual


def test_explained_says_which_exercise_is_not_written_or_where_the_learners_code_failed(
        tmp_path):
    """A stub's NotImplementedError: its name, file, line and hint. Any other error raised in
    the folder: where and what. An error raised elsewhere is not the learner's: None."""
    exercises.write(tmp_path / "ex", names=["log_softmax"])
    package = loader.load(tmp_path / "ex")
    with pytest.raises(NotImplementedError) as error:
        package.functional.cross_entropy(torch.randn(4, 3), torch.tensor([0, 2, 1, 0]))
    line = loader.explained(error.value, tmp_path / "ex")
    assert re.fullmatch(r"log_softmax is not written yet \(.*functional\.py line \d+\)\. "
                        r"Hint: .+", line)
    with pytest.raises(AttributeError) as error:
        package.functional.softmax("not a tensor")
    assert re.fullmatch(r".*functional\.py line \d+, in softmax: AttributeError: .+",
                        loader.explained(error.value, tmp_path / "ex"))
    with pytest.raises(AttributeError) as error:  # the twin: the real manual's error is not theirs
        manual.functional.softmax("not a tensor")
    assert loader.explained(error.value, tmp_path / "ex") is None


def test_only_a_stubs_own_error_counts_as_not_written(tmp_path):
    """NotImplementedError("softmax is not written yet") is the stub's; one of the learner's own
    (or torch's), another message or a subclass, is an error like any other."""
    assert loader.stub_name(NotImplementedError("softmax is not written yet")) == "softmax"
    for error in (NotImplementedError("eval mode: later"), NotImplementedError(),
                  NotImplementedError("softmax is not written yet, really"),
                  type("Later", (NotImplementedError,), {})("softmax is not written yet"),
                  ValueError("softmax is not written yet")):
        assert loader.stub_name(error) is None, error
        assert not loader.unfinished(error)


def test_a_forgotten_return_names_the_function(tmp_path):
    """An exercise that returns a tensor but returned None raises ReturnedNothing, naming it;
    one that returns nothing by design (SGD.step) may."""
    exercises.write(tmp_path / "ex", names=[])
    log_softmax = "shifted - shifted.exp().sum(dim=-1, keepdim=True).log()"
    solve_plain(tmp_path / "ex", f"    return {log_softmax}", f"    {log_softmax}")
    calls = set()
    package = loader.load(tmp_path / "ex", calls=calls)
    with pytest.raises(loader.ReturnedNothing) as error:
        package.functional.cross_entropy(torch.randn(4, 3), torch.tensor([0, 2, 1, 0]))
    assert calls == {"cross_entropy", "log_softmax"}
    assert loader.unfinished(error.value)
    assert re.fullmatch(r"log_softmax returned None \(.*functional\.py line \d+\): did you "
                        r"forget its return\?", loader.explained(error.value, tmp_path / "ex"))
    weight = torch.ones(2, requires_grad=False)
    weight.grad = torch.ones(2)
    assert package.optim.SGD([weight], lr=0.5).step() is None  # no error: it returns nothing


def solve_plain(folder: Path, old: str, new: str) -> None:
    functional = folder / "functional.py"
    assert functional.read_text().count(old) == 1
    functional.write_text(functional.read_text().replace(old, new))


def test_the_summary_says_what_waits_and_what_no_check_reached():
    """Checks skipped for log_softmax that call cross_entropy: cross_entropy waits for it. An
    exercise no check reached (a -k run): no "all pass", but how to grade them all. Failures
    of a later exercise through an earlier one's: named as such."""
    grading = Grading(Path("ex"))
    grading.checks = [Check("t::a", "log_softmax", {"cross_entropy", "log_softmax"}, "skipped"),
                      Check("t::b", "softmax", {"softmax"}, "passed")]
    grading.not_written["log_softmax"] = "ex/functional.py line 31"
    assert grading.row("cross_entropy", set()) == [
        "its checks wait for log_softmax (not written yet)"]
    assert grading.row("Adam.step", set()) == ["no check reached it in this run"]
    assert grading.next_step(False) == "Next: log_softmax, in ex/functional.py line 31."
    del grading.not_written["log_softmax"]
    assert grading.next_step(False).startswith("Some exercises had no check in this run")
    grading.checks = [Check(f"t::{name}", name, {name}, "passed") for name in NAMES]
    assert grading.next_step(False).startswith(f"All {len(NAMES)} exercises pass their checks.")
    grading.checks += [Check("t::own[1]", "Linear.backward", {"Linear.backward"}, "failed", "m"),
                       Check("t::use", "SGD.step", {"Linear.backward", "SGD.step"}, "failed")]
    failing = set()
    assert grading.row("Linear.backward", failing) == [
        "FAILS 1 of its 2 checks, for example:", "       t::own[1]: m"]
    assert grading.row("SGD.step", failing) == [
        "1 checks pass; 1 fail because they use Linear.backward, which fails checks of its own"]
    assert grading.next_step(True).startswith("Fix the first exercise that fails:")


def summary(grading: Grading) -> list[str]:
    lines = []
    grading.pytest_terminal_summary(SimpleNamespace(write_line=lines.append))
    return lines


def test_a_run_that_reaches_no_stub_still_names_the_first_not_written(tmp_path, monkeypatch):
    """A -k run whose one check passed for softmax: log_softmax, whose stub no check reached,
    is reported not written yet from the source, and "Next:" names it where not_written_line
    says it is. The twin: without the source's stubs the summary could only say that some
    exercises had no check."""
    folder = tmp_path / "ex"
    exercises.write(folder)
    solve(folder, "softmax", LEARNER_SOFTMAX)
    grading = Grading(folder)
    grading.checks = [Check("t::a", "softmax", {"softmax"}, "passed")]
    lines = summary(grading)
    assert lines[-1] == f"Next: log_softmax, in {loader.stubs(folder)['log_softmax']}."
    assert same_first(lines[-1], loader.not_written_line(folder, "log_softmax"))
    assert re.search(r"^ 2\. log_softmax +not written yet \(", "\n".join(lines), re.MULTILINE)
    monkeypatch.setattr(loader, "stubs", lambda folder: {})
    grading = Grading(folder)
    grading.checks = [Check("t::a", "softmax", {"softmax"}, "passed")]
    assert summary(grading)[-1].startswith("Some exercises had no check in this run")


# -- graded by the gradient checks: python -m pytest --manual DIR ------------------------------

def test_a_fresh_folder_reports_every_exercise_not_written_yet_and_fails_nothing(graded):
    status, output, rows = graded["fresh"]
    assert status == 0, output
    assert list(rows) == NAMES
    for number, (file, name, hint) in enumerate(EXERCISES, start=1):
        assert re.fullmatch(rf"not written yet \(.*{file} line \d+\)\. Hint: {re.escape(hint)}",
                            rows[name]), (number, rows[name])
    assert re.search(r"^Next: softmax, in .*functional\.py line \d+\.$", output, re.MULTILINE)
    assert " failed" not in output and "Traceback" not in output


def same_first(next_step: str, line: str) -> bool:
    """Whether the grader's "Next: NAME, in PLACE." and compare.py's one line for a stub,
    "NAME is not written yet (PLACE). Hint: ...", name the same exercise at the same place."""
    grader = re.fullmatch(r"Next: (\S+), in (.+)\.", next_step)
    lock_step = re.match(rf"(\S+){exercises.NOT_WRITTEN} \((.+?)\)\. Hint: ", line)
    return bool(grader and lock_step) and grader.groups() == lock_step.groups()


def next_step(output: str) -> str:
    return re.findall(r"^Next: .*$", output, re.MULTILINE)[-1]


def test_both_graders_name_the_same_first_exercise(graded):
    """A fresh folder: the grader's "Next:" is loader.first_not_written's exercise, where
    not_written_line, compare.py's one line for it, says it is: softmax."""
    status, output, _ = graded["fresh"]
    folder = graded.base / "fresh"
    assert status == 0 and loader.first_not_written(folder) == "softmax"
    line = loader.not_written_line(folder, "softmax")
    assert same_first(next_step(output), line), (next_step(output), line)
    softmax_regression = loader.first_not_written(folder, among=exercises.needed())
    assert softmax_regression == "softmax"


@pytest.mark.twin
def test_the_first_stub_a_run_reaches_is_another_exercise(graded, tmp_path):
    """The twin: what compare.py said before, the first stub its run reaches (cross_entropy, for
    the initial validation loss), is not the exercise the grader names: same_first fails."""
    _, output, _ = graded["fresh"]
    folder = graded.base / "fresh"
    package = loader.load(folder)
    with pytest.raises(NotImplementedError) as error:
        package.functional.cross_entropy(torch.randn(4, 3), torch.tensor([0, 2, 1, 0]))
    line = loader.explained(error.value, folder)
    assert line.startswith("cross_entropy is not written yet")
    assert not same_first(next_step(output), line)


@pytest.mark.parametrize(("case", "written"), [
    ("softmax-and-cross-entropy", ["softmax", "cross_entropy"]),
    ("softmax-regression-done", NAMES[:6]),
    ("all-done", NAMES),
])
def test_what_is_written_passes_and_the_rest_is_not_written_yet(graded, case, written):
    """One at a time, in any state: each exercise written passes its checks (cross_entropy
    without log_softmax too), each other one is reported not written yet, nothing fails.
    All fourteen written: every check of the suite passes, none is skipped."""
    status, output, rows = graded[case]
    assert status == 0, output
    for name in NAMES:
        expected = r"ok: its \d+ checks pass" if name in written else r"not written yet .+"
        assert re.fullmatch(expected, rows[name]), (name, rows[name])
    assert " failed" not in output and ("skipped" in output) == (written != NAMES)
    assert (f"All {len(NAMES)} exercises pass their checks." in output) == (written == NAMES)


def test_a_seeded_bug_fails_exactly_its_functions_checks(graded):
    """Linear.backward with the bias gradient as a mean, graded by every check: its own checks
    fail; every other failing check uses it; every other exercise passes its own."""
    status, output, rows = graded["bias-gradient-as-mean"]
    assert status == 1
    assert re.fullmatch(r"FAILS \d+ of its \d+ checks, for example:", rows["Linear.backward"])
    assert "Traceback" not in output
    for name in NAMES:
        assert name == "Linear.backward" or re.fullmatch(
            r"ok: its \d+ checks pass|\d+ checks pass; \d+ fail because they use "
            r"Linear.backward, which fails checks of its own", rows[name]), (name, rows[name])


def says_what_the_tutor_says(case: str, line: str) -> bool:
    """Whether line gives the tutor's kind and words for mistake SEEDED[case]."""
    _, _, _, _, kind, words = SEEDED[case]
    return re.search(rf" differs \({kind}\): {words}", line) is not None


def examples(output: str, exercise: str) -> list[str]:
    """The failures the summary shows under exercise's row: "test::id: message"."""
    number = NAMES.index(exercise) + 1
    below = output.split(f"\n{number:2}. {exercise}", 1)[1].split(f"\n{number + 1:2}. ")[0]
    return [line.strip() for line in below.splitlines()[1:] if line.startswith("       ")]


@pytest.mark.parametrize("case", SEEDED)
def test_the_graders_summary_says_what_the_tutor_says(graded, case):
    """Each seeded mistake: the first failure shown under its exercise is the tutor's sentence,
    in compare.py's words (test_compare_exercises.py holds compare.py to the same table)."""
    exercise = SEEDED[case][3]
    status, output, rows = graded[case]
    assert status == 1 and rows[exercise].startswith("FAILS"), output[-3000:]
    first = examples(output, exercise)[0]
    assert says_what_the_tutor_says(case, first), first


def test_a_summary_without_the_tutor_fails_that_check(graded):
    """The twin: the same check fails on a summary line with the numbers only (as the grader
    printed before it knew the tutor's words)."""
    line = ("test_model.py::test_backward_matches_autograd[N4-D1-C2-float32]: bias.grad: "
            "DIFFERENT, max abs diff 9.39e-01, max rel diff 7.50e-01: not within assert_close's "
            "default tolerances")
    assert not says_what_the_tutor_says("bias-gradient-as-mean", line)
    assert says_what_the_tutor_says("bias-gradient-as-mean", line.split(": ")[0] + (
        ": bias.grad differs (scale): manual's is 1/4 of torch's, 1/N for the batch size N = 4: "
        "did you divide by the batch size where torch sums (a mean instead of a sum)?"))


def test_a_refusal_in_the_learners_own_words_passes(graded):
    """cross_entropy_grad refusing reduction='none' with a ValueError of its own message: its
    checks pass (the hint asks for the refusal, not for torch's or manual/'s words)."""
    status, output, rows = graded["own-refusal"]
    assert status == 0, output[-3000:]
    assert re.fullmatch(r"ok: its \d+ checks pass", rows["cross_entropy_grad"])


def test_an_error_in_the_learners_code_is_a_failure_that_says_where(graded):
    """softmax raising an error (a NotImplementedError, but not the stub's): its checks fail,
    with the file, line and error, and no traceback."""
    status, output, rows = graded["softmax-raises"]
    assert status == 1
    assert rows["softmax"].startswith("FAILS")
    assert re.search(r"functional\.py line \d+, in softmax: NotImplementedError: the max "
                     r"shift later", output)
    assert "Traceback" not in output


def test_a_failing_property_check_is_reported_as_found_not_shrunk(graded):
    """softmax's property checks fail on their first example: the grading stops there, with
    no shrink or explain phase (hypothesis's statistics; the profile: the test below)."""
    _, output, _ = graded["softmax-raises"]
    statistics = output.split("Hypothesis Statistics", 1)[1]
    checks = statistics.split("tests/test_functional.py::")[1:]
    assert any(check.startswith("test_softmax_rows_sum_to_one:") for check in checks)
    assert all("during generate phase" in check for check in checks)
    assert "shrink phase" not in statistics and "explain phase" not in statistics


def test_the_grading_profile_tries_as_many_examples_but_shrinks_and_keeps_none():
    """Against make test's (the default profile, the twin: it shrinks, explains and keeps a
    database): the same number of examples, two phases fewer, no database."""
    grading, default = (hypothesis.settings.get_profile(name) for name in ("grading", "default"))
    assert grading.max_examples == default.max_examples
    assert set(default.phases) - set(grading.phases) == {Phase.shrink, Phase.explain}
    assert set(grading.phases) < set(default.phases)
    assert grading.database is None and default.database is not None


@pytest.mark.parametrize(("case", "message"), [
    ("missing", "no such folder"),
    ("syntax-error", "functional.py line 1: SyntaxError"),
])
def test_a_bad_folder_gets_one_line_and_exit_2_from_pytest(graded, case, message):
    status, output, _ = graded[case]
    assert status == 2
    assert output.count("\n") == 1 and output.startswith("error: ") and message in output


# -- the page docs/try_it_yourself.md against what the grader prints ---------------------------

DOC = ROOT / "docs" / "try_it_yourself.md"
# The grader's output the page shows, by the Graded case that prints it: each block's first line.
DOC_BLOCKS = {"softmax-and-cross-entropy": "the exercises of exercises/, in the order",
              "bias-gradient-as-mean": " 4. cross_entropy_grad    ok: "}
TIME = re.compile(r" in \d+(\.\d+)?s( \(\d+:\d\d:\d\d\))?$")  # pytest's " in 3.94s" ending


def doc_block(first: str) -> list[str]:
    """The lines of the one fenced block of the page that starts with first."""
    blocks, inside = [], False
    for line in DOC.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
            blocks += [[]] if inside else []
        elif inside:
            blocks[-1].append(line)
    found = [block for block in blocks if block and block[0].startswith(first)]
    assert len(found) == 1, f"{DOC.name}: {len(found)} blocks start with {first!r}"
    return found[0]


def as_on_the_page(output: str, folder: Path) -> list[str]:
    """A grading's lines as the page shows them: run as `--manual exercises` from the project."""
    return output.replace(str(folder), "exercises").splitlines()


def line_matches(shown: str, printed: str) -> bool:
    """A line of the page against one the grader printed: the same, but for the time pytest
    took; a line the page cuts short with "..." is the start of the printed one."""
    shown, printed = TIME.sub(" in TIME", shown), TIME.sub(" in TIME", printed)
    if shown.endswith(" ...") and not printed.endswith(" ..."):
        return printed.startswith(shown[:-3])
    return shown == printed


def not_printed(shown: list[str], printed: list[str]) -> str | None:
    """None if the page's lines are the grader's: each run of them between lines "..." (which
    leave out any number of lines) printed one after another, in the page's order. Else the
    first line of the page that the grader did not print, with what it printed in its place."""
    runs = [[]]
    for line in shown:
        if line.strip() == "...":
            runs.append([])
        else:
            runs[-1].append(line)
    start = 0
    for lines in filter(None, runs):
        at = [index for index in range(start, len(printed))
              if line_matches(lines[0], printed[index])]
        for index in at:
            if len(printed) - index >= len(lines) and all(
                    map(line_matches, lines, printed[index:index + len(lines)])):
                start = index + len(lines)
                break
        else:
            if not at:
                return f"not printed: {lines[0]!r}"
            wrong = next(offset for offset, line in enumerate(lines)
                         if at[0] + offset >= len(printed)
                         or not line_matches(line, printed[at[0] + offset]))
            instead = printed[at[0] + wrong] if at[0] + wrong < len(printed) else "(the end)"
            return f"not printed: {lines[wrong]!r}; printed in its place: {instead!r}"
    return None


@pytest.mark.parametrize("case", DOC_BLOCKS)
def test_the_pages_grader_output_is_the_graders(graded, case):
    """Each block of grader output on docs/try_it_yourself.md, line for line, counts included,
    is what the grader prints for that folder (the time aside; lines the page cuts short or
    leaves out, marked "...", aside)."""
    _, output, _ = graded[case]
    printed = as_on_the_page(output, graded.base / case)
    problem = not_printed(doc_block(DOC_BLOCKS[case]), printed)
    assert problem is None, f"{DOC.name}, the block for {case}: {problem}"


@pytest.mark.twin
@pytest.mark.parametrize("case", DOC_BLOCKS)
def test_a_page_with_any_number_changed_is_not_the_graders(graded, case):
    """The twin: each number of the block (a count, a line, a factor) one more, and the check
    fails on it; the time pytest took, changed, still matches."""
    _, output, _ = graded[case]
    printed = as_on_the_page(output, graded.base / case)
    shown = doc_block(DOC_BLOCKS[case])
    changed = 0
    for index, line in enumerate(shown):
        timed = TIME.search(line)
        for number in re.finditer(r"\d+", line):
            if timed and number.start() >= timed.start():
                continue
            wrong = line[:number.start()] + str(int(number.group()) + 1) + line[number.end():]
            assert not_printed([*shown[:index], wrong, *shown[index + 1:]], printed), wrong
            changed += 1
        if timed:
            slower = TIME.sub(" in 99.99s", line)
            assert not_printed([*shown[:index], slower, *shown[index + 1:]], printed) is None
    assert changed >= 5 and any(TIME.search(line) for line in shown)


def test_the_page_says_where_the_grader_runs_as_it_does(graded):
    """The page's catch: from outside the project, or with `--manual DIR` (a space) for a
    folder outside it, pytest says the error the page quotes, and exits 4; the command python
    -m practice prints, from the project's folder, grades (every grading here runs it)."""
    catch = next(paragraph for paragraph in DOC.read_text().split("\n\n")
                 if paragraph.startswith("One catch:"))
    quoted = "`error: unrecognized arguments: --manual`"
    assert quoted in catch and "`--manual=/path/to/it`" in catch
    assert "from the project's folder" in catch
    for case in ELSEWHERE:
        status, output, _ = graded[case]
        assert status == 4 and quoted.strip("`") in output, (case, output[-500:])
    status, output, _ = graded["fresh"]
    assert status == 0 and quoted.strip("`") not in output
