"""The operations the models run, as torch's autograd records them: the nodes of its graph.

Twin of manual/functions.py, which records the same nodes by hand. Here the model's own
forward and F.cross_entropy record them: nn.Linear calls addmm(b, x, t(W)) (AddmmBackward0
and TBackward0), nn.ReLU relu (ReluBackward0), nn.BatchNorm1d native_batch_norm
(NativeBatchNormBackward0), nn.Conv2d convolution (ConvolutionBackward0), nn.MaxPool2d
max_pool2d_with_indices (MaxPool2DWithIndicesBackward0), nn.Flatten view (ViewBackward0),
and F.cross_entropy log_softmax and nll_loss (LogSoftmaxBackward0, NllLossBackward0; with
label smoothing also sum, neg, masked_fill_, div, mul and add). The formulas are torch's,
from tools/autograd/derivatives.yaml.
"""

import torch
import torch.nn.functional as F


def forward(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """model's forward, recorded by autograd: (logits (N, C), the hidden outputs)."""
    logits = model(x)
    return logits, list(getattr(model, "hidden_outputs", []))


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor,
                  label_smoothing: float = 0.0) -> torch.Tensor:
    """The mean cross-entropy of logits (N, C) against targets (N,), recorded by autograd."""
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
