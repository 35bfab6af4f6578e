"""compare.py with each optimizer: SGD, Adam and AdamW, their state compared after every step.

The lock step gives the manual optimizer torch's gradients once they are compared, so the
parameters and the optimizer state after each update must agree to the gradient limit (in
practice, bit for bit): a broken update rule is a MISMATCH even though the next step starts
again from torch's state.
"""

import pytest

import manual
from lockstep import flags
from tests.helpers import (
    AdamWDecayingThroughTheGradient,
    AdamWithEpsInsideTheRoot,
    AdamWithoutBiasCorrection,
)
from tests.test_compare import MLP, QUICK, assert_refused, run

ADAM_MLP = ["--model", "mlp", "--hidden", "32"]  # Adam's own default lr, 1e-3
MOMENTS = ["exp_avg", "exp_avg_sq"]


@pytest.mark.parametrize("model", [[], ADAM_MLP], ids=["softmax", "mlp"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_and_adamw_quick_runs_match_with_their_state(capsys, mnist_root, tmp_path, model,
                                                          optimizer):
    """--optimizer adam / adamw --subset 2000 --epochs 1, both models: MATCH; exp_avg and
    exp_avg_sq of every parameter compared on each of the 20 steps, in the table too."""
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *model, "--no-plots",
                                 "--optimizer", optimizer)
    assert status == 0, out
    assert "MATCH" in out and "MISMATCH" not in out
    params = list(report["parameter_agreement"])
    assert params == (["weight", "bias"] if not model else
                      ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias"])
    assert list(report["state_agreement"]) == [f"{p}.{key}" for p in params for key in MOMENTS]
    for level in report["state_agreement"].values():
        assert level["steps"] == 20 and level["max_rel_diff"] <= 1e-4
    assert "optimizer state" in out and f"{params[0]}.exp_avg_sq" in out
    config = report["config"]
    assert (config["lr"], config["betas"], config["eps"]) == (1e-3, [0.9, 0.999], 1e-8)
    assert config["weight_decay"] == (1e-2 if optimizer == "adamw" else 0.0)
    assert config["momentum"] is None


def test_amsgrad_and_sgd_momentum_state_is_compared(capsys, mnist_root, tmp_path):
    """--amsgrad adds max_exp_avg_sq; SGD with momentum has its momentum_buffer; plain SGD has
    no state at all."""
    *_, report = run(capsys, mnist_root, tmp_path / "a", *QUICK, "--no-plots",
                     "--optimizer", "adam", "--amsgrad", "--betas", "0.8", "0.99", "--eps", "1e-6")
    assert report["match"] and list(report["state_agreement"]) == [
        f"{p}.{key}" for p in ("weight", "bias") for key in [*MOMENTS, "max_exp_avg_sq"]]
    assert report["config"]["betas"] == [0.8, 0.99] and report["config"]["eps"] == 1e-6
    *_, report = run(capsys, mnist_root, tmp_path / "b", *QUICK, "--no-plots",
                     "--momentum", "0.9")
    assert report["match"]
    assert list(report["state_agreement"]) == ["weight.momentum_buffer", "bias.momentum_buffer"]
    *_, report = run(capsys, mnist_root, tmp_path / "c", *QUICK, "--no-plots")
    assert report["match"] and report["state_agreement"] == {}


def test_float64_adamw_with_cosine_agrees_to_1e_10(capsys, mnist_root, tmp_path):
    """--dtype float64, AdamW with amsgrad and a cosine schedule on the MLP with BatchNorm:
    gradients, parameters, running statistics and state within 1e-10 on every step."""
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *ADAM_MLP, "--batchnorm",
                                 "--no-plots", "--dtype", "float64", "--optimizer", "adamw",
                                 "--amsgrad", "--lr-schedule", "cosine")
    assert status == 0, out
    for key in ("gradient_agreement", "parameter_agreement", "buffer_agreement",
                "state_agreement"):
        assert report[key] and all(level["steps"] == 20 and level["max_rel_diff"] <= 1e-10
                                   for level in report[key].values()), key


BROKEN = {
    "adam without bias correction": ("Adam", AdamWithoutBiasCorrection, "adam", "parameters"),
    "adam with eps inside the root": ("Adam", AdamWithEpsInsideTheRoot, "adam", "parameters"),
    "adamw decaying through the gradient": ("AdamW", AdamWDecayingThroughTheGradient, "adamw",
                                            "optimizer state"),
}


@pytest.mark.parametrize("broken", BROKEN)
@pytest.mark.parametrize("model", [[], ADAM_MLP], ids=["softmax", "mlp"])
def test_a_broken_adam_is_a_mismatch(capsys, mnist_root, tmp_path, monkeypatch, broken, model):
    """Each classic Adam mistake: MISMATCH, exit 1, the failed check named in the verdict,
    though every gradient still matches (each step starts from torch's state); the diagnosis
    names the first tensor after the update that differs, at step 1, and not as rounding."""
    name, broken_class, optimizer, failed = BROKEN[broken]
    monkeypatch.setattr(manual.optim, name, broken_class)
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *model, "--no-plots",
                                 "--optimizer", optimizer)
    assert status == 1 and report["match"] is False
    assert f"{failed} [FAILED]" in out and "gradients max rel diff" in out
    found = report["diagnosis"]
    assert found["step"] == 1 and found["kind"] not in ("rounding", "shape")
    assert found["tensor"].endswith("after the update") or ".exp_avg" in found["tensor"]
    assert f"diagnosis: {found['message']}" in out
    assert "smaller --lr" not in out  # nothing drifted: each step started from torch's state
    assert report["max_grad_rel_diff"] <= 1e-4
    agreement = report["parameter_agreement" if failed == "parameters" else "state_agreement"]
    assert max(level["max_rel_diff"] for level in agreement.values()) > 1e-3


