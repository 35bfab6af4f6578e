"""compare.py end to end on real MNIST: the verdict, the report, the plots, bad input.

Runs call compare.main(argv) in-process (one import of torch for all), and one
test runs the real command line to prove the entry point and its exit status.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import compare
import manual
from common.data import RAW_FILES
from lockstep import epoch, flags
from lockstep.checks import ShapeMismatch, difference_stats, relu_gate_flips
from lockstep.learner import Learner
from tests.helpers import BatchNormWithoutMeanTerm, GradientLeakingReLU
from tests.processes import offline

REPO = Path(__file__).resolve().parents[1]
QUICK = ["--subset", "2000", "--epochs", "1", "--quiet"]
PLOTS = ("curves.png", "gradients.png", "weights.png", "predictions.png", "confusion.png")
MLP = ["--model", "mlp", "--hidden", "32", "--lr", "0.1"]
CNN = ["--model", "cnn", "--channels", "4", "8", "--lr", "0.05", "--momentum", "0.9",
       "--subset", "200"]  # 2 steps


def run(capsys, mnist_root, tmp_path, *flags):
    """compare.main with the real data; returns (exit status, stdout, stderr, report or None).
    Each run of a test replaces the one before it in tmp_path/run (--overwrite)."""
    out = tmp_path / "run"
    status = compare.main(["--data-root", str(mnist_root), "--out", str(out), "--overwrite",
                           *flags])
    captured = capsys.readouterr()
    report_file = out / "report.json"
    report = json.loads(report_file.read_text()) if report_file.exists() else None
    return status, captured.out, captured.err, report


def test_quick_run_matches_and_writes_report_and_plots(capsys, mnist_root, tmp_path):
    """--subset 2000 --epochs 1: MATCH, exit 0, every report key with its type, four PNGs."""
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK)
    assert status == 0
    assert "MATCH" in out and "MISMATCH" not in out
    assert "ln 10 = 2.3026" in out
    assert re.search(r"gradients max rel diff \S+ <= 1e-04 \[ok\]", out)  # the twin of > [FAILED]
    for name in ("manual", "torch"):
        assert isinstance(report[name]["test_accuracy"], float)
        assert 0.8 < report[name]["test_accuracy"] <= 1.0
        assert len(report[name]["val_accuracy"]) == len(report[name]["train_loss"]) == 1
    for key in ("max_grad_abs_diff", "max_grad_rel_diff", "max_param_abs_diff",
                "prediction_agreement", "seconds"):
        assert isinstance(report[key], float), key
    assert report["match"] is True and report["diverged"] is False
    assert report["config"]["subset"] == 2000 and report["config"]["lr"] == 0.5
    for plot in PLOTS:
        png = tmp_path / "run" / plot
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_detector_catches_a_gradient_one_percent_off(capsys, mnist_root, tmp_path, monkeypatch):
    """With the manual loss gradient scaled by 1.01, compare reports MISMATCH and exits 1."""
    right = manual.functional.cross_entropy_grad
    monkeypatch.setattr(manual.functional, "cross_entropy_grad",
                        lambda *args, **kwargs: 1.01 * right(*args, **kwargs))
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots")
    assert status == 1
    assert "MISMATCH" in out and "[FAILED]" in out
    assert report["match"] is False and report["max_grad_rel_diff"] > 0.009
    assert re.search(r"gradients max rel diff 1\.0e-02 > 1e-04 \[FAILED\]", out)
    assert "manual: not its own result" in out and report["resynchronized"] is True


def test_same_seed_gives_identical_numbers(capsys, mnist_root, tmp_path):
    """Two runs with the same seed agree on every reported number but the wall time."""
    reports = []
    for attempt in range(2):
        *_, report = run(capsys, mnist_root, tmp_path / str(attempt), *QUICK, "--no-plots")
        del report["seconds"], report["config"]["out"]
        reports.append(report)
    assert reports[0] == reports[1]


def test_float64_gradients_agree_to_1e_10_on_every_step(capsys, mnist_root, tmp_path):
    """--dtype float64, every option on: each step's gradients agree to 1e-10 relative."""
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots",
                                 "--dtype", "float64", "--momentum", "0.9", "--nesterov",
                                 "--weight-decay", "1e-4", "--label-smoothing", "0.1",
                                 "--lr-schedule", "cosine")
    assert status == 0, out
    for level in report["gradient_agreement"].values():
        assert level["steps"] == 20 and level["max_rel_diff"] <= 1e-10
    assert report["max_grad_rel_diff"] <= 1e-10 == report["thresholds"]["max_grad_rel_diff"]


