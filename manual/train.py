"""The gradients of one training step, by hand. Twin of torch_impl/train.py."""

import torch

from manual import autograd, functions
from manual import functional as F
from manual.autograd import Variable
from manual.model import MLP, SoftmaxRegression


def forward_backward(model: SoftmaxRegression | MLP, x: torch.Tensor, y: torch.Tensor,
                     label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill every parameter's .grad with dLoss/dparameter; return the loss and the logits.

    x: (N, D), y: (N,) -> (scalar mean cross-entropy of the batch, logits (N, C)), with
    dLoss/dlogits (N, C) kept in logits.grad, where torch's retain_grad() keeps it.
    """
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    logits.grad = F.cross_entropy_grad(logits, y, label_smoothing=label_smoothing)
    model.backward(logits.grad, needs_input_grad=False)  # x is data: no use for dLoss/dx
    return loss, logits


def forward_backward_engine(model: SoftmaxRegression | MLP, x: torch.Tensor, y: torch.Tensor,
                            label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """forward_backward through the engine: forward records torch's graph
    (manual/functions.py) and autograd.backward walks it (manual/autograd.py).

    The same results, in the same places: every parameter's .grad, dLoss/dlogits in
    logits.grad, and each hidden output's gradient in its .grad (kept as retain_grad keeps it).
    """
    logits, hidden = functions.forward(model, Variable(x))
    for output in [*hidden, logits]:
        output.retain_grad()
    loss = functions.cross_entropy(logits, y, label_smoothing)
    autograd.backward(loss)
    model = getattr(model, "module", model)  # the model a DistributedDataParallel wraps
    if hasattr(model, "hidden_outputs"):
        model.hidden_outputs = [kept(output) for output in hidden]
    return loss.data, kept(logits)


def kept(output: Variable) -> torch.Tensor:
    """output's tensor, with its retained gradient in .grad, as the chain leaves it."""
    output.data.grad = output.grad
    return output.data
