"""The models, by hand: softmax regression first, then a multi-layer perceptron.

Twin of torch_impl/model.py. The softmax itself lives in the loss
(manual.functional.cross_entropy), exactly as with nn.Linear + nn.CrossEntropyLoss.
The layers, each with its backward written out, are in manual/layers.py.
"""

import torch

from manual.layers import BatchNorm1d, Linear, ReLU


class SoftmaxRegression(Linear):
    """logits = x W^T + b, with W: (C, D) = weight and b: (C,) = bias: one Linear layer.

    x: (N, D) -> logits (N, C). forward, backward (weight.grad = g^T x,
    bias.grad = sum_n g_n, dLoss/dx = g W) and the nn.Linear initialization are
    Linear's, in manual/layers.py; the softmax is applied by the loss.
    """

    def __init__(self, in_features: int, num_classes: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__(in_features, num_classes, device=device, dtype=dtype)

    def train(self, mode: bool = True) -> "SoftmaxRegression":
        """Nothing here acts differently in training and eval; the same interface as the MLP."""
        return self

    def eval(self) -> "SoftmaxRegression":
        return self


class MLP:
    """x (N, D) -> Linear -> [BatchNorm1d] -> ReLU -> Linear -> logits (N, C).

    One hidden layer of `hidden` units: h = relu(bn(x W1^T + b1)), logits = h W2^T + b2,
    with W1: (hidden, D), W2: (C, hidden). With batchnorm=True, BatchNorm1d normalizes
    x W1^T and brings its own shift, beta, so the first Linear has no bias b1: BatchNorm
    would subtract it again (its gradient would be exactly 0, rounding aside).
    The layers are created in this order, so after the same torch.manual_seed the
    parameters equal the torch twin's.
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, batchnorm: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        kinds = dict(device=device, dtype=dtype)
        self.layers = [Linear(in_features, hidden, bias=not batchnorm, **kinds)]
        if batchnorm:
            self.layers.append(BatchNorm1d(hidden, **kinds))
        self.layers += [ReLU(), Linear(hidden, num_classes, **kinds)]
        self.training = True
        self.hidden_outputs: list[torch.Tensor] = []  # each hidden layer's output, (N, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) -> logits (N, C), layer after layer. Keeps the hidden outputs."""
        self.hidden_outputs = []
        for layer in self.layers[:-1]:
            x = layer(x)
            self.hidden_outputs.append(x)
        return self.layers[-1](x)

    __call__ = forward

    def backward(self, grad_logits: torch.Tensor,
                 needs_input_grad: bool = True) -> torch.Tensor | None:
        """The chain rule, layer by layer from the top, given g = dLoss/dlogits: (N, C).

        Each layer turns dLoss/d(its output) into dLoss/d(its input), which is
        dLoss/d(the output of the layer below); that gradient is also kept in the
        .grad of the hidden output, where torch's retain_grad() keeps it. Sets every
        parameter's .grad; returns dLoss/dx (N, D), or None (see Linear.backward).
        """
        grad = grad_logits
        for layer, below in zip(reversed(self.layers[1:]), reversed(self.hidden_outputs),
                                strict=True):
            grad = layer.backward(grad)
            below.grad = grad
        return self.layers[0].backward(grad, needs_input_grad)

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """("layers.0.weight", W1), ("layers.0.bias", b1), ...: nn.Module's names and order."""
        return [(f"layers.{i}.{name}", param) for i, layer in enumerate(self.layers)
                for name, param in layer.named_parameters()]

    def parameters(self) -> list[torch.Tensor]:
        return [param for _, param in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        """BatchNorm1d's running statistics, named as in torch: "layers.1.running_mean", ..."""
        return [(f"layers.{i}.{name}", buffer) for i, layer in enumerate(self.layers)
                if isinstance(layer, BatchNorm1d) for name, buffer in layer.named_buffers()]

    def train(self, mode: bool = True) -> "MLP":
        """Training mode, or eval mode with mode=False: only BatchNorm1d acts differently
        (batch statistics or running ones)."""
        self.training = mode
        for layer in self.layers:
            if isinstance(layer, BatchNorm1d):
                layer.train(mode)
        return self

    def eval(self) -> "MLP":
        return self.train(False)