@pytest.mark.parametrize(("flags", "message"), [
    (["--lr", "0"], "--lr must be positive, got 0.0"),
    (["--lr", "-0.1"], "--lr must be positive, got -0.1"),
    (["--lr", "inf"], "argument --lr: must be a finite number, got inf"),
    (["--lr", "nan"], "argument --lr: must be a finite number, got nan"),
    (["--lr", "fast"], "argument --lr: 'fast' is not a number"),
    (["--momentum", "nan"], "argument --momentum: must be a finite number, got nan"),
    (["--momentum", "-0.5"], "--momentum must be in [0, 1), got -0.5"),
    (["--momentum", "9"], "--momentum must be in [0, 1), got 9.0"),
    (["--weight-decay", "inf"], "argument --weight-decay: must be a finite number, got inf"),
    (["--weight-decay=-1e-4"], "--weight-decay must not be negative, got -0.0001"),
    (["--dampening", "nan"], "argument --dampening: must be a finite number, got nan"),
    (["--dampening=-inf"], "argument --dampening: must be a finite number, got -inf"),
    (["--dampening", "1.5"], "--dampening must be in [0, 1], got 1.5"),
    (["--dampening", "-0.1"], "--dampening must be in [0, 1], got -0.1"),
    (["--label-smoothing", "nan"], "argument --label-smoothing: must be a finite number"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1), got 1.0"),
    (["--batch-size", "0"], "--batch-size must be positive"),
    (["--epochs", "-1"], "--epochs must be positive"),
    (["--epochs", "inf"], "argument --epochs: invalid int value: 'inf'"),
    (["--seed", "-1"], "--seed must be in [0, 4294967295], got -1"),
    (["--seed", str(2**64)], "--seed must be in [0, 4294967295]"),
    (["--subset", "0"], "--subset must be positive, got 0"),
    (["--nesterov"], "--nesterov needs --momentum > 0"),
    (["--momentum", "0.9", "--dampening", "0.1", "--nesterov"], "--nesterov needs"),
    (["--dtype", "float16"], "invalid choice"),
    (["--hidden", "64"], "--hidden applies to --model mlp only"),
    (["--batchnorm"], "--batchnorm applies to --model mlp only"),
    (["--model", "mlp", "--hidden", "0"], "--hidden must be positive, got 0"),
    (["--model", "mlp", "--batchnorm", "--batch-size", "1"], "--batchnorm needs --batch-size 2"),
    (["--model", "vgg"], "argument --model: invalid choice: 'vgg'"),
    (["--model", "cnn", "--hidden", "64"], "--hidden applies to --model mlp only, not cnn"),
    (["--model", "cnn", "--batchnorm"], "--batchnorm applies to --model mlp only, not cnn"),
    (["--channels", "8"], "--channels applies to --model cnn and resnet only, not softmax"),
    (["--model", "mlp", "--channels", "8"],
     "--channels applies to --model cnn and resnet only, not mlp"),
    (["--model", "cnn", "--channels", "8", "0"], "--channels must each be positive, got 8 0"),
    (["--model", "cnn", "--channels", "1", "1", "1", "1", "1"],
     "--channels: 5 blocks halve a 28 x 28 image to nothing (at most 4)"),
    (["--lr", "1e40"], "--lr 1e+40 is too large for float32, whose largest number is 3.4e+38"),
    (["--optimizer", "adam", "--eps", "1e-50"], "--eps 1e-50 rounds to 0 in float32"),
    (["--keep-going"], "--keep-going applies to --manual only"),
])
def test_bad_flags_exit_2_with_one_line_before_any_work(capsys, tmp_path, flags, message):
    """Each impossible or non-finite flag: exit status 2 and one line on stderr naming it,
    before the data is even looked for (the data root given here holds nothing)."""
    assert_refused(capsys, tmp_path, flags, message)


def assert_refused(capsys, tmp_path, flags: list[str], message: str) -> None:
    """compare.main(flags) exits 2 with one line on stderr holding `message`, and has neither
    looked for the data nor created the output folder."""
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--data-root", str(tmp_path / "no-data"), "--out", str(tmp_path / "run"),
                      *QUICK, *flags])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error:") and message in err
    assert not (tmp_path / "no-data").exists() and not (tmp_path / "run").exists()


