"""What the lock step cannot see on MNIST: a softmax that overflows on large logits.

MNIST's logits stay small, a few tens at most, and exp(z) overflows float32 only past
z = 88.7. So a softmax written without subtracting each row's max, exp(z) / sum exp(z), or a
log-softmax taken as log(softmax(z)), trains exactly as torch's does, and compare.py says
MATCH. Logits of hundreds give inf / inf = NaN, or log(0) = -inf. The grader's check with
logits of +-1e4 (CHECK) finds it; compare.py probes the manual package with the same logits
once, after its verdict, and says which check catches it.
"""

import math
from pathlib import Path

import torch

from practice.exercises import manual_flag

LARGE = 1e4  # the size of the grader's extreme logits
CHECK = "tests/test_functional.py::test_extreme_logits_give_finite_results_equal_to_torch"


@torch.no_grad()
def unseen(functional, like: torch.Tensor, folder: Path | None = None) -> str | None:
    """The line naming the functions of `functional` (softmax, log_softmax) that are not
    finite on logits (LARGE, 0, -LARGE) of like's dtype and device, and the grader's check
    that catches them in folder, the exercise folder (None: manual/, graded by make test);
    None if both are finite (or if one fails to run at all: training would have said so)."""
    logits = torch.tensor([[LARGE, 0.0, -LARGE]], dtype=like.dtype, device=like.device)
    broken = []
    for name in ("softmax", "log_softmax"):
        try:
            result = getattr(functional, name)(logits)
        except Exception:
            return None
        if not torch.isfinite(result).all():
            broken.append(name)
    if not broken:
        return None
    largest = math.log(torch.finfo(like.dtype).max)  # exp(z) is inf past it: 88.7 in float32
    grader = ("make test" if folder is None else
              f"python -m pytest {manual_flag(folder)}, from the project's folder")
    return (f"UNSEEN: your {' and '.join(broken)} {'give' if len(broken) > 1 else 'gives'} NaN "
            f"or inf for logits of +-{LARGE:g} (exp(z) is inf past z = {largest:.1f} in "
            f"{str(like.dtype).removeprefix('torch.')}): MNIST's logits stay small, so the lock "
            f"step cannot see it. The grader's {CHECK.split('::')[1]} catches it ({grader}). "
            "Subtract each row's max first.")