def test_a_broken_sgd_update_is_a_mismatch(capsys, mnist_root, tmp_path, monkeypatch):
    """An SGD that ignores dampening: its gradients are right, its update is not: MISMATCH on
    the parameters and the momentum buffers."""
    init = manual.optim.SGD.__init__
    monkeypatch.setattr(manual.optim.SGD, "__init__", lambda self, params, **options: init(
        self, params, **{**options, "dampening": 0.0}))
    status, out, _, report = run(capsys, mnist_root, tmp_path, *QUICK, *MLP, "--no-plots",
                                 "--momentum", "0.9", "--dampening", "0.5")
    assert status == 1 and report["match"] is False
    assert "parameters [FAILED]" in out and "optimizer state [FAILED]" in out
    assert "smaller --lr" not in out
    # step 1 sets the buffer to the gradient, undamped: step 2's update is the first to differ
    assert report["diagnosis"]["step"] == 2
    assert report["diagnosis"]["tensor"] == "layers.0.weight after the update"


@pytest.mark.parametrize(("flags", "message"), [
    (["--optimizer", "adam", "--momentum", "0.9"],
     "--momentum applies to --optimizer sgd only, not adam"),
    (["--optimizer", "adamw", "--nesterov"], "--nesterov applies to --optimizer sgd only"),
    (["--optimizer", "adam", "--dampening", "0"], "--dampening applies to --optimizer sgd only"),
    (["--amsgrad"], "--amsgrad applies to --optimizer adam or adamw only, not sgd"),
    (["--betas", "0.9", "0.999"], "--betas applies to --optimizer adam or adamw only"),
    (["--optimizer", "sgd", "--eps", "1e-8"], "--eps applies to --optimizer adam or adamw only"),
    (["--optimizer", "adam", "--betas", "0.9", "1"], "--betas must each be in [0, 1), got 0.9 1.0"),
    (["--optimizer", "adam", "--betas", "-0.1", "0.9"], "--betas must each be in [0, 1)"),
    (["--optimizer", "adam", "--betas", "nan", "0.9"], "argument --betas: must be a finite"),
    (["--optimizer", "adam", "--betas", "0.9"], "argument --betas: expected 2 arguments"),
    (["--optimizer", "adam", "--eps", "0"], "--eps must be positive, got 0.0"),
    (["--optimizer", "adamw", "--eps=-1e-8"], "--eps must be positive, got -1e-08"),
    (["--optimizer", "adam", "--eps", "inf"], "argument --eps: must be a finite number, got inf"),
    (["--optimizer", "adamw", "--weight-decay", "-0.01"], "--weight-decay must not be negative"),
    (["--optimizer", "adam", "--lr", "0"], "--lr must be positive, got 0.0"),
    (["--optimizer", "rmsprop"], "argument --optimizer: invalid choice: 'rmsprop'"),
])
def test_bad_optimizer_flags_exit_2_with_one_line(capsys, tmp_path, flags, message):
    """A flag of another optimizer, or an impossible value: one line, exit 2, no work done."""
    assert_refused(capsys, tmp_path, flags, message)


def test_each_optimizer_gets_its_own_defaults():
    """sgd: lr 0.5 and no Adam options; adam, adamw: torch's lr 1e-3, betas, eps, and weight
    decay 0 and 1e-2; what is given wins."""
    sgd = flags.parse_args([])
    assert (sgd.lr, sgd.momentum, sgd.weight_decay, sgd.betas, sgd.eps) == (0.5, 0.0, 0.0,
                                                                            None, None)
    adamw = flags.parse_args(["--optimizer", "adamw"])
    assert (adamw.lr, adamw.betas, adamw.eps, adamw.weight_decay, adamw.momentum) == (
        1e-3, (0.9, 0.999), 1e-8, 1e-2, None)
    given = flags.parse_args(["--optimizer", "adamw", "--weight-decay", "0", "--lr", "0.01"])
    assert (given.weight_decay, given.lr) == (0.0, 0.01)
