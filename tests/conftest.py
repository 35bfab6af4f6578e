"""Shared fixtures: the real MNIST, found once per test session.

The real data root is $MNIST_ROOT if set, else ../shared/data beside the repository.
Without the four raw files the real-data tests skip, except under CI (CI set),
where they fail: CI must never pass by skipping them.
"""

import os
from pathlib import Path

import pytest

from common.data import RAW_FILES, Splits, load_splits

SHARED_DATA_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    """The folder holding MNIST/raw/ with the four real raw files."""
    root = Path(os.environ.get("MNIST_ROOT") or SHARED_DATA_ROOT)
    raw = root / "MNIST" / "raw"
    missing = [name for name in RAW_FILES if not (raw / name).is_file()]
    if missing:
        message = (f"real MNIST missing in {raw}: {', '.join(missing)} "
                   "(set MNIST_ROOT to a folder holding MNIST/raw/)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def mnist_splits(mnist_root: Path) -> Splits:
    """load_splits(mnist_root) with its defaults: 55,000 train, 5,000 val, 10,000 test."""
    return load_splits(mnist_root)
