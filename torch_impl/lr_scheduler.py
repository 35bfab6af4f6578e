"""A learning-rate schedule: torch.optim.lr_scheduler's cosine annealing itself.

Twin of manual/lr_scheduler.py, which spells out the formula:
    lr_t = eta_min + (base_lr - eta_min) (1 + cos(pi t / T_max)) / 2,  t = step() calls so far
"""

from torch.optim.lr_scheduler import CosineAnnealingLR

__all__ = ["CosineAnnealingLR"]
