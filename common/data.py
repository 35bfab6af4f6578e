"""MNIST as tensors, loaded once, and the minibatches both implementations train on.

The whole data set lives in memory as two tensors per split:
    images: float32 (N, 784), pixels scaled to [0, 1]
    labels: int64 (N,), digits 0..9
A minibatch is gathered from the training tensors by a slice of one shuffled
list of row indices, so no per-sample Python work happens while training.

Run `python -m common.data --data-root DIR` to check a copy of MNIST.
"""

import argparse
import contextlib
import io
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

NUM_PIXELS = 28 * 28
NUM_CLASSES = 10
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # of the training pixels, after scaling to [0, 1]
RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


class DataError(Exception):
    """The data set is missing or unreadable; the message is one line for the user."""


@dataclass
class Splits:
    """Train / validation / test tensors. x: (N, 784) floats, y: (N,) int64."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


def resolve_root(data_root: str | None = None) -> Path:
    """The data root: the --data-root flag, else $MNIST_ROOT, else ./data. A path that points
    inside an MNIST folder (data/MNIST or data/MNIST/raw, where the files are) is taken to
    mean the folder that holds it (data), unless it holds an MNIST/raw/ of its own."""
    root = Path(data_root or os.environ.get("MNIST_ROOT") or "data")
    if (root / "MNIST" / "raw").is_dir():
        return root
    if root.name == "raw" and root.parent.name == "MNIST":
        return root.parent.parent
    return root.parent if root.name == "MNIST" else root


def load_mnist(root: str | Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One MNIST split, as (images float32 (N, 784) in [0, 1], labels int64 (N,)).

    Reads the raw IDX files in root/MNIST/raw, where torchvision.datasets.MNIST keeps them,
    and has torchvision download all four there when one is missing. Every way this can fail
    (offline, truncated file, wrong magic number, bad labels) raises DataError with a
    one-line message.
    """
    raw = Path(root) / "MNIST" / "raw"
    if not all((raw / name).is_file() for name in RAW_FILES):
        download(root)
    split = "train" if train else "t10k"
    images = read_idx(raw / f"{split}-images-idx3-ubyte")
    labels = read_idx(raw / f"{split}-labels-idx1-ubyte")
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise DataError(f"corrupt MNIST in {raw.resolve()}: {len(images)} images of "
                        f"{tuple(images.shape[1:])} pixels but {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise DataError(f"corrupt MNIST labels in {raw.resolve()}: "
                        f"values {labels.min()}..{labels.max()}, expected 0..9")
    return images.reshape(-1, NUM_PIXELS).float().div_(255), labels.long()  # in place: one copy


def download(root: str | Path) -> None:
    """Have torchvision fetch the four raw files into root/MNIST/raw (and check their MD5
    sums); or raise DataError.

    torchvision is imported here only: it takes a second or two to import (it pulls in
    torchvision.models and torch._dynamo), and a copy on disk does not need it.
    """
    from torchvision.datasets import MNIST

    raw = Path(root) / "MNIST" / "raw"
    for name in RAW_FILES:
        if (raw / name).is_file():
            check_idx_file(raw / name)
    missing = [folder for folder in (raw, *raw.parents) if not folder.exists()]
    new = missing[-1] if missing else None  # the highest folder torchvision will create
    done = False
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints each download try
            MNIST(root, train=True, download=True)
        done = True
    except (RuntimeError, OSError) as error:
        if not all((raw / name).is_file() for name in RAW_FILES):
            raise DataError(
                f"MNIST not found in {raw.resolve()} and the download failed "
                f"({last_line(error)}). Copy {', '.join(RAW_FILES)} there, "
                "or point --data-root / MNIST_ROOT at a folder holding MNIST/raw/."
            ) from None
        raise DataError(f"cannot read MNIST in {raw.resolve()}: {first_line(error)}") from None
    except (AssertionError, KeyError, TypeError, ValueError) as error:
        raise DataError(
            f"corrupt MNIST file in {raw.resolve()}: not an IDX file of the expected type "
            f"(bad magic number or shape{': ' + first_line(error) if str(error) else ''})"
        ) from None
    finally:
        if not done and new is not None:  # a failed download leaves no folder it made
            shutil.rmtree(new, ignore_errors=True)


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes as a uint8 tensor of its shape, (N, 28, 28) or (N,),
    once check_idx_file found it whole: what torchvision's MNIST reads too."""
    sizes = check_idx_file(path)
    data = bytearray(path.read_bytes())  # writable, as torch.frombuffer wants
    return torch.frombuffer(data, dtype=torch.uint8, offset=4 + 4 * len(sizes)).reshape(sizes)