def test_no_progress_bar_when_stderr_is_not_a_terminal(capsys, mnist_root, tmp_path,
                                                       monkeypatch):
    """Piped (as here, captured), stderr gets no progress bar, without --quiet; the twin: on a
    terminal it does."""
    status, _, err, _ = run(capsys, mnist_root, tmp_path, "--subset", "2000", "--epochs", "1",
                            "--no-plots")
    assert status == 0 and err == ""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    _, _, err, _ = run(capsys, mnist_root, tmp_path, "--subset", "2000", "--epochs", "1",
                       "--no-plots")
    assert "epoch 1:   0%|" in err


def test_a_value_float64_can_hold_is_accepted_in_float64():
    """The twin of --lr 1e40: float64 holds it (up to 1.8e308), and float32 holds 1e30."""
    assert flags.parse_args(["--lr", "1e40", "--dtype", "float64"]).lr == 1e40
    assert flags.parse_args(["--lr", "1e30"]).lr == 1e30


def undocumented_defaults(parser: argparse.ArgumentParser) -> list[str]:
    """The flags that take a value whose help does not say its default; switches (store_true)
    are off unless given."""
    return [action.option_strings[0] for action in parser._actions
            if action.option_strings and action.nargs != 0
            and "default" not in (action.help or "")]


def test_help_shows_every_default():
    """Every flag that takes a value says its default in --help; the twin: a flag added without
    one is found."""
    parser = flags.make_parser()
    assert undocumented_defaults(parser) == []
    parser.add_argument("--width", type=int, default=3, help="how wide")
    assert undocumented_defaults(parser) == ["--width"]
    shown = flags.make_parser().format_help()
    for model, recipe in flags.MODEL_DEFAULTS.items():  # the flags a model decides, its line
        line = next(line for line in shown.splitlines() if line.startswith(f"  --model {model} "))
        assert f"lr {recipe['sgd']['lr']:g}, " in line and f"{recipe['epochs']} epochs" in line
    assert "lr 0.1, " not in shown.split("--model softmax")[1].splitlines()[0]  # its twin


def test_each_model_trains_with_its_own_defaults():
    """The flags not given come from the model (flags.MODEL_DEFAULTS): softmax regression's
    lr 0.5 without momentum, the CNN's lr 0.05 with momentum 0.9, a cosine schedule and label
    smoothing; SGD's options only with --optimizer sgd; what is given wins."""
    softmax, cnn = flags.parse_args([]), flags.parse_args(["--model", "cnn"])
    assert (softmax.lr, softmax.momentum, softmax.lr_schedule, softmax.epochs) == (
        0.5, 0.0, "constant", 5)
    recipe = flags.MODEL_DEFAULTS["cnn"]
    assert (cnn.lr, cnn.momentum, cnn.lr_schedule, cnn.label_smoothing, cnn.epochs) == (
        recipe["sgd"]["lr"], recipe["sgd"]["momentum"], recipe["lr_schedule"],
        recipe["label_smoothing"], recipe["epochs"]) != (0.5, 0.0, "constant", 0.0, 5)
    adam = flags.parse_args(["--model", "cnn", "--optimizer", "adam"])
    assert (adam.lr, adam.momentum, adam.epochs) == (1e-3, None, recipe["epochs"])
    given = flags.parse_args(["--model", "cnn", "--lr", "0.02", "--epochs", "1",
                              "--lr-schedule", "constant"])
    assert (given.lr, given.epochs, given.lr_schedule, given.momentum) == (
        0.02, 1, "constant", recipe["sgd"]["momentum"])


