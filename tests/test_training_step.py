"""A whole training step, by hand and by torch, side by side for 50 steps.

One step is: forward (logits = x W^T + b), the loss and its gradient, backward
(weight.grad, bias.grad), and an SGD update. lockstep.learner.Learner runs it for
both packages with the same code, so the only difference is the part that teaches:
manual (SoftmaxRegression, train.forward_backward, optim.SGD, all by hand) against
torch_impl (nn.Linear, F.cross_entropy with loss.backward(), torch.optim.SGD).

Both start from identical parameters (the same torch.manual_seed) and see the same
MNIST-like batches, in float64: the loss and the gradients of every step, and the
parameters at the end, must agree to 1e-10 relative, with momentum, Nesterov,
weight decay and label smoothing. Last, the largest relative gradient error against
autograd on MNIST-sized batches is recorded for float32 and float64 (see it with -s).
"""

import itertools

import pytest
import torch

import manual
import torch_impl
from lockstep.learner import Learner
from tests.helpers import (
    DTYPES,
    FLOAT64_MAX_REL_DIFF,
    WorstAgreement,
    manual_model,
    one_thread,
    random_batch,
)

TRAINING_MAX_REL_DIFF = 1e-10  # 50 steps of float64 rounding may add up; a bug shows as >1e-4
IN_FEATURES, NUM_CLASSES, BATCH_SIZE, STEPS = 784, 10, 32, 50

