"""How close is close enough: the limit every compared tensor is held to, the verdict's other
thresholds, and what counts as float32 rounding (for the tutor and the float64 line)."""

import torch

MAX_GRAD_REL_DIFF = {"float32": 1e-4, "float64": 1e-10}
# A ReLU input this close to 0, relative to the layer's largest output, is a tie for rounding.
ROUNDING_DISTANCE = {"float32": 1e-5, "float64": 1e-13}
# float32 rounding: manual may be this many times further from float64 than torch is
ROUNDING_SLACK = 10
FLOAT32_EPS = torch.finfo(torch.float32).eps  # 1.2e-07: the gap between 1 and the next float
# --independent: parameters further apart than this (relative) have drifted, past rounding
DRIFTED = ROUNDING_SLACK * FLOAT32_EPS  # 1.2e-06
MAX_ACCURACY_GAP = 0.001  # 0.1 percentage point
MIN_PREDICTION_AGREEMENT = 0.999
# verdict checks held to the gradients' limit, and the report.json key of their agreement
WITHIN_THE_LIMIT_TOO = {"loss": "loss_agreement", "parameters": "parameter_agreement",
                        "running stats": "buffer_agreement", "optimizer state": "state_agreement"}


def rounding_only(manual_off: float, torch_off: float) -> bool:
    """Whether manual's distance from a float64 computation of a float32 step (relative to
    the largest entry) is float32 rounding: at most ROUNDING_SLACK times torch's own."""
    return manual_off <= ROUNDING_SLACK * max(torch_off, FLOAT32_EPS)


def limit(dtype: torch.dtype) -> float:
    """MAX_GRAD_REL_DIFF for a torch dtype: the limit of every compared tensor."""
    return MAX_GRAD_REL_DIFF[str(dtype).removeprefix("torch.")]