def test_a_run_that_cannot_read_its_data_leaves_no_output_folder(capsys, tmp_path):
    """Corrupt data: one line, exit 2, and no --out folder (it is made once the data is read)."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW_FILES:
        (raw / name).write_bytes(b"not an IDX file")
    status = compare.main(["--data-root", str(tmp_path / "data"), "--out", str(tmp_path / "run"),
                           *QUICK])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "corrupt MNIST file" in err
    assert not (tmp_path / "run").exists()


def test_subset_larger_than_the_training_set_exits_2(capsys, mnist_root, tmp_path):
    """--subset beyond the 55,000 training images is found while loading: one line, exit 2."""
    status = compare.main(["--data-root", str(mnist_root), "--out", str(tmp_path / "run"),
                           *QUICK, "--subset", "55001"])
    err = capsys.readouterr().err
    assert status == 2
    assert err == "error: --subset 55001 must be in [1, 55000] (training images left after " \
                  "holding out 5000 for validation)\n"


def test_unwritable_out_exits_2_before_training(capsys, mnist_root, tmp_path):
    """--out under a regular file cannot be created: one line naming it, exit 2."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    status = compare.main(["--data-root", str(mnist_root), "--out", str(blocker / "run"), *QUICK])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"error: cannot write to --out {blocker}")


def test_diverging_run_stops_with_exit_1_and_a_report(capsys, mnist_root, tmp_path):
    """--lr 1e38 makes the loss NaN/inf: stop at once, exit 1, report.json says diverged."""
    status, out, err, report = run(capsys, mnist_root, tmp_path, *QUICK, "--lr", "1e38")
    assert status == 1
    assert "diverged" in err and "Traceback" not in err and "MATCH" not in out
    assert report["diverged"] is True and report["match"] is False
    assert report["manual"]["test_accuracy"] is None


