"""manual/optim.py: SGD moves parameters exactly as torch.optim.SGD does, for every option.

Both optimizers get the same gradients (random, from a seeded generator) for 25
steps, in float64, and their parameters must agree to 1e-12 after every step: for
each combination of momentum, dampening, weight decay, Nesterov and maximize that
torch accepts. What torch refuses, SGD must refuse with torch's own message.

Run with `pytest -s` to see the worst step of each comparison.
"""

import itertools

import pytest
import torch

from manual.optim import SGD
from tests.helpers import FLOAT64_MAX_REL_DIFF, WorstAgreement, one_thread

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


def step_side_by_side(options: dict, steps: int = STEPS) -> None:
    """Feed both optimizers the same random gradients; assert the parameters agree every step."""
    params, torch_params = twin_parameters()
    optimizer, torch_optimizer = SGD(params, **options), torch.optim.SGD(torch_params, **options)
    grads = torch.Generator().manual_seed(1)
    checks = WorstAgreement(FLOAT64_MAX_REL_DIFF)
    for step in range(1, steps + 1):
        for param, torch_param in zip(params, torch_params, strict=True):
            param.grad = torch.randn(param.shape, generator=grads, dtype=param.dtype)
            torch_param.grad = param.grad.clone()
        optimizer.step()
        torch_optimizer.step()
        for name, param, torch_param in zip(("weight", "bias"), params, torch_params, strict=True):
            checks.check(name, step, param, torch_param.detach())
    checks.report()


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


@pytest.mark.parametrize("options", [{"lr": 0.1}, VALID[-1]], ids=options_id)
def test_step_leaves_gradients_alone_and_needs_no_autograd(options):
    """step() changes only the parameters: same bits under torch.no_grad(), no grad required."""
    results = []
    for context in (torch.enable_grad, torch.no_grad):
        params, _ = twin_parameters()
        optimizer = SGD(params, **options)
        for _ in range(3):
            for param in params:
                param.grad = torch.ones_like(param)
            with context():
                optimizer.step()
            assert all(torch.equal(param.grad, torch.ones_like(param)) for param in params)
        results.append(params)
    for with_grad, no_grad in zip(*results, strict=True):
        assert not with_grad.requires_grad and torch.equal(with_grad, no_grad)


def test_an_sgd_that_ignores_dampening_fails_the_comparison(monkeypatch):
    """Proof the comparison can fail: an SGD that drops its dampening option is caught."""
    init = SGD.__init__

    def init_without_dampening(self, params, **options):
        init(self, params, **{**options, "dampening": 0.0})

    monkeypatch.setattr(SGD, "__init__", init_without_dampening)
    with pytest.raises(AssertionError, match="relative difference above"):
        step_side_by_side({"lr": 0.1, "momentum": 0.9, "dampening": 0.5})
