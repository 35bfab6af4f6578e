"""Tests of common/data.py.

1. The loader on tiny IDX files written here, read like the real ones.
2. Broken copies of MNIST: DataError from the function, one "error:" line from the CLI.
3. The real MNIST against its documented facts (60,000 + 10,000 images, label counts, pixel stats).
4. The minibatch iterator.
"""

import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from common import data
from common.data import DataError, batches, load_mnist, load_splits, resolve_root
from tests.processes import offline

REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SIZE, TEST_SIZE, VAL_SIZE = 120, 30, 20  # the tiny copy
# Documented facts of the canonical MNIST, as published with the data set.
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
PIXEL_MEAN, PIXEL_STD = 0.1307, 0.3081


# 1. The loader on tiny IDX files ---------------------------------------------------------------

def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as big-endian IDX: magic 0x0800 + ndim, each dim as uint32, the bytes."""
    assert array.dtype == np.uint8
    header = struct.pack(f">I{array.ndim}I", 0x0800 + array.ndim, *array.shape)
    path.write_bytes(header + array.tobytes())


@dataclass
class FakeMnist:
    """A tiny MNIST in torchvision's layout (root/MNIST/raw/) and the arrays written there.

    images: split ("train" or "t10k") -> (N, 28, 28) uint8; labels: split -> (N,) uint8.
    Training image i has i as its first pixel, so every loaded row tells which image it is.
    """

    root: Path
    raw: Path
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


@pytest.fixture
def fake_mnist(tmp_path: Path) -> FakeMnist:
    """120 training and 30 test images of random pixels, with random labels 0..9."""
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images, labels = {}, {}
    for split, size in (("train", TRAIN_SIZE), ("t10k", TEST_SIZE)):
        images[split] = rng.integers(0, 256, (size, 28, 28), dtype=np.uint8)
        labels[split] = rng.integers(0, 10, size, dtype=np.uint8)
    images["train"][:, 0, 0] = np.arange(TRAIN_SIZE)
    for split in images:
        write_idx(raw / f"{split}-images-idx3-ubyte", images[split])
        write_idx(raw / f"{split}-labels-idx1-ubyte", labels[split])
    return FakeMnist(tmp_path, raw, images, labels)


def image_ids(x: torch.Tensor) -> torch.Tensor:
    """The ids of the fake training images in x: (N, 784) pixels in [0, 1] -> (N,) int64."""
    return (x[:, 0] * 255).round().long()


@pytest.mark.parametrize("train, split", [(True, "train"), (False, "t10k")])
def test_load_mnist_matches_written_files(fake_mnist: FakeMnist, train: bool, split: str):
    """load_mnist gives (N, 784) float32 pixels exactly pixel / 255 and the int64 labels written."""
    x, y = load_mnist(fake_mnist.root, train=train)
    written = fake_mnist.images[split].reshape(len(fake_mnist.images[split]), -1)
    assert x.dtype == torch.float32 and x.shape == (len(written), 784)
    assert torch.equal(x, torch.from_numpy(written.astype(np.float32) / np.float32(255)))
    assert 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64
    assert torch.equal(y, torch.from_numpy(fake_mnist.labels[split]).long())


def test_load_splits_holds_out_disjoint_validation(fake_mnist: FakeMnist):
    """val_size training images go to validation, the rest to training, none to both."""
    splits = load_splits(fake_mnist.root, val_size=VAL_SIZE)
    train_ids, val_ids = image_ids(splits.train_x), image_ids(splits.val_x)
    assert (len(train_ids), len(val_ids)) == (TRAIN_SIZE - VAL_SIZE, VAL_SIZE)
    assert set(train_ids.tolist()).isdisjoint(val_ids.tolist())
    assert set(train_ids.tolist()) | set(val_ids.tolist()) == set(range(TRAIN_SIZE))
    written_labels = torch.from_numpy(fake_mnist.labels["train"]).long()
    assert torch.equal(splits.train_y, written_labels[train_ids])
    assert torch.equal(splits.val_y, written_labels[val_ids])
    test_x, test_y = load_mnist(fake_mnist.root, train=False)
    assert torch.equal(splits.test_x, test_x) and torch.equal(splits.test_y, test_y)


def test_load_splits_is_seeded(fake_mnist: FakeMnist):
    """The same seed gives the same split, in the same order; another seed another split."""
    def split_ids(seed: int) -> tuple[list[int], list[int]]:
        splits = load_splits(fake_mnist.root, val_size=VAL_SIZE, seed=seed)
        return image_ids(splits.train_x).tolist(), image_ids(splits.val_x).tolist()

    assert split_ids(seed=0) == split_ids(seed=0)
    assert set(split_ids(seed=0)[1]) != set(split_ids(seed=1)[1])


def test_load_splits_subset_keeps_first_training_images(fake_mnist: FakeMnist):
    """subset=N keeps the first N training images of the full split; validation is unchanged."""
    full = load_splits(fake_mnist.root, val_size=VAL_SIZE)
    subset = load_splits(fake_mnist.root, val_size=VAL_SIZE, subset=7)
    assert torch.equal(subset.train_x, full.train_x[:7])
    assert torch.equal(subset.train_y, full.train_y[:7])
    assert torch.equal(subset.val_x, full.val_x) and torch.equal(subset.val_y, full.val_y)


@pytest.mark.parametrize("subset", [0, TRAIN_SIZE - VAL_SIZE + 1])
def test_load_splits_rejects_subset_out_of_range(fake_mnist: FakeMnist, subset: int):
    """A subset of 0, or larger than the training images left, raises DataError."""
    with pytest.raises(DataError, match="subset"):
        load_splits(fake_mnist.root, val_size=VAL_SIZE, subset=subset)


@pytest.mark.parametrize("option, expected", [
    ({"standardize": True}, lambda x: (x - PIXEL_MEAN) / PIXEL_STD),
    ({"dtype": torch.float64}, lambda x: x.to(torch.float64)),
], ids=["standardize", "float64"])
def test_load_splits_options_transform_pixels_only(fake_mnist: FakeMnist, option, expected):
    """standardize gives (x - 0.1307) / 0.3081, dtype casts; labels and split are unchanged."""
    plain = load_splits(fake_mnist.root, val_size=VAL_SIZE)
    changed = load_splits(fake_mnist.root, val_size=VAL_SIZE, **option)
    for name in ("train_x", "val_x", "test_x"):
        reference = expected(getattr(plain, name))
        assert getattr(changed, name).dtype == reference.dtype
        assert torch.equal(getattr(changed, name), reference)
    for name in ("train_y", "val_y", "test_y"):
        assert torch.equal(getattr(changed, name), getattr(plain, name))


def test_resolve_root_prefers_flag_then_env_then_data(monkeypatch: pytest.MonkeyPatch):
    """The data root is the --data-root flag, else $MNIST_ROOT, else ./data."""
    monkeypatch.setenv("MNIST_ROOT", "from-env")
    assert resolve_root("from-flag") == Path("from-flag")
    assert resolve_root() == Path("from-env")
    monkeypatch.delenv("MNIST_ROOT")
    assert resolve_root() == Path("data")


# 2. Broken copies of MNIST ---------------------------------------------------------------------

HALF_THE_PIXELS = TRAIN_SIZE * 28 * 28 // 2


def truncate_train_images(raw: Path) -> None:
    """Cut the training images file after its header and half of its pixels."""
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:16 + HALF_THE_PIXELS])


def write_magic_little_endian(raw: Path) -> None:
    """Write the training images' magic number little-endian (03 08 00 00), a common slip."""
    path = raw / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack("<I", 0x0803) + path.read_bytes()[4:])


