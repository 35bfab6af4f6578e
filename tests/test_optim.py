"""manual/optim.py: SGD, Adam and AdamW move parameters exactly as torch.optim's do.

Both optimizers get the same gradients (random, from a seeded generator), in float64,
and after every step their parameters and every state tensor (momentum_buffer;
exp_avg, exp_avg_sq, max_exp_avg_sq) must agree to 1e-12, and the step counts exactly:
SGD for 25 steps with each combination of momentum, dampening, weight decay, Nesterov
and maximize that torch accepts; Adam and AdamW for 60 steps with each combination of
amsgrad, maximize and weight decay, and with random lr, betas and eps (hypothesis).
What torch refuses, they must refuse with torch's own message. Three broken Adams (no
bias correction, eps inside the square root, AdamW decaying through the gradient) must
fail the same comparison.

Run with `pytest -s` to see the worst step of each comparison.
"""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manual.optim
from manual.optim import SGD, Adam
from tests.helpers import (
    FLOAT64_MAX_REL_DIFF,
    AdamWDecayingThroughTheGradient,
    AdamWithEpsInsideTheRoot,
    AdamWithoutBiasCorrection,
    WorstAgreement,
    one_thread,
)

STEPS = 25
OPTION_GRID = [
    {"lr": 0.1, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
     "nesterov": nesterov, "maximize": maximize}
    for momentum, dampening, weight_decay, nesterov, maximize in itertools.product(
        [0.0, 0.9], [0.0, 0.5], [0.0, 1e-2], [False, True], [False, True])
]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Every test of this file on one thread (tiny tensors; see helpers.one_thread)."""
    with one_thread():
        yield


def torch_error(options: dict) -> str | None:
    """torch.optim.SGD's ValueError message for these options, or None if torch accepts them."""
    try:
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], **options)
    except ValueError as error:
        return str(error)
    return None


def options_id(options: dict) -> str:
    return "-".join(f"{key}={value}" for key, value in options.items() if key != "lr")


# torch decides which combinations are valid (Nesterov needs momentum and no dampening).
VALID = [options for options in OPTION_GRID if torch_error(options) is None]
REJECTED = [options for options in OPTION_GRID if torch_error(options) is not None]
INVALID_ARGUMENTS = [
    {"lr": -0.1},
    {"lr": 0.1, "momentum": -0.9},
    {"lr": 0.1, "weight_decay": -1e-2},
    {"lr": 0.1, "nesterov": True},  # without momentum
    {"lr": 0.1, "momentum": 0.9, "dampening": 0.5, "nesterov": True},
    *REJECTED,
]