def test_command_line_entry_point(mnist_root, tmp_path):
    """The real command: `python compare.py` exits 2 on bad usage, with no traceback."""
    result = subprocess.run([sys.executable, "compare.py", "--data-root", str(mnist_root),
                             "--batch-size", "-5"], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "--batch-size must be positive" in result.stderr and "Traceback" not in result.stderr


# Start-up: which of the slow imports a fresh Python holds after `import compare` and reading
# a whole copy of MNIST, then (the broken twin, proving the probe sees them) after importing
# the plots and asking for a download into an empty folder, with the network closed.
SLOW_IMPORTS = ("torchvision", "matplotlib")
PROBE = f"""
import json, sys
import compare
from common import data
data.load_mnist(sys.argv[1], train=False)
before = [name for name in {SLOW_IMPORTS} if name in sys.modules]
from lockstep import plots
try:
    data.load_mnist(sys.argv[2], train=False)
except data.DataError:
    pass
print(json.dumps([before, [name for name in {SLOW_IMPORTS} if name in sys.modules]]))
"""


def test_compare_starts_without_torchvision_and_matplotlib(mnist_root, tmp_path):
    """`import compare` and reading MNIST from disk import neither torchvision (a download
    needs it) nor matplotlib (the plots do): each takes about a second to import."""
    result = subprocess.run([sys.executable, "-c", PROBE, str(mnist_root), str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=120,
                            env=offline(dict(os.environ)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [[], list(SLOW_IMPORTS)]


@pytest.mark.parametrize("batchnorm", [[], ["--batchnorm"]], ids=["mlp", "mlp-batchnorm"])
def test_mlp_quick_run_matches(capsys, mnist_root, tmp_path, batchnorm):
    """--model mlp --subset 2000 --epochs 1, with and without BatchNorm: MATCH, dLoss/dlogits,
    every parameter's gradient and every hidden output's compared on each of the 20 steps, in
    the order backward computes them (top layer down); five PNGs, with BatchNorm."""
    plots = [] if batchnorm else ["--no-plots"]  # drawn once: the plain MLP's are the same plots
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *MLP, *batchnorm, *plots)
    assert status == 0, out
    assert "MATCH" in out and "MISMATCH" not in out
    expected = (["logits", "layers.3.weight", "layers.3.bias", "hidden.relu",
                 "hidden.batchnorm1d", "layers.1.weight", "layers.1.bias", "hidden.linear",
                 "layers.0.weight"]
                if batchnorm else ["logits", "layers.2.weight", "layers.2.bias", "hidden.relu",
                                   "hidden.linear", "layers.0.weight", "layers.0.bias"])
    assert list(report["gradient_agreement"]) == expected
    assert all(level["steps"] == 20 for level in report["gradient_agreement"].values())
    assert report["max_grad_rel_diff"] == max(
        level["max_rel_diff"] for level in report["gradient_agreement"].values())
    assert list(report["buffer_agreement"]) == (
        ["layers.1.running_mean", "layers.1.running_var"] if batchnorm else [])
    assert report["config"]["hidden"] == 32 and report["config"]["batchnorm"] == bool(batchnorm)
    for plot in PLOTS if batchnorm else []:
        assert (tmp_path / "run" / plot).stat().st_size > 10_000


def test_mlp_float64_gradients_agree_to_1e_10_with_batchnorm(capsys, mnist_root, tmp_path):
    """--dtype float64 with BatchNorm and momentum: every named gradient and both running
    statistics agree to 1e-10 relative on every step."""
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *MLP, "--batchnorm",
                                 "--no-plots", "--dtype", "float64", "--momentum", "0.9")
    assert status == 0, out
    for level in [*report["gradient_agreement"].values(), *report["buffer_agreement"].values()]:
        assert level["steps"] == 20 and level["max_rel_diff"] <= 1e-10


@pytest.mark.parametrize(("layer", "broken_backward", "flags"), [
    ("ReLU", GradientLeakingReLU.backward, []),
    ("BatchNorm1d", BatchNormWithoutMeanTerm.backward, ["--batchnorm"]),
], ids=["relu", "batchnorm"])
def test_broken_layer_backward_is_a_mismatch(capsys, mnist_root, tmp_path, monkeypatch,
                                             layer, broken_backward, flags):
    """A manual layer with a broken backward: MISMATCH and exit 1; the gradient below it,
    dLoss/d(output of the first Linear), is far from torch's, the one above it is not."""
    monkeypatch.setattr(getattr(manual.layers, layer), "backward", broken_backward)
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *MLP, *flags,
                                 "--no-plots")
    assert status == 1
    assert "MISMATCH" in out and "[FAILED]" in out and report["match"] is False
    assert report["gradient_agreement"]["hidden.linear"]["max_rel_diff"] > 1e-2
    assert report["gradient_agreement"]["hidden.relu"]["max_rel_diff"] < 1e-4


def test_gradient_of_the_wrong_shape_is_a_mismatch(capsys, mnist_root, tmp_path, monkeypatch):
    """A bias gradient of shape (1, 10) instead of (10,): torch refuses to store it as .grad.
    MISMATCH in one line naming the step and the tensor, and that a reshape of it matches;
    exit 1, report.json saying why."""
    right = manual.layers.Linear.backward

    def backward(self, grad_output, needs_input_grad=True):
        grad_input = right(self, grad_output, needs_input_grad)
        self.bias.grad = grad_output.sum(dim=0, keepdim=True)  # (1, out): wrong
        return grad_input

    monkeypatch.setattr(manual.layers.Linear, "backward", backward)
    status, out, err, report = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots")
    assert status == 1 and "Traceback" not in err
    assert out.splitlines()[-1] == (
        "MISMATCH (float32) in epoch 1, step 1, bias.grad differs first (shape): manual's is "
        "(1, 10), torch's (10,), and manual's reshaped to (10,) equals torch's: a stray "
        "dimension (keepdim=True?).")
    assert report["match"] is False and report["stopped_by"] == report["diagnosis"]["message"]
    assert report["diagnosis"] | {"message": None} == {
        "step": 1, "tensor": "bias.grad", "kind": "shape", "factor": None, "message": None}


def test_missing_hidden_gradient_is_a_mismatch(capsys, mnist_root, tmp_path, monkeypatch):
    """An MLP backward that never stores dLoss/dh: its .grad is None against torch's (N, 32):
    MISMATCH naming the tensor, exit 1."""
    right = manual.model.MLP.backward

    def backward(self, grad_logits, needs_input_grad=True):
        result = right(self, grad_logits, needs_input_grad)
        self.hidden_outputs[-1].grad = None
        return result

    monkeypatch.setattr(manual.model.MLP, "backward", backward)
    status, out, *_ = run(capsys, mnist_root, tmp_path, *QUICK, *MLP, "--no-plots")
    assert status == 1
    assert ("step 1, dLoss/d(hidden.relu), the hidden layer's output gradient (what the "
            "backward of the layer above it returns) differs first "
            "(shape): manual's was never set (None); the other's is (100, 32).") in out


def test_shapes_must_agree_exactly_never_by_broadcasting():
    """(64,) against (1, 64) would broadcast: difference_stats refuses it, either way round."""
    with pytest.raises(ShapeMismatch, match=r"shape \(64,\) against \(1, 64\)"):
        difference_stats(torch.ones(64), torch.ones(1, 64))
    with pytest.raises(ShapeMismatch):
        difference_stats(torch.ones(1, 64), torch.ones(64))


def test_manual_learner_takes_torch_state_each_step_unless_independent(
        capsys, mnist_root, tmp_path, monkeypatch):
    """The lock step copies torch's state into the manual learner before each of the 20 steps,
    and torch's gradients once they are compared; --independent never does."""
    calls = []
    monkeypatch.setattr(Learner, "copy_state_from",
                        lambda self, source: calls.append(("state", self.name)))
    copy_gradients = Learner.copy_gradients_from
    monkeypatch.setattr(Learner, "copy_gradients_from", lambda self, source: (
        calls.append(("gradients", self.name)), copy_gradients(self, source)))
    status, *_ = run(capsys, mnist_root, tmp_path / "a", *QUICK, *MLP, "--no-plots")
    assert status == 0 and calls == [("state", "manual"), ("gradients", "manual")] * 20
    calls.clear()
    status, *_ = run(capsys, mnist_root, tmp_path / "b", *QUICK, *MLP, "--no-plots",
                     "--independent")
    assert status == 0 and calls == []


def test_batchnorm_with_a_last_batch_of_one_exits_2(capsys, mnist_root, tmp_path):
    """--subset 2001 --batch-size 100 leaves a last batch of 1, which BatchNorm cannot
    normalize in training: one line, exit 2, before training."""
    status = compare.main(["--data-root", str(mnist_root), "--out", str(tmp_path / "run"),
                           *QUICK, *MLP, "--batchnorm", "--subset", "2001"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "leaves a last batch of 1 from 2001 training images" in err


def test_relu_gate_flips_counts_gates_open_on_one_side_only():
    """Two ReLU outputs that differ in one gate, 1e-8 from 0: one flip, at 1e-8 of the largest
    output (2.0); identical outputs: none."""
    torch_side = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    manual_side = torch_side.clone()
    manual_side[0, 0] = 2e-8  # open here, shut on torch's side
    count, distance = relu_gate_flips(manual_side, torch_side).tolist()
    assert count == 1 and distance == pytest.approx(1e-8)
    assert relu_gate_flips(torch_side, torch_side).tolist() == [0.0, 0.0]


def shut_the_largest_gate(self, x):
    """Broken on purpose: ReLU's forward also shuts the gate of each row's largest input."""
    self.output = x.clamp_min(0)
    self.output[torch.arange(len(x)), x.argmax(dim=1)] = 0
    return self.output


def test_a_gate_shut_by_a_bug_is_not_called_rounding(capsys, mnist_root, tmp_path, monkeypatch):
    """A ReLU forward that shuts open gates far from 0: every step has flipped gates, at a
    distance of the order of the largest output: MISMATCH, and no note blaming rounding."""
    monkeypatch.setattr(manual.layers.ReLU, "forward", shut_the_largest_gate)
    monkeypatch.setattr(manual.layers.ReLU, "__call__", shut_the_largest_gate)
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *MLP, "--no-plots")
    assert status == 1 and "MISMATCH" in out and "rounding of 0" not in out
    assert report["diagnosis"]["kind"] != "rounding"
    flips = report["relu_gate_flips"]
    assert flips["steps"] == 20 and flips["entries"] >= 20 * 100
    assert flips["max_relative_distance"] > 0.1


@pytest.mark.parametrize("broken", [False, pytest.param(True, marks=pytest.mark.twin)],
                         ids=["within", "gate-shut"])
def test_the_gates_are_asked_only_at_steps_over_the_limit(capsys, mnist_root, tmp_path,
                                                          monkeypatch, broken):
    """Detail once something went wrong: a run within the limit at every step never passes over
    the ReLU outputs to ask their gates; the ReLU that shuts gates has them asked at all 20."""
    asked, ask = [], epoch.relu_flips
    monkeypatch.setattr(epoch, "relu_flips", lambda learners: asked.append(1) or ask(learners))
    if broken:
        monkeypatch.setattr(manual.layers.ReLU, "forward", shut_the_largest_gate)
        monkeypatch.setattr(manual.layers.ReLU, "__call__", shut_the_largest_gate)
    status, _, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *MLP, "--no-plots")
    assert status == int(broken)
    assert len(asked) == report["relu_gate_flips"]["steps_over_limit"] == (20 if broken else 0)