def write_label_twelve(raw: Path) -> None:
    """Rewrite the training labels as 0..9 repeated, with one 12 among them."""
    labels = (np.arange(TRAIN_SIZE) % 10).astype(np.uint8)
    labels[5] = 12
    write_idx(raw / "train-labels-idx1-ubyte", labels)


# how the copy is broken -> words its one-line message must hold (besides the folder)
BROKEN_COPIES = {
    "truncated images": (truncate_train_images, ["corrupt MNIST file", "train-images-idx3-ubyte",
                                                 f"{16 + HALF_THE_PIXELS} bytes", "truncated"]),
    "wrong magic": (write_magic_little_endian, ["corrupt MNIST file", "train-images-idx3-ubyte",
                                                "magic number 0x03080000, expected 0x00000803"]),
    "label 12": (write_label_twelve, ["corrupt MNIST labels", "0..12, expected 0..9"]),
}
broken_copies = pytest.mark.parametrize(
    "break_copy, expected_words", list(BROKEN_COPIES.values()), ids=list(BROKEN_COPIES))


def data_error_message(root: Path) -> str:
    """The message of the DataError that load_mnist(root) raises; fails if it raises none."""
    with pytest.raises(DataError) as error:
        load_mnist(root, train=True)
    return str(error.value)


def run_cli(root: Path) -> subprocess.CompletedProcess:
    """`python -m common.data --data-root root`, offline whatever the machine
    (tests.processes.offline)."""
    return subprocess.run([sys.executable, "-m", "common.data", "--data-root", str(root)],
                          cwd=REPO_ROOT, env=offline(dict(os.environ)), capture_output=True,
                          text=True, timeout=120)


