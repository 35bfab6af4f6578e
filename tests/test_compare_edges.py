"""compare.py at its edges: Ctrl-C, an --out that holds a run, a run that did not learn, the
on-its-own run cut short, and what the lock step cannot see (lockstep.overflow)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import compare
import manual
from lockstep import alone, culprit, learning, overflow, report
from tests.processes import ROOT
from tests.test_compare import QUICK, run


def interrupted(*args, **kwargs):
    """A stand-in for any step of a run: Ctrl-C pressed while it ran."""
    raise KeyboardInterrupt


def test_ctrl_c_says_one_line_exits_130_and_leaves_no_empty_folder(capsys, mnist_root,
                                                                   tmp_path, monkeypatch):
    """A KeyboardInterrupt during training: "stopped by Ctrl-C", exit status 130, and the
    folder the run made is gone; the twin: a folder that was there before stays."""
    monkeypatch.setattr(compare, "train_epoch_lockstep", interrupted)
    out = tmp_path / "new" / "run"
    status = compare.main(["--data-root", str(mnist_root), "--out", str(out), *QUICK])
    assert (status, capsys.readouterr().err) == (130, "stopped by Ctrl-C\n")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    assert compare.main(["--data-root", str(mnist_root), "--out", str(tmp_path / "kept"),
                         *QUICK]) == 130
    assert (tmp_path / "kept").is_dir()


def test_a_real_sigint_is_one_line_and_exit_130(mnist_root, tmp_path):
    """SIGINT to a real compare.py while it trains, as Ctrl-C sends it: no traceback."""
    env = os.environ | {"MNIST_ROOT": str(mnist_root), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "compare.py", "--out", str(tmp_path / "run"),
                                "--epochs", "50"], cwd=ROOT, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = process.stdout.readline()  # the initial validation loss: training starts
        assert first.startswith("initial validation loss"), first
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert (process.returncode, err) == (130, "stopped by Ctrl-C\n")
    assert not (tmp_path / "run").exists()


def test_an_out_folder_holding_a_run_is_refused_unless_overwrite(capsys, mnist_root, tmp_path):
    """--out naming a folder with a report.json: one line, exit 2, the run untouched; with
    --overwrite it is replaced; the twin: a folder that holds something else is used."""
    held = tmp_path / "held"
    held.mkdir()
    (held / "report.json").write_text("{}")
    (held / "curves.png").write_text("an earlier plot")
    argv = ["--data-root", str(mnist_root), "--out", str(held), *QUICK, "--no-plots"]
    assert compare.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds an earlier run" in err and "--overwrite" in err
    assert (held / "report.json").read_text() == "{}"
    assert compare.main([*argv, "--overwrite"]) == 0
    assert (held / "report.json").read_text() != "{}" and not (held / "curves.png").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert compare.main(["--data-root", str(mnist_root), "--out", str(other), *QUICK,
                         "--no-plots"]) == 0
    assert (other / "notes.txt").read_text() == "mine"


def test_a_new_run_folder_never_reuses_one_of_the_same_second(tmp_path, monkeypatch):
    monkeypatch.setattr(report.time, "strftime", lambda pattern: "20261207-120000")
    first = report.new_folder(tmp_path)
    first.mkdir()
    second = report.new_folder(tmp_path)
    assert (first.name, second.name) == ("20261207-120000", "20261207-120000-2")


def history(val_accuracy: float, val_loss: float, train_loss: float) -> dict:
    """not_learning's arguments for one epoch, alike on both sides, from a start of 2.30."""
    return dict(train_loss={"manual": [train_loss], "torch": [train_loss]},
                val_loss={"manual": [val_loss], "torch": [val_loss]},
                val_accuracy={"manual": [val_accuracy], "torch": [val_accuracy]},
                initial=[2.30, 2.30], lr=0.5)


@pytest.mark.parametrize(("numbers", "start"), [
    ((0.1162, 2.28, 2.2843), "NOT LEARNING: validation accuracy manual 11.62%, torch 11.62%: "
                             "near chance"),
    ((0.8144, 4.82, 0.9), "UNSTABLE: the validation loss ended at 4.8200, not below its "
                          "start, 2.3000, though validation accuracy manual 81.44%"),
    ((0.77, 1e3, 2.4e30), "UNSTABLE: the training loss grew by orders of magnitude, to 2.4e+30"),
    ((0.92, 0.28, 0.30), None),  # the twin: a run that learned
])
def test_a_run_that_did_not_learn_is_named(numbers, start):
    line = learning.not_learning(**history(*numbers))
    if start is None:
        assert line is None
    else:
        assert line.startswith(start) and "agreeing is not learning: lower --lr (now 0.5)" in line


def test_an_unstable_run_says_so_after_its_verdict(capsys, mnist_root, tmp_path):
    """--lr 1e6 on softmax regression: MATCH, then the line that says the loss blew up."""
    status, out, _, report_ = run(capsys, mnist_root, tmp_path, *QUICK, "--lr", "1e6",
                                  "--no-plots")
    lines = out.splitlines()
    verdict = next(i for i, line in enumerate(lines) if line.startswith("MATCH"))
    assert status == 0 and lines[verdict + 1].startswith("UNSTABLE: the training loss grew")
    assert report_["not_learning"] == lines[verdict + 1]


def test_the_on_its_own_line_says_when_torch_did_not_learn_either():
    alike = {"steps": 550, "manual": {"val_accuracy": 0.1030}, "torch": {"val_accuracy": 0.1030}}
    assert "Torch's own run did not learn either" in report.alone_sentence(alike)
    learned = alike | {"torch": {"val_accuracy": 0.9788}}  # the twin
    assert "did not learn" not in report.alone_sentence(learned)
    assert report.alone_sentence({"steps": 550, "cut_short": True}).endswith(
        "epoch 1: cut short by Ctrl-C.")


