"""compare.py --model resnet on real MNIST: the lock step MATCHes in float32 and float64 (the
limit 1e-10), --graph shows the fork (AddBackward0's first edge and conv1's lead to the node
that made x), and each broken twin of the issue is named by the tutor: the skip's gradient
overwritten or lost, BatchNorm2d normalized per (channel, row), its running variance biased,
the block's ReLU before the add. Small: 4 and 8 channels, two steps, 1,000 test images.
(The pieces against torch, and the twins against the suite's checks: tests/test_resnet.py.)
"""

import re
from pathlib import Path

import pytest

import compare
from tests.test_compare import run
from tests.test_compare_exercises import few_images, folder, run_manual  # noqa: F401

RESNET = ["--model", "resnet", "--channels", "4", "8", "--subset", "200", "--epochs", "1",
          "--no-plots"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_resnet_matches(capsys, mnist_root, tmp_path, few_images, dtype):  # noqa: F811
    status, out, _, report = run(capsys, mnist_root, tmp_path, *RESNET, "--dtype", dtype)
    assert status == 0, out
    assert f"\nMATCH ({dtype})" in out
    assert report["max_grad_rel_diff"] <= (1e-4 if dtype == "float32" else 1e-10)
    names = report["gradient_agreement"]
    assert "hidden.maxpool2d.3" in names and "layers.4.conv1.weight" in names  # the fork's
    assert "layers.4.bn1.running_var" in report["buffer_agreement"]


def test_the_graph_shows_the_fork(capsys, mnist_root, tmp_path):
    status, out, _, report = run(capsys, mnist_root, tmp_path, *RESNET, "--graph")
    assert status == 0 and report is None, out
    rows = dict(re.findall(r"^ +(\d+)  (\S+(?: -> [\d, -]+)?) ", out, re.MULTILINE))
    adds = [row for row, cell in rows.items() if cell.startswith("AddBackward0 -> ")]
    skip = rows[adds[-1]].split(" -> ")[1].split(", ")[0]  # the first block's x + f(x)
    assert rows[skip].startswith("MaxPool2DWithIndicesBackward0")
    into_x = [row for row, cell in rows.items() if re.search(rf"(-> |, ){skip}(,|$)", cell)]
    assert [rows[row].split(" ")[0] for row in into_x] == ["AddBackward0",
                                                           "ConvolutionBackward0"]
    assert re.search(r"^GRAPH MATCH: 56 nodes and 66 edges as torch's", out, re.MULTILINE)


def replaced(file: str, old: str, new: str):
    """A change for folder(): file's text with old (which must be there) replaced by new."""
    def change(path: Path) -> None:
        text = (path / file).read_text()
        assert old in text, old
        (path / file).write_text(text.replace(old, new))
    return change


FORK_WORDS = "manual's dLoss/dx is torch's minus the skip's share"
# The broken twins: (file, right, wrong, extra flags, the tensor named, kind, words).
TWINS = {
    "skip-overwritten": ("autograd.py", "buffers[target] = grad if buffers.get(target) is None "
                         "else buffers[target] + grad", "buffers[target] = grad",
                         ["--label-smoothing", "0"], "hidden.maxpool2d.8.grad", "fork",
                         FORK_WORDS),
    "skip-detached": ("functions.py", "    return relu(block.relu, add(x, branch))",
                      "    return relu(block.relu, add(Variable(x.data), branch))", [],
                      "hidden.maxpool2d.8.grad", "fork", FORK_WORDS),
    "per-channel-and-row": ("layers.py", "        return super().forward(x.flatten(2))"
                            ".view_as(x)\n",
                            "        super().forward(x.flatten(2))  # backward's tensors\n"
                            "        mean = x.mean(dim=(0, 3), keepdim=True)\n"
                            "        var = x.var(dim=(0, 3), keepdim=True, unbiased=False)\n"
                            "        shape = (1, -1, 1, 1)\n"
                            "        return ((x - mean) / (var + self.eps).sqrt()\n"
                            "                * self.weight.view(shape) + self.bias.view(shape))\n",
                            [], "hidden.batchnorm2d.1", "statistics",
                            "BatchNorm2d's statistics are taken over (N, W), per (channel, row)"),
    "running-variance-biased": ("layers.py", "self.running_var.lerp_(var * (n / (n - 1)), "
                                "self.momentum)", "self.running_var.lerp_(var, self.momentum)",
                                ["--dtype", "float64"], "layers.1.running_var", "statistics",
                                "BatchNorm2d's running variance divides the batch's squared "
                                "deviations by n = 6272, the N H W values a channel has: the "
                                "biased variance, where torch's divides by n - 1 = 6271"),
    "relu-before-add": ("functions.py", "    return relu(block.relu, add(x, branch))",
                        "    return add(x, relu(block.relu, branch))", [],
                        "hidden.basicblock.4", "block",
                        "manual's block output is x + relu(f(x)): the ReLU comes before the add"),
}


@pytest.mark.twin
@pytest.mark.parametrize("case", TWINS)
def test_each_broken_twin_is_named(capsys, mnist_root, tmp_path, few_images, case):  # noqa: F811
    file, right, wrong, flags, tensor, kind, words = TWINS[case]
    path = folder(tmp_path, [], replaced(file, right, wrong))
    status, out, _, report = run_manual(capsys, mnist_root, tmp_path, path, *RESNET, *flags)
    assert status == 1, out
    diagnosis = report["diagnosis"]
    assert (diagnosis["step"], diagnosis["tensor"], diagnosis["kind"]) == (1, tensor, kind), out
    assert words in diagnosis["message"]


@pytest.mark.parametrize(("flags", "words"), [
    (["--model", "resnet", "--channels", "2", "2", "2", "2", "--batch-size", "1"],
     "--model resnet with 4 stages needs --batch-size 2 or more"),
    (["--model", "mlp", "--channels", "4"], "--channels applies to --model cnn and resnet only")])
def test_resnet_flags_refused(capsys, flags, words):
    """--channels sets a ResNet's stages' widths, and no other model's; a batch of 1 where the
    last stage's images are 1 x 1 leaves BatchNorm2d one value a channel: one line, exit 2."""
    with pytest.raises(SystemExit) as exit_:
        compare.main(flags)
    assert exit_.value.code == 2 and words in capsys.readouterr().err