def twin_parameters(seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """A weight (3, 5) and a bias (3,) in float64, and leaf copies of them for torch."""
    generator = torch.Generator().manual_seed(seed)
    params = [torch.randn(3, 5, generator=generator, dtype=torch.float64),
              torch.randn(3, generator=generator, dtype=torch.float64)]
    return params, [p.clone().requires_grad_() for p in params]


def step_side_by_side(options: dict, steps: int = STEPS, optimizer_class: type = SGD,
                      grad_scales: tuple[float, float] = (1.0, 1.0)) -> WorstAgreement:
    """Feed both optimizers the same random gradients (the weight's ~ N(0, grad_scales[0]^2),
    the bias's ~ N(0, grad_scales[1]^2)); assert that the parameters and the state agree after
    every step. optimizer_class: manual.optim's SGD, Adam or AdamW (or a broken twin); torch's
    twin is the torch.optim class of its base name."""
    params, torch_params = twin_parameters()
    torch_class = getattr(torch.optim, torch_name(optimizer_class))
    optimizer, torch_optimizer = optimizer_class(params, **options), torch_class(torch_params,
                                                                                 **options)
    grads = torch.Generator().manual_seed(1)
    checks = WorstAgreement(FLOAT64_MAX_REL_DIFF)
    for step in range(1, steps + 1):
        for param, torch_param, scale in zip(params, torch_params, grad_scales, strict=True):
            param.grad = scale * torch.randn(param.shape, generator=grads, dtype=param.dtype)
            torch_param.grad = param.grad.clone()
        optimizer.step()
        torch_optimizer.step()
        for name, param, torch_param in zip(("weight", "bias"), params, torch_params, strict=True):
            checks.check(name, step, param, torch_param.detach())
            check_state(checks, f"{name}.", step, optimizer.state.get(param, {}),
                        torch_optimizer.state.get(torch_param, {}))
    checks.report()
    return checks


def torch_name(optimizer_class: type) -> str:
    """"Adam" for manual.optim.Adam and for a broken twin derived from it."""
    return next(cls.__name__ for cls in optimizer_class.__mro__ if cls.__module__ == "manual.optim")


def check_state(checks: WorstAgreement, prefix: str, step: int, state: dict,
                torch_state: dict) -> None:
    """The same keys in the same order, the same step count, every tensor within 1e-12."""
    assert list(state) == list(torch_state), f"{prefix} state keys at step {step}"
    for key, value in state.items():
        if key == "step":  # torch keeps it as a tensor, for CUDA graphs; here it is an int
            assert value == torch_state[key].item() == step, f"{prefix}step at step {step}"
        else:
            checks.check(prefix + key, step, value, torch_state[key])


@pytest.mark.parametrize("options", VALID, ids=options_id)
def test_sgd_matches_torch_for_every_valid_combination_of_options(options):
    """25 steps on the same gradients: parameters equal torch.optim.SGD's to 1e-12 at each step."""
    step_side_by_side(options)


@pytest.mark.parametrize("options", INVALID_ARGUMENTS, ids=options_id)
def test_sgd_refuses_what_torch_refuses_with_the_same_message(options):
    """Negative lr / momentum / weight_decay, or Nesterov without momentum or with dampening."""
    message = torch_error(options)
    assert message is not None, f"torch accepts {options}"
    with pytest.raises(ValueError) as error:
        SGD([torch.zeros(1)], **options)
    assert str(error.value) == message


def test_zero_grad_sets_gradients_to_none():
    """zero_grad() forgets the gradients (None, not zeros), as torch's default set_to_none=True."""
    params, torch_params = twin_parameters()
    optimizer, torch_optimizer = SGD(params, lr=0.1), torch.optim.SGD(torch_params, lr=0.1)
    for param, torch_param in zip(params, torch_params, strict=True):
        param.grad, torch_param.grad = torch.ones_like(param), torch.ones_like(param)
    optimizer.zero_grad()
    torch_optimizer.zero_grad()
    assert all(param.grad is None for param in params + torch_params)


def test_a_parameter_without_gradient_is_left_alone_as_torch_does():
    """A None gradient skips the parameter, and its momentum buffer starts at its first gradient."""
    params, torch_params = twin_parameters()
    options = {"lr": 0.1, "momentum": 0.9, "dampening": 0.5, "weight_decay": 1e-2}
    optimizer, torch_optimizer = SGD(params, **options), torch.optim.SGD(torch_params, **options)
    bias_before = params[1].clone()
    grads = torch.Generator().manual_seed(1)
    for step, with_bias_grad in enumerate([False, True, True], start=1):
        for param, torch_param in zip(params, torch_params, strict=True):
            param.grad = torch.randn(param.shape, generator=grads, dtype=param.dtype)
            torch_param.grad = param.grad.clone()
        if not with_bias_grad:
            params[1].grad = torch_params[1].grad = None
        optimizer.step()
        torch_optimizer.step()
        if step == 1:
            assert torch.equal(params[1], bias_before)
        for param, torch_param in zip(params, torch_params, strict=True):
            torch.testing.assert_close(param, torch_param.detach(), rtol=FLOAT64_MAX_REL_DIFF,
                                       atol=FLOAT64_MAX_REL_DIFF)


@pytest.mark.parametrize(("optimizer_class", "options"), [
    (SGD, {"lr": 0.1}), (SGD, VALID[-1]),
    (SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),  # no maximize: .grad itself
    (Adam, {"lr": 0.1, "weight_decay": 0.01})],
    ids=["sgd", f"sgd-{options_id(VALID[-1])}", "sgd-momentum-weight_decay", "adam-weight_decay"])
def test_step_leaves_gradients_alone_and_needs_no_autograd(optimizer_class, options):
    """step() changes only the parameters, never .grad (as its docstring says): the same bits
    under torch.no_grad(), no grad required."""
    results = []
    for context in (torch.enable_grad, torch.no_grad):
        params, _ = twin_parameters()
        optimizer = optimizer_class(params, **options)
        for _ in range(3):
            for param in params:
                param.grad = torch.ones_like(param)
            with context():
                optimizer.step()
            assert all(torch.equal(param.grad, torch.ones_like(param)) for param in params)
        results.append(params)
    for with_grad, no_grad in zip(*results, strict=True):
        assert not with_grad.requires_grad and torch.equal(with_grad, no_grad)


@pytest.mark.twin
def test_an_sgd_that_decays_the_gradient_in_place_fails_the_check_above(monkeypatch):
    """grad.add_(param, alpha=weight_decay) changes .grad: the check above catches it."""
    def step(self):
        for param, grad in self.gradients():
            param.add_(grad.add_(param, alpha=self.weight_decay), alpha=-self.lr)
    monkeypatch.setattr(SGD, "step", step)
    with pytest.raises(AssertionError):
        test_step_leaves_gradients_alone_and_needs_no_autograd(
            SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01})