# (optimizer options, label smoothing)
CONFIGS = {
    "plain": ({"lr": 0.1}, 0.0),
    "momentum-dampening-smoothing": ({"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, 0.1),
    "nesterov-weight_decay": ({"lr": 0.1, "momentum": 0.9, "nesterov": True,
                               "weight_decay": 1e-2}, 0.0),
    "nesterov-weight_decay-smoothing": ({"lr": 0.5, "momentum": 0.9, "nesterov": True,
                                         "weight_decay": 1e-2}, 0.1),
}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Every test of this file on one thread (tiny tensors; see helpers.one_thread)."""
    with one_thread():
        yield


def train_side_by_side(options: dict, label_smoothing: float, steps: int = STEPS,
                       seed: int = 0) -> WorstAgreement:
    """Train manual and torch_impl Learners on the same batches; check every step; return checks."""
    learners = []
    for package in (manual, torch_impl):
        torch.manual_seed(seed)  # the same initial weight and bias for both
        learners.append(Learner(package, IN_FEATURES, NUM_CLASSES, options, label_smoothing,
                                dtype=torch.float64))
    by_hand, by_torch = learners
    for param, torch_param in zip(by_hand.parameters(), by_torch.parameters(), strict=True):
        assert torch.equal(param, torch_param.detach()), "not starting from the same parameters"

    checks = WorstAgreement(TRAINING_MAX_REL_DIFF)
    names = ("weight", "bias")
    for step in range(1, steps + 1):  # numbered from 1, as compare.py numbers them
        x, y = random_batch(BATCH_SIZE, IN_FEATURES, NUM_CLASSES, seed=step - 1)
        x_before, y_before = x.clone(), y.clone()
        checks.check("loss", step, by_hand.gradients(x, y), by_torch.gradients(x, y))
        assert torch.equal(x, x_before) and torch.equal(y, y_before), "the batch was modified"
        for name, param, torch_param in zip(names, by_hand.parameters(), by_torch.parameters(),
                                            strict=True):
            checks.check(f"{name}.grad", step, param.grad, torch_param.grad, len(x))
        by_hand.optimizer.step()
        by_torch.optimizer.step()
    for name, param, torch_param in zip(names, by_hand.parameters(), by_torch.parameters(),
                                        strict=True):
        checks.check(f"{name} after {steps} steps", steps, param, torch_param.detach())
    checks.report()
    return checks


@pytest.mark.parametrize(("options", "label_smoothing"), CONFIGS.values(), ids=CONFIGS.keys())
def test_training_steps_match_torch(options, label_smoothing):
    """50 steps: each loss and gradient, then the final weight and bias, agree to 1e-10."""
    train_side_by_side(options, label_smoothing)


def test_manual_training_works_unchanged_under_no_grad():
    """No autograd in manual: 5 steps inside torch.no_grad() give the same bits as outside."""
    options, label_smoothing = CONFIGS["nesterov-weight_decay-smoothing"]
    results = []
    for context in (torch.enable_grad, torch.no_grad):
        torch.manual_seed(0)
        learner = Learner(manual, IN_FEATURES, NUM_CLASSES, options, label_smoothing,
                          dtype=torch.float64)
        with context():
            losses = []
            for step in range(5):
                losses.append(learner.gradients(*random_batch(BATCH_SIZE, IN_FEATURES,
                                                              NUM_CLASSES, seed=step)))
                learner.optimizer.step()
        results.append([torch.stack(losses), *learner.parameters()])
    for with_grad, no_grad in zip(*results, strict=True):
        assert not with_grad.requires_grad and torch.equal(with_grad, no_grad)


@pytest.mark.twin
def test_a_gradient_that_forgets_label_smoothing_fails_the_training_comparison(monkeypatch):
    """Proof the comparison can fail: a backward that ignores label smoothing is caught."""
    cross_entropy_grad = manual.functional.cross_entropy_grad

    def forgets_smoothing(logits, targets, reduction="mean", label_smoothing=0.0):
        return cross_entropy_grad(logits, targets, reduction)  # the forward still smooths

    monkeypatch.setattr(manual.functional, "cross_entropy_grad", forgets_smoothing)
    with pytest.raises(AssertionError, match=r"weight\.grad at step 1"):
        train_side_by_side({"lr": 0.1}, label_smoothing=0.1, steps=3)


# The largest gradient error on realistic batches ----------------------------------------

# float64: only rounding differs. float32: a few ulps (eps = 1.2e-7) of the largest entry.
REALISTIC_MAX_REL_DIFF = {torch.float32: 1e-5, torch.float64: FLOAT64_MAX_REL_DIFF}
# (batch size, reduction, label smoothing)
REALISTIC_CASES = list(itertools.product([64, 1], ["mean", "sum"], [0.0, 0.1]))


def realistic_gradient_errors(dtype: torch.dtype, steps: int = 20) -> WorstAgreement:
    """Manual dLoss/dlogits, dW, db, dx against autograd's from the same parameters.

    nn.Linear is trained by torch.optim.SGD on MNIST-sized batches (64 x 784, 10
    classes) so the logits leave their small initial range; at every step the manual
    gradients are computed from torch's current parameters for batches of 64 and of 1,
    both reductions, and label smoothing 0 and 0.1.
    """
    torch.manual_seed(0)
    model = torch_impl.model.SoftmaxRegression(IN_FEATURES, NUM_CLASSES, dtype=dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    checks = WorstAgreement(REALISTIC_MAX_REL_DIFF[dtype])
    for step in range(1, steps + 1):
        x, y = random_batch(64, IN_FEATURES, NUM_CLASSES, dtype, seed=step - 1)
        for batch_size, reduction, label_smoothing in REALISTIC_CASES:
            xb, yb = x[:batch_size], y[:batch_size]
            # autograd
            x_autograd = xb.clone().requires_grad_()
            logits = model(x_autograd)
            logits.retain_grad()
            model.zero_grad()
            torch_impl.functional.cross_entropy(logits, yb, reduction, label_smoothing).backward()
            # by hand, from the same parameters
            by_hand = manual_model(model.linear.weight.detach().clone(),
                                   model.linear.bias.detach().clone())
            manual_logits = by_hand.forward(xb)
            grad_logits = manual.functional.cross_entropy_grad(manual_logits, yb, reduction,
                                                               label_smoothing)
            grad_x = by_hand.backward(grad_logits)
            for name, actual, expected in [("dLoss/dlogits", grad_logits, logits.grad),
                                           ("weight.grad", by_hand.weight.grad,
                                            model.linear.weight.grad),
                                           ("bias.grad", by_hand.bias.grad, model.linear.bias.grad),
                                           ("dLoss/dx", grad_x, x_autograd.grad)]:
                checks.check(f"{str(dtype).removeprefix('torch.')} {name}", step, actual,
                             expected, len(xb), yb if name == "dLoss/dlogits" else None)
        # one torch training step on the full batch moves the parameters on
        optimizer.zero_grad()
        torch_impl.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    return checks


def test_largest_relative_gradient_error_against_autograd():
    """Records (prints) the worst relative gradient error vs autograd, float32 and float64."""
    largest = {}
    for dtype in DTYPES:
        checks = realistic_gradient_errors(dtype)
        checks.report()
        largest[dtype] = checks.largest()
    print(f"largest relative gradient error vs autograd: float32 {largest[torch.float32]:.2e}, "
          f"float64 {largest[torch.float64]:.2e}")
    assert largest[torch.float32] <= REALISTIC_MAX_REL_DIFF[torch.float32]
    assert largest[torch.float64] <= REALISTIC_MAX_REL_DIFF[torch.float64]
