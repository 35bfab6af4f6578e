"""compare.py's tutor on real MNIST: seeded bugs are diagnosed with the right kind, tensor and
first step; rounding is called rounding; the learning-rate advice only for real drift; the
float64 reference line; report.json's diagnosis, null on a MATCH.
"""

import re

import pytest

import manual
from tests.helpers import linear_backward
from tests.test_compare import MLP, QUICK, run

RIGHT_GRAD = manual.functional.cross_entropy_grad
RIGHT_LOSS = manual.functional.cross_entropy


def nan_at_call(number):
    """Linear.backward that puts a NaN into its weight gradient on its `number`-th call."""
    calls = []

    def weight(layer, grad_output):
        calls.append(1)
        grad = grad_output.T @ layer.input
        if len(calls) == number:
            grad[0, 0] = float("nan")
        return grad
    return linear_backward(weight=weight)


SEEDED = {  # name: (what to patch, attribute, value, step, tensor, kind, factor)
    "forgets /N": ("functional", "cross_entropy_grad",
                   lambda z, y, reduction="mean", label_smoothing=0.0: RIGHT_GRAD(
                       z, y, "sum", label_smoothing), 1, "logits.grad", "scale", 100.0),
    "bias mean": ("layers.Linear", "backward", linear_backward(bias=lambda g: g.mean(dim=0)),
                  1, "bias.grad", "scale", 0.01),
    "sign": ("layers.Linear", "backward", linear_backward(weight=lambda s, g: -(g.T @ s.input)),
             1, "weight.grad", "scale", -1.0),
    "transposed": ("layers.Linear", "backward",
                   linear_backward(weight=lambda s, g: s.input.T @ g), 1, "weight.grad",
                   "shape", None),
    "NaN at step 7": ("layers.Linear", "backward", nan_at_call(7), 7, "weight.grad",
                      "non-finite", None),
    "1 percent": ("functional", "cross_entropy_grad",
                  lambda *args, **kwargs: 1.01 * RIGHT_GRAD(*args, **kwargs), 1, "logits.grad",
                  "scale", 1.01),
}


@pytest.mark.parametrize("bug", SEEDED)
def test_seeded_bugs_are_diagnosed_where_they_start(capsys, mnist_root, tmp_path, monkeypatch,
                                                    bug):
    """Each seeded bug: MISMATCH, exit 1, report.json's diagnosis with the right step, tensor,
    kind and factor, its message printed, and no learning-rate advice."""
    where, name, value, step, tensor, kind, factor = SEEDED[bug]
    monkeypatch.setattr(f"manual.{where}.{name}", value)
    status, out, err, report = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots")
    assert status == 1 and "MISMATCH" in out and "Traceback" not in err
    found = report["diagnosis"]
    assert (found["step"], found["tensor"], found["kind"], found["factor"]) == (
        step, tensor, kind, factor)
    assert found["message"] in out and "smaller --lr" not in out


def test_a_match_has_no_diagnosis_and_explains_float32_against_float64(capsys, mnist_root,
                                                                       tmp_path):
    """The default quick run: diagnosis null; step 1 of each side within 1e-6 of float64,
    neither bit-identical to it, and the line that says why they are close but not equal."""
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots")
    assert status == 0 and report["diagnosis"] is None
    reference = report["float64_reference"]
    assert 0 < reference["manual"] < 1e-6 and 0 < reference["torch"] < 1e-6
    assert list(reference["tensors"]) == ["loss", "logits", "weight", "bias"]
    assert ("Both round each float32 operation (to 6.0e-08), in their own order: that is why "
            "they are close but not bit-identical.") in out


def test_float64_needs_no_float64_reference(capsys, mnist_root, tmp_path):
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots",
                                 "--dtype", "float64")
    assert status == 0 and report["float64_reference"] is None and "against float64" not in out


def test_batch_size_1_in_float32_is_rounding(capsys, mnist_root, tmp_path):
    """Batch size 1: a confidently right example gives a loss and gradients near 0, where
    float32 rounding exceeds the limit. MISMATCH, diagnosed as rounding, not an error."""
    status, out, _, report = run(capsys, mnist_root, tmp_path, "--subset", "2000", "--epochs",
                                 "1", "--quiet", "--no-plots", "--batch-size", "1")
    assert status == 1 and report["diagnosis"]["kind"] == "rounding"
    assert "not an error" in report["diagnosis"]["message"] and "smaller --lr" not in out


def test_a_loss_that_is_nan_on_one_side_only_is_a_mismatch_not_a_divergence(
        capsys, mnist_root, tmp_path, monkeypatch):
    """The manual loss is NaN at step 3, torch's is finite: the run stops there with
    MISMATCH (not 'training diverged'), exit 1, and a report that diagnoses the loss."""
    calls = []  # the first call is the initial validation loss; step s makes call s + 1

    def cross_entropy(*args, **kwargs):
        calls.append(1)
        return RIGHT_LOSS(*args, **kwargs) * (float("nan") if len(calls) == 1 + 3 else 1)

    monkeypatch.setattr(manual.functional, "cross_entropy", cross_entropy)
    status, out, err, report = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots")
    assert status == 1 and "diverged" not in err and report["diverged"] is False
    assert out.splitlines()[1] == (
        "MISMATCH (float32) in epoch 1, step 3, loss differs first (non-finite): manual's is "
        "NaN where the other side's is finite.")
    assert (report["diagnosis"]["step"], report["diagnosis"]["tensor"]) == (3, "loss")


def test_drift_in_independent_runs_gets_the_learning_rate_advice(capsys, mnist_root, tmp_path):
    """--independent, lr 0.5, batch 10: step 1 agrees, then the two MLPs drift apart. Each
    side is within rounding of float64 from its own parameters, but the exact math from the
    two differs: rounding, with the advice to lower --lr."""
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *MLP, "--lr", "0.5",
                                 "--momentum", "0", "--lr-schedule", "constant",
                                 "--batch-size", "10", "--independent", "--no-plots",
                                 "--epochs", "2")
    found = report["diagnosis"]
    assert status == 1 and found["kind"] == "rounding" and found["step"] > 1
    assert "the parameters have drifted apart" in found["message"]
    assert "try a smaller --lr" in found["message"] and found["message"] in out


def test_any_error_in_the_manual_code_is_a_mismatch_in_one_line(capsys, mnist_root, tmp_path,
                                                                 monkeypatch):
    """A manual loss that raises IndexError (not only torch's RuntimeError): MISMATCH naming
    the loss and the error, exit 1, no traceback, report.json saying why."""
    calls = []  # the first call is the initial validation loss, left right

    def raises(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise IndexError("index 10 is out of bounds")
        return RIGHT_LOSS(*args, **kwargs)

    monkeypatch.setattr(manual.functional, "cross_entropy", raises)
    status, out, err, report = run(capsys, mnist_root, tmp_path, *QUICK, "--no-plots")
    assert status == 1 and "Traceback" not in err
    assert re.fullmatch(  # where: the line of manual/ that called the raising function
        r"MISMATCH \(float32\) in epoch 1, step 1, loss differs first \(other\): the manual "
        r"code failed before computing it: IndexError \(at (.*/)?manual/train\.py line \d+, "
        r"in forward_backward\): "
        r"index 10 is out of bounds", out.splitlines()[-1])
    assert report["diagnosis"]["tensor"] == "loss"