def test_ctrl_c_cuts_the_on_its_own_run_short_and_keeps_the_rest(capsys, mnist_root, tmp_path,
                                                                 monkeypatch):
    """After a mismatch, Ctrl-C during the on-its-own run (here at the end of a run of manual/,
    which trains on): it says it was cut short, the report is written, and the run ends as a
    mismatch (exit 1). (--manual's order, the diagnosis first: test_compare_exercises.)"""
    monkeypatch.setattr(manual.layers.Linear, "backward", halved(manual.layers.Linear.backward))
    monkeypatch.setattr(alone, "train_step", interrupted)
    status, out, _, found = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots")
    assert status == 1 and "\nNow training each learner afresh" in out
    assert "epoch 1: cut short by Ctrl-C.\n" in out and "\nMISMATCH (float32)" in out
    assert found["on_its_own"] == {"steps": 20, "cut_short": True}


def halved(backward):
    """Linear.backward with its weight gradient halved: a mismatch at step 1."""
    def wrong(self, grad_output, needs_input_grad=True):
        returned = backward(self, grad_output, needs_input_grad)
        self.weight.grad = self.weight.grad / 2
        return returned
    return wrong


def test_a_softmax_without_its_max_is_named_with_the_check_that_catches_it(monkeypatch,
                                                                             tmp_path):
    """exp(z) / sum exp(z) on logits of 1e4: inf / inf; the line names softmax and the
    grader's check; the twin: manual's own functions get no line."""
    def unshifted(logits):
        return logits.exp() / logits.exp().sum(dim=-1, keepdim=True)
    like = torch.zeros(1)
    assert overflow.unseen(manual.functional, like) is None
    monkeypatch.setattr(manual.functional, "softmax", unshifted)
    line = overflow.unseen(manual.functional, like, ROOT / "exercises")
    assert line.startswith("UNSEEN: your softmax gives NaN or inf") and "88.7" in line
    assert overflow.CHECK.split("::")[1] in line and "--manual exercises, from the proj" in line
    outside = overflow.unseen(manual.functional, like, tmp_path / "ex")  # pytest needs "="
    assert f"--manual={tmp_path / 'ex'}, from the project's folder" in outside
    test_file, test = overflow.CHECK.split("::")
    assert f"def {test}(" in (ROOT / test_file).read_text()  # the check named exists


@pytest.mark.parametrize(("model", "threads"), [
    ("softmax", 1), ("mlp", None), ("cnn", None), ("softmax --engine", 1), ("mlp --engine", 1),
    ("cnn --engine", None)])
def test_softmax_regression_runs_on_one_thread_unless_told(monkeypatch, model, threads):
    """--model softmax on one torch thread (docs/speed.md, "A busy machine"), and the MLP
    through the engine (lockstep.threads), the others on torch's own; the process's count is
    restored after, and OMP_NUM_THREADS is obeyed."""
    seen = []
    monkeypatch.setattr(compare, "run", lambda args, made: seen.append(torch.get_num_threads()))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        compare.main(["--model", *model.split()])
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        compare.main(["--model", *model.split()])
        assert seen == [threads or 2, 2] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_nan_loss_anywhere_is_unstable():
    """A NaN training loss, first or last, and a NaN validation loss: never a quiet None."""
    for losses in ([0.5, float("nan")], [float("nan"), 0.5]):
        numbers = history(0.9, 0.3, 0.4) | {"train_loss": {"manual": losses, "torch": losses}}
        assert learning.not_learning(**numbers).startswith("UNSTABLE")
    assert learning.not_learning(**history(0.9, float("nan"), 0.4)).startswith("UNSTABLE")


W, B, DX = "layers.3.weight", "layers.3.bias", "hidden.maxpool2d.2"


@pytest.mark.parametrize(("name", "params", "below", "over", "said"), [
    (DX, [W, B], DX, {DX: True}, ": its dLoss/dx is wrong where its weight.grad and bias.grad "
                                 "agree"),
    (DX, [], DX, {DX: True}, ""),  # a layer without parameters (ReLU, MaxPool2d)
    (W, [W, B], DX, {W: True, B: True, DX: True}, ": its bias.grad differs too; its dLoss/dx "
                                                  "differs too"),
    (W, [W, B], DX, {W: True}, ": its bias.grad agrees; its dLoss/dx agrees"),  # the twin
    ("weight", ["weight", "bias"], None, {"weight": True}, ": its bias.grad agrees"),  # softmax
])
def test_the_culprit_says_how_the_layers_other_gradients_compare(name, params, below, over,
                                                                  said):
    assert culprit.rest(name, params, below, over) == said


def test_overwrite_replaces_every_file_a_run_writes_and_only_when_it_writes(capsys, mnist_root,
                                                                           tmp_path, monkeypatch):
    """Every file a run writes is in report.WRITTEN, so --overwrite leaves no stale plot of an
    earlier run; and those files stay until the new report is written: a run stopped before it
    (Ctrl-C during training) leaves the earlier run whole."""
    status, _, _, _ = run(capsys, mnist_root, tmp_path, *QUICK)
    written = {path.name for path in (tmp_path / "run").iterdir()}
    assert status == 0 and "curves.png" in written and written <= set(report.WRITTEN)
    with monkeypatch.context() as patched:
        patched.setattr(compare, "train_epoch_lockstep", interrupted)
        status, _, _, _ = run(capsys, mnist_root, tmp_path, *QUICK)
    assert status == 130 and {path.name for path in (tmp_path / "run").iterdir()} == written
    status, _, _, _ = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots")
    assert status == 0 and [path.name for path in (tmp_path / "run").iterdir()] == ["report.json"]
