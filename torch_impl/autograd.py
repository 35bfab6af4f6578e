"""The engine loss.backward() runs: torch.autograd itself.

Twin of manual/autograd.py, which writes it out. Forward through torch's operations records
a graph: every tensor made by an operation on a tensor that requires grad has a grad_fn,
its node ("AddmmBackward0"), with next_functions (the edges to its inputs' nodes, or to an
AccumulateGrad for a leaf), the tensors it saved (grad_fn._saved_mat1, ...) and a sequence
number (grad_fn._sequence_nr()). loss.backward() runs the ready node with the largest
sequence number first, adds the gradients at fan-out, adds into each leaf's .grad, and frees
the saved tensors unless retain_graph=True. After AccumulateGrad has stored a leaf's
gradient, the leaf's post-accumulate hooks run (DistributedDataParallel's go in there).
"""

import torch
from torch.autograd import backward

no_grad = torch.no_grad
is_grad_enabled = torch.is_grad_enabled


def Variable(data: torch.Tensor, requires_grad: bool = False) -> torch.Tensor:
    """torch 0.4 merged Variable into Tensor: a tensor is its own Variable. data, as a new
    leaf that requires grad if asked."""
    return data.detach().requires_grad_(requires_grad)


def register_post_accumulate_grad_hook(tensor: torch.Tensor, hook) -> None:
    """hook(tensor) after every backward stores tensor's gradient in tensor.grad."""
    tensor.register_post_accumulate_grad_hook(hook)



__all__ = ["Variable", "backward", "is_grad_enabled", "no_grad",
           "register_post_accumulate_grad_hook"]
