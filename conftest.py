"""Shared fixtures: the real MNIST, found by the project's one rule, once per test session.

The data root is $MNIST_ROOT, else ./data (common.data.resolve_root, as for compare.py, the
notebook and the benchmark), downloaded there by torchvision when missing. When the data
can't be had, the real-data tests and the notebook skip with one line that says what to
set, except under CI (CI set), where they fail: CI must never pass by skipping them.

This file sits at the project root so that its hook reaches the notebook too.
"""

import functools
import os
from pathlib import Path

import pytest

from common.data import DataError, Splits, load_mnist, load_splits, resolve_root

pytest_plugins = ["practice.grading"]  # python -m pytest --manual DIR grades an exercise folder


@functools.cache
def find_real_mnist() -> tuple[Path | None, str | None]:
    """(the data root, None), or (None, why the real MNIST can't be had)."""
    root = resolve_root().absolute()
    try:
        load_mnist(root, train=False)  # checks the files there; downloads all four if missing
    except DataError as error:
        return None, f"set MNIST_ROOT to a folder holding MNIST/raw/: {error}"
    return root, None


def require_real_mnist() -> Path:
    """The data root; else skip the test (fail it under CI) with one line."""
    root, problem = find_real_mnist()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)
    return root


def pytest_runtest_setup(item: pytest.Item) -> None:
    """The notebook reads the real MNIST: it skips or fails like the fixtures below, and
    its kernel (started in the notebook's folder) gets the root found here as MNIST_ROOT."""
    if item.path.suffix == ".ipynb":
        os.environ["MNIST_ROOT"] = str(require_real_mnist())


def pytest_terminal_summary(terminalreporter) -> None:
    """Skipped for want of data: one line, once, saying what to set."""
    if not find_real_mnist.cache_info().currsize:
        return  # no test asked for the data
    _, problem = find_real_mnist()
    if problem is None:
        return
    skipped = [report for report in terminalreporter.stats.get("skipped", [])
               if report.longrepr[2].endswith(problem)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} real-data tests skipped, {problem}")


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding MNIST/raw/ with the four real raw files."""
    return require_real_mnist()


@pytest.fixture(scope="session")
def mnist_splits(mnist_root: Path) -> Splits:
    """load_splits(mnist_root) with its defaults: 55,000 train, 5,000 val, 10,000 test."""
    return load_splits(mnist_root)