def check_idx_file(path: Path) -> list[int]:
    """The sizes in `path`'s header, [N, 28, 28] or [N]; raise DataError unless `path` is a
    whole IDX file of unsigned bytes.

    IDX layout: magic 0x0000080D (D = number of dimensions, 3 for images, 1
    for labels), D big-endian 32-bit sizes, then the prod(sizes) bytes.
    """
    dims = 3 if "images" in path.name else 1
    with path.open("rb") as file:
        header = file.read(4 + 4 * dims)
    magic = int.from_bytes(header[:4], "big")
    if len(header) < 4 + 4 * dims or magic != 0x800 + dims:
        raise DataError(f"corrupt MNIST file {path.resolve()}: magic number {magic:#010x}, "
                        f"expected {0x800 + dims:#010x}")
    sizes = [int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    expected = len(header) + math.prod(sizes)
    if path.stat().st_size != expected:
        shape = " x ".join(map(str, sizes))
        raise DataError(f"corrupt MNIST file {path.resolve()}: {path.stat().st_size} bytes, "
                        f"but its header promises {expected} ({shape}): truncated or damaged")
    return sizes


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def last_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[-1]


def load_splits(root: str | Path, val_size: int = 5000, seed: int = 0, subset: int | None = None,
                standardize: bool = False, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> Splits:
    """Train, validation and test tensors, ready on `device`.

    The validation set is `val_size` images held out from the 60,000 training
    images by a permutation seeded with `seed`; `subset` then keeps the first
    N of the remaining training images. The 10,000 test images stay whole.
    standardize: x <- (x - 0.1307) / 0.3081, the training set's mean and std.
    """
    train_x, train_y = load_mnist(root, train=True)
    test_x, test_y = load_mnist(root, train=False)
    if not 0 <= val_size < len(train_x):
        raise DataError(f"validation size {val_size} must be in [0, {len(train_x)})")
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if subset is not None:
        if not 0 < subset <= len(train_idx):
            raise DataError(f"--subset {subset} must be in [1, {len(train_idx)}] "
                            f"(training images left after holding out {val_size} for validation)")
        train_idx = train_idx[:subset]

    def prepare(x: torch.Tensor) -> torch.Tensor:
        if standardize:
            x = (x - MNIST_MEAN) / MNIST_STD
        return x.to(device=device, dtype=dtype)

    return Splits(prepare(train_x[train_idx]), train_y[train_idx].to(device),
                  prepare(train_x[val_idx]), train_y[val_idx].to(device),
                  prepare(test_x), test_y.to(device))


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int,
            epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield the minibatches (x: (B, D), y: (B,)) of one epoch; the last may be smaller.

    The order depends only on (seed, epoch): every call with the same pair
    yields the same batches, on any device. Each batch copies its B rows of x
    and y, so the batch is still in the CPU's cache when the backward pass
    reads it again (a shuffled copy of the whole set would not be). A batch
    that holds the whole set needs no shuffle: full-batch gradient descent
    sums over every example whatever their order.
    """
    if batch_size >= len(x):
        yield x, y
        return
    # one random stream per (seed, epoch) pair
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(x), generator=generator).to(x.device)
    for start in range(0, len(x), batch_size):
        rows = order[start:start + batch_size]
        yield x.index_select(0, rows), y.index_select(0, rows)  # x[rows], y[rows], but faster


def main(argv: list[str] | None = None) -> int:
    """Print what the loader sees: sizes, label histogram, pixel range and mean."""
    parser = argparse.ArgumentParser(description="Check a copy of MNIST.")
    parser.add_argument("--data-root",
                        help="folder holding MNIST/raw/ (default: $MNIST_ROOT, else ./data)")
    args = parser.parse_args(argv)
    root = resolve_root(args.data_root)
    try:
        for name, train in (("train", True), ("test", False)):
            x, y = load_mnist(root, train)
            histogram = " ".join(str(n) for n in torch.bincount(y, minlength=NUM_CLASSES).tolist())
            print(f"{name}: {len(x)} images, labels {histogram}, "
                  f"pixels [{x.min():.0f}, {x.max():.0f}] mean {x.mean():.4f} std {x.std():.4f}")
    except DataError as error:
        parser.exit(2, f"error: {error}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
