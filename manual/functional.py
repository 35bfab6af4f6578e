"""Softmax, log-softmax and cross-entropy by hand, with the gradient autograd would compute.

Twin of torch.nn.functional. Shapes: logits (N, C) raw class scores,
targets (N,) class indices in 0..C-1. Plain tensor operations only: nothing
here requires grad, it all runs unchanged inside torch.no_grad(), and no function
modifies its arguments (results are new tensors).
"""

import torch

REDUCTIONS = ("mean", "sum", "none")


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """softmax(z)_c = exp(z_c - m) / sum_k exp(z_k - m),  m = max_k z_k.

    logits: (..., C) -> probabilities (..., C), each row summing to 1.
    Subtracting the row maximum changes nothing mathematically (it cancels
    in the ratio) but keeps exp() <= 1, so large logits cannot overflow.
    """
    exp = (logits - logits.amax(dim=-1, keepdim=True)).exp()
    return exp / exp.sum(dim=-1, keepdim=True)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log softmax(z)_c = (z_c - m) - log sum_k exp(z_k - m),  m = max_k z_k.

    logits: (..., C) -> log-probabilities (..., C). The log-sum-exp form never
    takes the log of an underflowed 0, so it stays finite for any finite logits.
    """
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    return shifted - shifted.exp().sum(dim=-1, keepdim=True).log()


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """loss_n = -sum_c q_nc log softmax(z_n)_c, then the mean (or sum) over n.

    logits: (N, C), targets: (N,) -> scalar, or (N,) for reduction="none".
    q is the target distribution: one-hot, or smoothed with eps = label_smoothing as
    q = (1 - eps) onehot(y) + eps / C, so the sum over c keeps two terms (p_n = softmax(z_n)):
        loss_n = -(1 - eps) log p_(n, y_n) - eps mean_c log p_nc
    With eps = 0 this is just -log p_(n, y_n): minus the log-probability of the right class.
    """
    check_arguments(reduction, label_smoothing)
    log_p = log_softmax(logits)
    losses = -log_p.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # -log p_(n, y_n): (N,)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * log_p.mean(dim=-1)
    if reduction == "mean":
        return losses.mean()
    return losses.sum() if reduction == "sum" else losses


def cross_entropy_grad(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean",
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """dLoss/dlogits = (softmax(z) - q) / N for reduction="mean" (no / N for "sum").

    logits: (N, C), targets: (N,) -> gradient (N, C), the same shape as logits.
    Derivation, for one example with p = softmax(z) and sum_c q_c = 1:
        loss         = -sum_c q_c log p_c = -sum_c q_c z_c + log sum_k exp(z_k)
        dloss / dz_j = -q_j + exp(z_j) / sum_k exp(z_k) = p_j - q_j
    The mean over N examples divides each row by N. Each row sums to
    sum_j p_j - sum_j q_j = 1 - 1 = 0. reduction="none" raises ValueError: a vector of
    losses has no single gradient.
    """
    check_arguments(reduction, label_smoothing)
    if reduction == "none":
        raise ValueError("the gradient needs a scalar loss: use reduction='mean' or 'sum'")
    grad = softmax(logits) - target_distribution(logits, targets, label_smoothing)
    return grad / len(logits) if reduction == "mean" else grad


def target_distribution(logits: torch.Tensor, targets: torch.Tensor,
                        label_smoothing: float) -> torch.Tensor:
    """q: (N, C), q_nc = (1 - eps) [c == y_n] + eps / C, in the dtype of logits."""
    eps, num_classes = label_smoothing, logits.shape[-1]
    q = torch.full_like(logits, eps / num_classes)
    return q.scatter_(-1, targets.unsqueeze(-1), 1 - eps + eps / num_classes)


def check_arguments(reduction: str, label_smoothing: float) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
