"""The models, by hand: softmax regression first, then a multi-layer perceptron, then a
convolutional network, then a residual network.

Twin of torch_impl/model.py. The softmax itself lives in the loss
(manual.functional.cross_entropy), exactly as with nn.Linear + nn.CrossEntropyLoss.
The layers, each with its backward written out, are in manual/layers.py.
"""

import torch

from manual.layers import (
    AdaptiveAvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
)


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


class Chain:
    """Layers one after another: forward in their order, backward in reverse, the chain rule.

    The MLP and the CNN are chains; each builds self.layers, torch.nn's modules by hand, in
    nn.Sequential's order, so that after the same torch.manual_seed the parameters equal
    the torch twin's. The last layer's output is the logits; the others' are hidden outputs.
    """

    def __init__(self, layers: list):
        self.layers = layers
        self.training = True
        self.hidden_outputs: list[torch.Tensor] = []  # each hidden layer's output, in order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (the first layer's input) -> logits (N, C), layer after layer. Keeps the hidden
        outputs."""
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
        parameter's .grad; returns dLoss/dx, or None (see Linear.backward).
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
        """The BatchNorm layers' running statistics, named as in torch:
        "layers.1.running_mean", ..., "layers.4.bn1.running_var" (in a block)."""
        return [(f"layers.{i}.{name}", buffer) for i, layer in enumerate(self.layers)
                for name, buffer in getattr(layer, "named_buffers", list)()]

    def train(self, mode: bool = True) -> "Chain":
        """Training mode, or eval mode with mode=False: only BatchNorm acts differently
        (batch statistics or running ones)."""
        self.training = mode
        for layer in self.layers:
            if hasattr(layer, "train"):
                layer.train(mode)
        return self

    def eval(self) -> "Chain":
        return self.train(False)


class MLP(Chain):
    """x (N, D) -> Linear -> [BatchNorm1d] -> ReLU -> Linear -> logits (N, C).

    One hidden layer of `hidden` units: h = relu(bn(x W1^T + b1)), logits = h W2^T + b2,
    with W1: (hidden, D), W2: (C, hidden). With batchnorm=True, BatchNorm1d normalizes
    x W1^T and brings its own shift, beta, so the first Linear has no bias b1: BatchNorm
    would subtract it again (its gradient would be exactly 0, rounding aside).
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, batchnorm: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        kinds = dict(device=device, dtype=dtype)
        norm = [BatchNorm1d(hidden, **kinds)] if batchnorm else []
        super().__init__([Linear(in_features, hidden, bias=not batchnorm, **kinds), *norm,
                          ReLU(), Linear(hidden, num_classes, **kinds)])