def one_error_line(status: int, stderr: str) -> str:
    """The CLI's only stderr line, after checking exit status 2, "error:" and no traceback."""
    assert status == 2, stderr
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@broken_copies
def test_load_mnist_raises_data_error_on_broken_copy(fake_mnist: FakeMnist, break_copy,
                                                     expected_words: list[str]):
    """A broken raw file raises DataError: one line naming the folder and the problem."""
    break_copy(fake_mnist.raw)
    message = data_error_message(fake_mnist.root)
    assert "\n" not in message
    for words in [str(fake_mnist.raw.resolve()), *expected_words]:
        assert words in message


@broken_copies
def test_cli_reports_broken_copy_in_one_line(fake_mnist: FakeMnist, break_copy,
                                             expected_words: list[str], capsys):
    """The CLI (its main, in this process: the next test runs the real command) exits 2 and
    prints the function's DataError as its one "error:" line."""
    break_copy(fake_mnist.raw)
    with pytest.raises(SystemExit) as exit_:
        data.main(["--data-root", str(fake_mnist.root)])
    line = one_error_line(exit_.value.code, capsys.readouterr().err)
    assert line == f"error: {data_error_message(fake_mnist.root)}"


def tree(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


def test_cli_reports_missing_data_offline_and_leaves_no_folder(tmp_path: Path):
    """With no data and no network the CLI exits 2 with one line naming the folder searched,
    and the failed download leaves no folder behind (torchvision makes MNIST/raw/ first)."""
    root = tmp_path / "no-mnist-here"
    result = run_cli(root)
    line = one_error_line(result.returncode, result.stderr)
    assert f"MNIST not found in {(root / 'MNIST' / 'raw').resolve()} " in line
    assert "download failed" in line
    assert "Connection refused" in line  # the closed proxy answered, not a lucky offline machine
    assert tree(tmp_path) == []


@pytest.fixture
def failing_download(monkeypatch):
    """torchvision's MNIST replaced by one that makes root/MNIST/raw/, as the real one does
    first, then fails at once, as it does offline."""
    def failing(root, train, download):
        (Path(root) / "MNIST" / "raw").mkdir(parents=True)
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    import torchvision.datasets
    monkeypatch.setattr(torchvision.datasets, "MNIST", failing)


def test_cli_reads_a_root_inside_an_mnist_folder_as_the_folder_that_holds_it(
        tmp_path: Path, failing_download, capsys):
    """A root given inside an MNIST folder, data/MNIST, is read as data: the CLI (its main,
    in this process, with a download that fails at once: the test above runs the real
    command) searches data/MNIST/raw, not data/MNIST/MNIST/raw, and leaves data/MNIST as it
    was."""
    (tmp_path / "data" / "MNIST").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_:
        data.main(["--data-root", str(tmp_path / "data" / "MNIST")])
    line = one_error_line(exit_.value.code, capsys.readouterr().err)
    assert f"MNIST not found in {(tmp_path / 'data' / 'MNIST' / 'raw').resolve()} " in line
    assert tree(tmp_path) == ["data", "data/MNIST"]


def test_a_root_inside_an_mnist_folder_means_the_folder_that_holds_it(fake_mnist: FakeMnist,
                                                                      tmp_path: Path):
    """root/MNIST and root/MNIST/raw, where the files are, both mean root; a root that holds
    an MNIST/raw/ of its own, and any other, stay as given (the twins)."""
    root = fake_mnist.root
    assert resolve_root(str(root / "MNIST")) == root
    assert resolve_root(str(root / "MNIST" / "raw")) == root
    assert torch.equal(load_mnist(resolve_root(str(root / "MNIST" / "raw")))[1],
                       load_mnist(root)[1])
    assert resolve_root(str(root)) == root
    (root / "MNIST" / "MNIST" / "raw").mkdir(parents=True)
    assert resolve_root(str(root / "MNIST")) == root / "MNIST"
    assert resolve_root(str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"


def test_a_failed_download_keeps_the_folders_that_were_there(tmp_path: Path, failing_download):
    """Only what the download made goes: a root/MNIST/ that existed before stays, with the
    learner's file in it (the twin of ..._leaves_no_folder, where nothing stays), and raw/
    goes."""
    kept = tmp_path / "MNIST" / "notes.txt"
    kept.parent.mkdir()
    kept.write_text("mine")
    with pytest.raises(DataError, match="download failed"):
        data.download(tmp_path)
    assert tree(tmp_path) == ["MNIST", "MNIST/notes.txt"]
    with pytest.raises(DataError, match="download failed"):  # two levels above it are new
        data.download(tmp_path / "a" / "b")
    assert tree(tmp_path) == ["MNIST", "MNIST/notes.txt"]


# 3. The real MNIST ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_mnist(mnist_root: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Both real splits as load_mnist gives them: {"train": (x, y), "test": (x, y)}."""
    return {split: load_mnist(mnist_root, train=split == "train") for split in ("train", "test")}


@pytest.mark.parametrize("split, size, label_counts", [
    ("train", 60_000, TRAIN_LABEL_COUNTS),
    ("test", 10_000, TEST_LABEL_COUNTS),
], ids=["train", "test"])
def test_real_sizes_and_label_counts(real_mnist, split: str, size: int, label_counts: list[int]):
    """The real splits hold 60,000 and 10,000 images with the canonical label counts."""
    x, y = real_mnist[split]
    assert x.shape == (size, 784) and y.shape == (size,)
    assert torch.bincount(y, minlength=10).tolist() == label_counts


@pytest.mark.parametrize("split", ["train", "test"])
def test_real_pixels_span_exactly_zero_to_one(real_mnist, split: str):
    """Real pixels reach both ends of [0, 1] and never leave it."""
    x, _ = real_mnist[split]
    assert (x.min().item(), x.max().item()) == (0.0, 1.0)


def test_real_train_pixel_mean_and_std(real_mnist):
    """Training pixels have mean 0.1307 and std 0.3081, the standardize constants (within 1e-4)."""
    std, mean = torch.std_mean(real_mnist["train"][0])
    assert mean.item() == pytest.approx(PIXEL_MEAN, abs=1e-4)
    assert std.item() == pytest.approx(PIXEL_STD, abs=1e-4)


def test_real_default_splits_partition_the_training_set(mnist_splits):
    """Default load_splits: 55,000 train + 5,000 val, together the training set; 10,000 test."""
    splits = mnist_splits
    sizes = [len(splits.train_x), len(splits.val_x), len(splits.test_x)]
    assert sizes == [len(splits.train_y), len(splits.val_y), len(splits.test_y)]
    assert sizes == [55_000, 5_000, 10_000]
    train_and_val_counts = (torch.bincount(splits.train_y, minlength=10)
                            + torch.bincount(splits.val_y, minlength=10))
    assert train_and_val_counts.tolist() == TRAIN_LABEL_COUNTS


# 4. The minibatch iterator ----------------------------------------------------------------------

NUM_EXAMPLES, WIDTH, BATCH_SIZE = 100, 3, 7


def id_examples() -> tuple[torch.Tensor, torch.Tensor]:
    """x: (100, 3) float32, row i = [i, i, i]; y: (100,) int64, y[i] = i. Each carries its id."""
    y = torch.arange(NUM_EXAMPLES)
    return y.float().unsqueeze(1).repeat(1, WIDTH), y


def epoch_order(seed: int, epoch: int) -> torch.Tensor:
    """The ids of one epoch's examples, in the order its batches yield them."""
    x, y = id_examples()
    return torch.cat([batch_y for _, batch_y in batches(x, y, BATCH_SIZE, seed, epoch)])


def test_batches_repeat_for_same_seed_and_epoch():
    """Two calls with the same (seed, epoch) yield identical batches."""
    x, y = id_examples()
    first = list(batches(x, y, BATCH_SIZE, seed=3, epoch=5))
    second = list(batches(x, y, BATCH_SIZE, seed=3, epoch=5))
    assert len(first) == len(second)
    for (first_x, first_y), (second_x, second_y) in zip(first, second, strict=True):
        assert torch.equal(first_x, second_x) and torch.equal(first_y, second_y)


@pytest.mark.parametrize("seed, epoch", [(0, 1), (1, 0)], ids=["other epoch", "other seed"])
def test_batches_order_changes_with_seed_or_epoch(seed: int, epoch: int):
    """Another epoch, or another seed, shuffles the examples into another order."""
    assert not torch.equal(epoch_order(seed, epoch), epoch_order(seed=0, epoch=0))


def test_batches_see_every_example_once_with_its_label():
    """One epoch shuffles, visits every example exactly once, and keeps each x row with its y."""
    x, y = id_examples()
    epoch = list(batches(x, y, BATCH_SIZE, seed=0, epoch=0))
    for batch_x, batch_y in epoch:
        assert torch.equal(batch_x, x[batch_y])
    seen_ids = torch.cat([batch_x[:, 0] for batch_x, _ in epoch]).long()
    assert sorted(seen_ids.tolist()) == list(range(NUM_EXAMPLES))
    assert not torch.equal(seen_ids, y)


@pytest.mark.parametrize("batch_size", [7, 10, 30, 99])
def test_batch_sizes_end_with_the_remainder(batch_size: int):
    """Every batch holds batch_size examples but the last, which holds N % batch_size if nonzero."""
    x, y = id_examples()
    sizes = [len(batch_x) for batch_x, _ in batches(x, y, batch_size, seed=0, epoch=0)]
    remainder = NUM_EXAMPLES % batch_size
    assert sizes == [batch_size] * (NUM_EXAMPLES // batch_size) + ([remainder] if remainder else [])


@pytest.mark.parametrize("batch_size", [NUM_EXAMPLES, NUM_EXAMPLES + 1, 10 * NUM_EXAMPLES])
def test_batch_as_large_as_the_set_yields_it_once(batch_size: int):
    """batch_size >= N yields a single batch: the whole set."""
    x, y = id_examples()
    epoch = list(batches(x, y, batch_size, seed=0, epoch=0))
    assert len(epoch) == 1
    assert torch.equal(epoch[0][0], x) and torch.equal(epoch[0][1], y)


def test_batches_are_consecutive_slices_of_one_permuted_copy():
    """Batch i holds rows i*B .. i*B + B - 1 of one permuted copy of the set, x[order], y[order].

    Each batch is gathered when it is yielded (x.index_select), so it is a contiguous
    tensor of its own: writing into it cannot change the data set.
    """
    x, y = id_examples()
    epoch = list(batches(x, y, BATCH_SIZE, seed=0, epoch=0))
    order = torch.cat([batch_y for _, batch_y in epoch])  # y[i] = i: the labels are the row ids
    assert sorted(order.tolist()) == list(range(NUM_EXAMPLES))
    permuted_x, permuted_y = x[order], y[order]
    for index, (batch_x, batch_y) in enumerate(epoch):
        rows = slice(index * BATCH_SIZE, (index + 1) * BATCH_SIZE)
        assert torch.equal(batch_x, permuted_x[rows]) and torch.equal(batch_y, permuted_y[rows])
        assert batch_x.is_contiguous()
        assert batch_x.untyped_storage().data_ptr() != x.untyped_storage().data_ptr()
    epoch[0][0].fill_(-1)
    assert torch.equal(x, id_examples()[0]), "writing into a batch changed the data set"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_match_cpu():
    """CUDA tensors get the same batches as CPU ones: the order depends only on (seed, epoch)."""
    x, y = id_examples()
    on_cpu = list(batches(x, y, BATCH_SIZE, seed=0, epoch=0))
    on_cuda = list(batches(x.cuda(), y.cuda(), BATCH_SIZE, seed=0, epoch=0))
    assert len(on_cuda) == len(on_cpu)
    for (cuda_x, cuda_y), (cpu_x, cpu_y) in zip(on_cuda, on_cpu, strict=True):
        assert cuda_x.is_cuda and cuda_y.is_cuda
        assert torch.equal(cuda_x.cpu(), cpu_x) and torch.equal(cuda_y.cpu(), cpu_y)
