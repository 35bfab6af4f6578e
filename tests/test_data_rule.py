"""The test suite finds MNIST by the project's one rule: $MNIST_ROOT, else ./data.

Each test looks at a run of pytest in a process of its own (the runs in turn in one process:
tests.processes), from an empty working folder, with MNIST_ROOT and CI unset unless said,
and with every download sent to a closed local port, so nothing is fetched. `--setup-only`
sets up each test's fixtures (where a missing data set skips or fails it) without running
the tests themselves.
"""

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import pytest

import conftest
from tests.processes import offline, pytest_in_turn

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = conftest.NOTEBOOKS


def junit_case(notebook: Path) -> str:
    """A notebook's test as junit names it, classname::name (notebooks.tutor.ipynb::tutor.ipynb)."""
    classname = ".".join(notebook.relative_to(REPO).parts)
    return f"{classname}::{notebook.name}"


NOTEBOOK_CASES = [junit_case(notebook) for notebook in NOTEBOOKS]


# Plugins these runs have no use for: no cache left behind, no logging (which walks torch's
# nearly 200 loggers around every phase), no garbage collection at the end.
QUIET_PLUGINS = ["-p", "no:cacheprovider", "-p", "no:logging", "-p", "no:unraisableexception"]


def setup_only(cwd: Path, *paths: Path, **env: str) -> tuple[Path, dict, list[str]]:
    """A run of pytest --setup-only on `paths` in `cwd` (tests.processes): its environment is
    this process's without MNIST_ROOT and CI, kept off the network (offline), with `env`; its
    junit report goes to cwd/junit.xml."""
    clean = {k: v for k, v in os.environ.items() if k not in ("MNIST_ROOT", "CI")}
    return (cwd, offline(clean) | env,
            ["--setup-only", *QUIET_PLUGINS, f"--junitxml={cwd / 'junit.xml'}", *map(str, paths)])


def outcomes(cwd: Path) -> dict[str, str]:
    """Each test's outcome from the junit report of the run in cwd, by "classname::name":
    "skipped: <message>", "error: <message>", or "set up"."""
    found = {}
    for case in ET.parse(cwd / "junit.xml").getroot().iter("testcase"):
        what = [f"{child.tag}: {child.get('message')}" for child in case]
        found[f"{case.get('classname')}::{case.get('name')}"] = (what or ["set up"])[0]
    return found


class Runs(dict):
    """The runs of the tests below, by name: (exit status, output, outcomes), done in turn in
    one process at the first lookup (tests.processes). "dot-data" only where the real MNIST
    was found (its test needs it); the others need no data."""

    def __init__(self, base: Path):
        super().__init__()
        self.base = base

    def __missing__(self, name: str) -> tuple[int, str, dict[str, str]]:
        folders = {name: self.base / name for name in ("dot-data", "no-data", "no-data-ci")}
        for folder in folders.values():
            folder.mkdir()
        mnist_root, _ = conftest.find_real_mnist()
        runs = {}
        if mnist_root is not None:
            (folders["dot-data"] / "data").symlink_to(mnist_root, target_is_directory=True)
            runs["dot-data"] = setup_only(folders["dot-data"], REPO / "tests", *NOTEBOOKS)
        runs["no-data"] = setup_only(folders["no-data"], REPO / "tests" / "test_compare.py",
                                     *NOTEBOOKS)
        runs["no-data-ci"] = setup_only(folders["no-data-ci"], REPO / "tests" / "test_compare.py",
                                        *NOTEBOOKS, CI="true")
        for run, (status, output) in zip(runs, pytest_in_turn(list(runs.values())), strict=True):
            self[run] = status, output, outcomes(folders[run])
        return self[name]


@pytest.fixture(scope="module")  # make test keeps a module's tests in one process (--dist loadfile)
def runs(tmp_path_factory) -> Runs:
    return Runs(tmp_path_factory.mktemp("data-rule"))


def test_data_in_dot_data_sets_up_every_real_data_test(runs: Runs, mnist_root: Path):
    """MNIST in ./data, MNIST_ROOT unset: the whole suite, notebook included, skips nothing
    but the CUDA test."""
    status, output, outcomes = runs["dot-data"]
    assert status == 0, output[-2000:]
    assert len(NOTEBOOKS) == 8 and len(outcomes) > 400
    assert set(NOTEBOOK_CASES) <= set(outcomes)
    not_set_up = {name: what for name, what in outcomes.items()
                  if what != "set up" and "CUDA" not in what}
    assert not not_set_up


def test_no_data_anywhere_skips_with_one_line_saying_what_to_set(runs: Runs):
    """No ./data, no MNIST_ROOT, the download failing: the real-data tests and the notebooks
    skip (the others, like the bad-flag tests, still run), and one line says how many and
    what to set."""
    status, output, outcomes = runs["no-data"]
    assert status == 0, output[-2000:]
    skipped = [name for name, what in outcomes.items() if what.startswith("skipped")]
    assert set(NOTEBOOK_CASES) <= set(skipped) and len(skipped) >= 8
    assert set(outcomes.values()) - {"set up"} == {outcomes[NOTEBOOK_CASES[0]]}
    lines = [line for line in output.splitlines() if "real-data tests skipped" in line]
    raw = (runs.base / "no-data").resolve() / "data" / "MNIST" / "raw"
    assert len(lines) == 1 and lines[0].startswith(
        f"{len(skipped)} real-data tests skipped, set MNIST_ROOT to a folder holding MNIST/raw/: "
        f"MNIST not found in {raw} and the download failed")


def test_no_data_under_ci_fails_instead_of_skipping(runs: Runs):
    """The same, with CI set: the real-data tests and the notebooks fail; none skips."""
    status, output, outcomes = runs["no-data-ci"]
    assert status == 1
    failed = [name for name, what in outcomes.items() if what.startswith("error")]
    assert set(NOTEBOOK_CASES) <= set(failed) and len(failed) >= 8
    assert set(outcomes.values()) - {"set up"} == {outcomes[NOTEBOOK_CASES[0]]}
    assert "set MNIST_ROOT" in outcomes[NOTEBOOK_CASES[0]] and "skipped" not in output


def test_notebook_kernel_is_given_the_root_the_tests_found(monkeypatch, mnist_root: Path):
    """A notebook's kernel starts in its own folder, not pytest's: conftest hands it
    the root it found as MNIST_ROOT, so `pytest` run from elsewhere finds the same data."""
    monkeypatch.delenv("MNIST_ROOT", raising=False)  # restored after the test
    conftest.pytest_runtest_setup(SimpleNamespace(path=NOTEBOOKS[-1]))
    assert os.environ["MNIST_ROOT"] == str(mnist_root) and mnist_root.is_absolute()