@pytest.mark.twin
def test_an_sgd_that_ignores_dampening_fails_the_comparison(monkeypatch):
    """Proof the comparison can fail: an SGD that drops its dampening option is caught."""
    init = SGD.__init__

    def init_without_dampening(self, params, **options):
        init(self, params, **{**options, "dampening": 0.0})

    monkeypatch.setattr(SGD, "__init__", init_without_dampening)
    with pytest.raises(AssertionError, match="relative difference above"):
        step_side_by_side({"lr": 0.1, "momentum": 0.9, "dampening": 0.5})


# Adam and AdamW: 60 steps. The bias's gradients are small (~1e-4, as a trained network's
# often are), so that eps = 1e-8 is not negligible beside sqrt(v_hat).
ADAM_STEPS = 60
ADAM_SCALES = (1.0, 1e-4)
ADAM_GRID = [
    {"lr": 0.01, "weight_decay": weight_decay, "amsgrad": amsgrad, "maximize": maximize}
    for weight_decay, amsgrad, maximize in itertools.product([0.0, 0.1], [False, True],
                                                             [False, True])
]
ADAM_CLASSES = [manual.optim.Adam, manual.optim.AdamW]


@pytest.mark.parametrize("optimizer_class", ADAM_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("options", ADAM_GRID, ids=options_id)
def test_adam_matches_torch_for_every_combination_of_options(optimizer_class, options):
    """60 steps: parameters, exp_avg, exp_avg_sq (and max_exp_avg_sq) equal torch's to 1e-12."""
    checks = step_side_by_side(options, ADAM_STEPS, optimizer_class, ADAM_SCALES)
    names = {"weight.exp_avg", "weight.exp_avg_sq", "bias.exp_avg", "bias.exp_avg_sq"}
    names |= {"weight.max_exp_avg_sq", "bias.max_exp_avg_sq"} if options["amsgrad"] else set()
    assert set(checks.steps) == {"weight", "bias"} | names
    assert all(count == ADAM_STEPS for count in checks.steps.values())


@pytest.mark.parametrize("optimizer_class", ADAM_CLASSES, ids=lambda cls: cls.__name__)
@settings(max_examples=40, deadline=None)
@given(lr=st.floats(1e-5, 1.0), beta1=st.floats(0.0, 0.999), beta2=st.floats(0.0, 0.9999),
       eps=st.floats(1e-12, 1e-2), amsgrad=st.booleans())
def test_adam_matches_torch_for_any_lr_betas_and_eps(optimizer_class, lr, beta1, beta2, eps,
                                                     amsgrad):
    """Hypothesis draws lr, both betas and eps: 20 steps still agree to 1e-12."""
    options = {"lr": lr, "betas": (beta1, beta2), "eps": eps, "amsgrad": amsgrad}
    step_side_by_side(options, 20, optimizer_class, ADAM_SCALES)


ADAM_INVALID_ARGUMENTS = [
    {"lr": -1e-3},
    {"eps": -1e-8},
    {"betas": (-0.1, 0.999)},
    {"betas": (1.0, 0.999)},
    {"betas": (0.9, 1.0)},
    {"betas": (0.9, -0.5)},
    {"weight_decay": -1e-2},
    {"lr": -1.0, "eps": -1.0},  # the first problem in torch's order is named
    {"eps": -1.0, "betas": (2.0, 0.9)},
]


@pytest.mark.parametrize("optimizer_class", ADAM_CLASSES, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("options", ADAM_INVALID_ARGUMENTS, ids=options_id)
def test_adam_refuses_what_torch_refuses_with_the_same_message(optimizer_class, options):
    """Negative lr, eps or weight decay, a beta outside [0, 1): torch's ValueError, verbatim."""
    torch_class = getattr(torch.optim, optimizer_class.__name__)
    with pytest.raises(ValueError) as expected:
        torch_class([torch.zeros(1, requires_grad=True)], **options)
    with pytest.raises(ValueError) as error:
        optimizer_class([torch.zeros(1)], **options)
    assert str(error.value) == str(expected.value)


def test_adamw_defaults_are_torchs():
    """lr 1e-3, betas (0.9, 0.999), eps 1e-8; weight decay 0 for Adam and 1e-2 for AdamW."""
    for optimizer_class in ADAM_CLASSES:
        optimizer = optimizer_class([torch.zeros(1)])
        defaults = getattr(torch.optim, optimizer_class.__name__)(
            [torch.zeros(1, requires_grad=True)]).defaults
        assert (optimizer.lr, optimizer.betas, optimizer.eps, optimizer.weight_decay,
                optimizer.amsgrad, optimizer.maximize) == tuple(
            defaults[key] for key in ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"))


def test_adam_leaves_a_parameter_without_gradient_and_its_state_alone():
    """A None gradient: no step for that parameter, no state yet; its count starts later."""
    params, torch_params = twin_parameters()
    optimizer, torch_optimizer = manual.optim.Adam(params), torch.optim.Adam(torch_params)
    for param, torch_param in zip(params, torch_params, strict=True):
        param.grad = torch.ones_like(param)
        torch_param.grad = param.grad.clone()
    params[1].grad = torch_params[1].grad = None
    optimizer.step()
    torch_optimizer.step()
    assert params[1] not in optimizer.state and torch_params[1] not in torch_optimizer.state
    assert optimizer.state[params[0]]["step"] == 1


BROKEN_ADAMS = {
    "no bias correction": (AdamWithoutBiasCorrection, {}),
    "eps inside the square root": (AdamWithEpsInsideTheRoot, {}),
    "AdamW decaying through the gradient": (AdamWDecayingThroughTheGradient,
                                            {"weight_decay": 0.1}),
}


@pytest.mark.twin
@pytest.mark.parametrize("broken", BROKEN_ADAMS, ids=str)
def test_a_broken_adam_fails_the_comparison(broken):
    """Proof the comparison can fail: each classic Adam mistake is caught within 60 steps."""
    optimizer_class, options = BROKEN_ADAMS[broken]
    with pytest.raises(AssertionError, match="relative difference above"):
        step_side_by_side({"lr": 0.01, **options}, ADAM_STEPS, optimizer_class, ADAM_SCALES)
