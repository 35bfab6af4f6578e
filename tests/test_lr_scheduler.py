"""manual/lr_scheduler.py: CosineAnnealingLR sets the learning rates torch's does, step by step.

torch.optim.lr_scheduler.CosineAnnealingLR reaches each lr recursively, from the last
one; the manual twin uses the closed form. Both are run side by side, each on its own
SGD with momentum, fed the same gradients, in float64: the learning rate before every
step and the parameters after it must agree to 1e-12. Last, proof that an
off-by-one schedule is caught.
"""

import pytest
import torch

from manual.lr_scheduler import CosineAnnealingLR
from manual.optim import SGD
from tests.helpers import FLOAT64_MAX_REL_DIFF, WorstAgreement

OPTIONS = {"lr": 0.5, "momentum": 0.9, "weight_decay": 1e-2}


def anneal_side_by_side(T_max: int, eta_min: float) -> tuple[list[float], list[float]]:
    """T_max steps of both optimizers and schedules; checks the parameters after each step.

    Returns the learning rate each optimizer used at every step, manual and torch.
    """
    generator = torch.Generator().manual_seed(0)
    params = [torch.randn(3, 5, generator=generator, dtype=torch.float64)]
    torch_params = [params[0].clone().requires_grad_()]
    optimizer, torch_optimizer = SGD(params, **OPTIONS), torch.optim.SGD(torch_params, **OPTIONS)
    schedule = CosineAnnealingLR(optimizer, T_max, eta_min)
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(torch_optimizer, T_max, eta_min)
    checks = WorstAgreement(FLOAT64_MAX_REL_DIFF)
    lrs, torch_lrs = [], []
    for step in range(1, T_max + 1):
        lrs.append(schedule.get_last_lr()[0])
        torch_lrs.append(torch_schedule.get_last_lr()[0])
        params[0].grad = torch.randn(3, 5, generator=generator, dtype=torch.float64)
        torch_params[0].grad = params[0].grad.clone()
        optimizer.step()
        torch_optimizer.step()
        schedule.step()
        torch_schedule.step()
        checks.check("weight", step, params[0], torch_params[0].detach())
    checks.report()
    lrs.append(schedule.get_last_lr()[0])
    torch_lrs.append(torch_schedule.get_last_lr()[0])
    return lrs, torch_lrs


@pytest.mark.parametrize("eta_min", [0.0, 0.01])
@pytest.mark.parametrize("T_max", [1, 7, 100])
def test_cosine_annealing_matches_torch(T_max: int, eta_min: float):
    """Every learning rate, from lr to eta_min, and every parameter update agree with torch's."""
    lrs, torch_lrs = anneal_side_by_side(T_max, eta_min)
    assert lrs[0] == OPTIONS["lr"] and len(lrs) == T_max + 1
    assert lrs[-1] == pytest.approx(eta_min, abs=1e-15)  # half a cosine wave: down to eta_min
    torch.testing.assert_close(lrs, torch_lrs, rtol=FLOAT64_MAX_REL_DIFF,
                               atol=FLOAT64_MAX_REL_DIFF)


def test_an_off_by_one_schedule_fails_the_comparison(monkeypatch: pytest.MonkeyPatch):
    """Proof the comparison can fail: a schedule one step ahead of torch's is caught."""
    init = CosineAnnealingLR.__init__

    def init_one_step_ahead(self, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        self.last_epoch = 1  # as if step() had run once already

    monkeypatch.setattr(CosineAnnealingLR, "__init__", init_one_step_ahead)
    with pytest.raises(AssertionError, match="relative difference above"):
        anneal_side_by_side(T_max=7, eta_min=0.0)