class CNN(Chain):
    """x (N, 1, 28, 28) -> [Conv2d -> ReLU -> MaxPool2d] per entry of channels -> Flatten ->
    Linear -> logits (N, C).

    Each block: a k x k convolution padded by k // 2 (an odd k keeps the image's size),
    ReLU, then 2 x 2 max pooling (it halves the size, rounding down).

    With the defaults, channels (16, 32) and k = 5, the shapes are:
        (N, 1, 28, 28) -> (N, 16, 28, 28) -> (N, 16, 14, 14)
                       -> (N, 32, 14, 14) -> (N, 32, 7, 7) -> (N, 1568) -> (N, 10)
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (16, 32),
                 num_classes: int = 10, kernel_size: int = 5, image_size: int = 28,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        kinds = dict(device=device, dtype=dtype)
        layers, size = [], image_size
        for inputs, outputs in zip((in_channels, *channels[:-1]), channels, strict=True):
            layers += [Conv2d(inputs, outputs, kernel_size, padding=kernel_size // 2, **kinds),
                       ReLU(), MaxPool2d(2)]
            size = (size + 2 * (kernel_size // 2) - kernel_size + 1) // 2
        super().__init__([*layers, Flatten(),
                          Linear(channels[-1] * size * size, num_classes, **kinds)])


class BasicBlock:
    """The residual block: y = relu(x + f(x)), f(x) = bn2(conv2(relu(bn1(conv1(x))))).

    x: (N, C, H, W) -> y (N, C, H, W). conv1 and conv2 are 3 x 3, padded by 1, without a
    bias (the BatchNorm2d after each brings its own shift), as torchvision's BasicBlock.
    x forks: it feeds f and, unchanged, the skip. Backward meets the fork from the other
    side: dLoss/dx is the sum of the two paths' gradients,
        dLoss/dx = dLoss/ds + (df/dx)^T dLoss/ds,   s = x + f(x), dLoss/ds = g where y > 0
    the skip's share first, passed on as it is (however deep the stack, a gradient reaches
    x undamped), the branch's second. The block has no backward of its own: its forward is
    recorded (manual/functions.py, basic_block) and the engine (manual/autograd.py) walks
    it, adding the two shares where they meet, as torch's engine does.
    """

    def __init__(self, channels: int, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        kinds = dict(device=device, dtype=dtype)
        self.conv1 = Conv2d(channels, channels, 3, padding=1, bias=False, **kinds)
        self.bn1 = BatchNorm2d(channels, **kinds)
        self.relu = ReLU()
        self.conv2 = Conv2d(channels, channels, 3, padding=1, bias=False, **kinds)
        self.bn2 = BatchNorm2d(channels, **kinds)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = bn2(conv2(relu(bn1(conv1(x))))), x's shape: the path beside the skip."""
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.branch(x))

    __call__ = forward

    def named_children(self) -> list[tuple[str, object]]:
        return [(name, getattr(self, name)) for name in ("conv1", "bn1", "relu", "conv2", "bn2")]

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """"conv1.weight", "bn1.weight", "bn1.bias", ...: nn.Module's names and order."""
        return [(f"{child}.{name}", param) for child, layer in self.named_children()
                for name, param in layer.named_parameters()]

    def parameters(self) -> list[torch.Tensor]:
        return [param for _, param in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        return [(f"{child}.{name}", buffer) for child, layer in self.named_children()
                for name, buffer in getattr(layer, "named_buffers", list)()]

    def train(self, mode: bool = True) -> "BasicBlock":
        self.bn1.train(mode)
        self.bn2.train(mode)
        return self


class ResNet(Chain):
    """x (N, 1, 28, 28) -> a stem, then per entry of channels after the first a wider stage,
    each followed by a residual block -> global average pooling -> Linear -> logits (N, C).

    stem:  Conv2d 5 x 5 (padded by 2) -> BatchNorm2d -> ReLU -> MaxPool2d 2, then a BasicBlock
    stage: Conv2d 3 x 3 (padded by 1) to the next width -> BatchNorm2d -> ReLU -> MaxPool2d 2,
           then a BasicBlock
    The convolutions before a BatchNorm2d have no bias. With the defaults, channels (24, 48),
    the recipe's (README):
        (N, 1, 28, 28) -> (N, 24, 14, 14) -> block -> (N, 48, 7, 7) -> block
                       -> (N, 48, 1, 1) -> (N, 48) -> (N, 10)
    The chain's backward does not apply (a block is not a chain): it trains through the
    engine, manual/train.py's forward_backward_engine.
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (24, 48),
                 num_classes: int = 10, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        kinds = dict(device=device, dtype=dtype)
        layers = []
        for index, (inputs, outputs) in enumerate(zip((in_channels, *channels[:-1]), channels,
                                                      strict=True)):
            k = 5 if index == 0 else 3
            layers += [Conv2d(inputs, outputs, k, padding=k // 2, bias=False, **kinds),
                       BatchNorm2d(outputs, **kinds), ReLU(), MaxPool2d(2),
                       BasicBlock(outputs, **kinds)]
        super().__init__([*layers, AdaptiveAvgPool2d((1, 1)), Flatten(),
                          Linear(channels[-1], num_classes, **kinds)])

    def backward(self, grad_logits: torch.Tensor, needs_input_grad: bool = True):
        raise NotImplementedError("a ResNet is not a chain: its backward goes through the "
                                  "engine (train.forward_backward_engine)")
