"""Shared fixtures: the real MNIST, found by the project's one rule, once per pytest run.

The data root is $MNIST_ROOT, else ./data (common.data.resolve_root, as for compare.py, the
notebook and the benchmark), downloaded there by torchvision when missing. When the data
can't be had, the real-data tests and the notebooks skip with one line that says what to
set, except under CI (CI set), where they fail: CI must never pass by skipping them.

This file sits at the project root so that its hook reaches the notebooks too. It imports
torch (through common.data) only in the functions that need the data: the first process of
make test, which shares the tests out (pytest-xdist) and runs none, then starts in under a
second instead of three, and so does `pytest --help`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import torch

    from common.data import Splits

pytest_plugins = ["practice.grading"]  # python -m pytest --manual DIR grades an exercise folder
WHAT_TO_SET = "set MNIST_ROOT to a folder holding MNIST/raw/"  # how a missing data skip starts

if os.environ.get("PYTEST_XDIST_WORKER"):
    # make test: a process per core (pytest-xdist). Each runs torch on one thread, as do the
    # processes it starts (the notebooks' kernels, the gradings): with every core busy, a
    # second thread would only wait for a core. Set before torch is imported (nothing above
    # imports it), since torch reads it once, at its import.
    os.environ["OMP_NUM_THREADS"] = "1"


@functools.cache
def find_real_mnist() -> tuple[Path | None, str | None]:
    """(the data root, None), or (None, why the real MNIST can't be had)."""
    from common.data import DataError, load_mnist, resolve_root

    root = resolve_root().absolute()
    try:
        load_mnist(root, train=False)  # checks the files there; downloads all four if missing
    except DataError as error:
        return None, f"{WHAT_TO_SET}: {error}"
    return root, None


def require_real_mnist() -> Path:
    """The data root; else skip the test (fail it under CI) with one line."""
    root, problem = find_real_mnist()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    return root


# The notebooks the suite runs (pyproject's testpaths): the first chapter's, then notebooks/.
ROOT = Path(__file__).resolve().parent
NOTEBOOKS = [ROOT / "Digit_Classification_with_Softmax.ipynb",
             *sorted((ROOT / "notebooks").glob("*.ipynb"))]


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The notebooks read the real MNIST: each skips or fails like the fixtures below, and
    its kernel (started in the notebook's folder) gets the root found here as MNIST_ROOT."""
    if item.path.suffix == ".ipynb":
        os.environ["MNIST_ROOT"] = str(require_real_mnist())


# The longest files first (from a few seconds to about 20 s; the rest take less than one): make
# test shares the files out between processes (pytest-xdist, --dist loadfile) in the order of
# the items.
LONGEST = ("test_compare_parallel_twins.py", "test_compare_parallel.py", "test_exercises.py",
           "data_parallelism.ipynb", "hidden_layer_and_batchnorm.ipynb",
           "Digit_Classification_with_Softmax.ipynb", "test_data_rule.py", "convolutions.ipynb",
           "adam_and_adamw.ipynb", "tutor.ipynb", "what_loss_backward_does.ipynb",
           "residual_networks.ipynb")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The LONGEST files first, so that none of them starts last; the rest keep their order."""
    items.sort(key=lambda item: LONGEST.index(item.path.name) if item.path.name in LONGEST
               else len(LONGEST))


def pytest_terminal_summary(terminalreporter) -> None:
    """Skipped for want of data: one line, once, saying what to set. Read from the reports,
    which reach this process also from the processes of pytest-xdist that ran the tests."""
    reasons = [str(report.longrepr[-1]) for report in terminalreporter.stats.get("skipped", [])
               if isinstance(report.longrepr, tuple | list)]  # (file, line, "Skipped: why")
    skipped = [reason for reason in reasons if WHAT_TO_SET in reason]
    if skipped:
        problem = skipped[0][skipped[0].index(WHAT_TO_SET):]
        terminalreporter.write_line(f"{len(skipped)} real-data tests skipped, {problem}")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding MNIST/raw/ with the four real raw files."""
    return require_real_mnist()


@pytest.fixture(scope="session")
def mnist_splits(mnist_root: Path) -> Splits:
    """load_splits(mnist_root) with its defaults: 55,000 train, 5,000 val, 10,000 test."""
    from common.data import load_splits

    return load_splits(mnist_root)


@functools.cache
def read_once(root: Path, train: bool, load_mnist) -> tuple[torch.Tensor, torch.Tensor]:
    """load_mnist(root, train), once per process. load_mnist is common.data's own, handed in:
    while a test runs, common.data.load_mnist is the fixture below, which calls this."""
    return load_mnist(root, train)


@pytest.fixture(autouse=True)
def real_mnist_read_once(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A test that trains on the real MNIST (compare.main, through load_splits) gets the two
    splits as this process read them the first time, instead of reading and converting
    70,000 images again for each run: common.data.load_mnist keeps what it returned for the
    real root. The tests of load_mnist itself call it as it is, and read the files."""
    if "mnist_root" not in request.fixturenames:
        return
    from common import data

    real, load_mnist = request.getfixturevalue("mnist_root").resolve(), data.load_mnist

    def load(root: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        if Path(root).resolve() == real:
            return read_once(real, train, load_mnist)
        return load_mnist(root, train)

    monkeypatch.setattr(data, "load_mnist", load)
