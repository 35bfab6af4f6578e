"""The models the idiomatic way: softmax regression first, then a multi-layer perceptron, then
a convolutional network, then a residual network.

Twin of manual/model.py. The softmax itself lives in the loss
(nn.CrossEntropyLoss / F.cross_entropy), which takes raw logits.
"""

import torch
from torch import nn


class SoftmaxRegression(nn.Module):
    """logits = x W^T + b, with W: (C, D) = linear.weight and b: (C,) = linear.bias.

    nn.Linear initializes every entry from U(-1/sqrt(D), 1/sqrt(D)), weight
    first, then bias.
    """

    def __init__(self, in_features: int, num_classes: int,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) -> logits (N, C). Autograd records the operation for backward."""
        return self.linear(x)

    # backward: written by autograd. loss.backward() fills linear.weight.grad
    # (g^T x) and linear.bias.grad (sum_n g_n); see manual/layers.py, Linear.
    # parameters(): inherited from nn.Module, [linear.weight, linear.bias].
    # train() / eval(): inherited from nn.Module; nothing here acts differently.


class Chain(nn.Module):
    """Layers one after another, an nn.Sequential in self.layers; autograd writes the backward.

    The MLP and the CNN are chains. The last layer's output is the logits; the others' are
    hidden outputs, kept with their gradients.
    """

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.hidden_outputs: list[torch.Tensor] = []  # each hidden layer's output, in order

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (the first layer's input) -> logits (N, C), layer after layer. Keeps the hidden
        outputs.

        Autograd frees the gradient of an intermediate tensor once it has passed it
        on; retain_grad() asks it to keep dLoss/dh in h.grad, to compare with manual's.
        """
        self.hidden_outputs = []
        for layer in self.layers[:-1]:
            x = layer(x)
            if x.requires_grad:  # not under torch.no_grad()
                x.retain_grad()
            self.hidden_outputs.append(x)
        return self.layers[-1](x)

    # backward: written by autograd, through each layer in reverse (manual/model.py, Chain).
    # named_parameters(), named_buffers(), train(), eval(): inherited from nn.Module.


class MLP(Chain):
    """x (N, D) -> Linear -> [BatchNorm1d] -> ReLU -> Linear -> logits (N, C), an nn.Sequential.

    One hidden layer of `hidden` units: h = relu(bn(x W1^T + b1)), logits = h W2^T + b2,
    with W1: (hidden, D), W2: (C, hidden). With batchnorm=True, BatchNorm1d normalizes
    x W1^T and brings its own shift, beta, so the first Linear has no bias b1: BatchNorm
    would subtract it again (its gradient would be exactly 0, rounding aside).
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, batchnorm: bool = False,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        kinds = dict(device=device, dtype=dtype)
        norm = [nn.BatchNorm1d(hidden, **kinds)] if batchnorm else []
        super().__init__([nn.Linear(in_features, hidden, bias=not batchnorm, **kinds), *norm,
                          nn.ReLU(), nn.Linear(hidden, num_classes, **kinds)])


class CNN(Chain):
    """x (N, 1, 28, 28) -> [Conv2d -> ReLU -> MaxPool2d] per entry of channels -> Flatten ->
    Linear -> logits (N, C), an nn.Sequential.

    Each block: a k x k convolution padded by k // 2 (an odd k keeps the image's size),
    ReLU, then 2 x 2 max pooling (it halves the size, rounding down). The defaults, channels
    (16, 32): (N, 1, 28, 28) -> (N, 16, 14, 14) -> (N, 32, 7, 7) -> (N, 1568) -> (N, 10).
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (16, 32),
                 num_classes: int = 10, kernel_size: int = 5, image_size: int = 28,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        kinds = dict(device=device, dtype=dtype)
        layers, size = [], image_size
        for inputs, outputs in zip((in_channels, *channels[:-1]), channels, strict=True):
            layers += [nn.Conv2d(inputs, outputs, kernel_size, padding=kernel_size // 2,
                                 **kinds), nn.ReLU(), nn.MaxPool2d(2)]
            size = (size + 2 * (kernel_size // 2) - kernel_size + 1) // 2
        super().__init__([*layers, nn.Flatten(),
                          nn.Linear(channels[-1] * size * size, num_classes, **kinds)])

    # backward: written by autograd (manual/layers.py: Conv2d, MaxPool2d, Flatten).


class BasicBlock(nn.Module):
    """The residual block: y = relu(x + f(x)), f(x) = bn2(conv2(relu(bn1(conv1(x))))), as
    torchvision's BasicBlock (without its downsampling); x: (N, C, H, W) -> y, x's shape.

    x feeds f and the skip; autograd records the add (AddBackward0), and its engine adds the
    two gradients that meet at x (manual/model.py, BasicBlock).
    """

    def __init__(self, channels: int, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        super().__init__()
        kinds = dict(device=device, dtype=dtype)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, **kinds)
        self.bn1 = nn.BatchNorm2d(channels, **kinds)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, **kinds)
        self.bn2 = nn.BatchNorm2d(channels, **kinds)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = bn2(conv2(relu(bn1(conv1(x))))), x's shape: the path beside the skip."""
        return self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.branch(x))


class ResNet(Chain):
    """x (N, 1, 28, 28) -> a stem, then per entry of channels after the first a wider stage,
    each followed by a residual block -> global average pooling -> Linear -> logits (N, C),
    an nn.Sequential (manual/model.py, ResNet, gives the shapes).

    stem:  Conv2d 5 x 5 -> BatchNorm2d -> ReLU -> MaxPool2d 2, then a BasicBlock
    stage: Conv2d 3 x 3 to the next width -> BatchNorm2d -> ReLU -> MaxPool2d 2, then a
           BasicBlock
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (24, 48),
                 num_classes: int = 10, device: torch.device | str | None = None,
                 dtype: torch.dtype | None = None):
        kinds = dict(device=device, dtype=dtype)
        layers = []
        for index, (inputs, outputs) in enumerate(zip((in_channels, *channels[:-1]), channels,
                                                      strict=True)):
            k = 5 if index == 0 else 3
            layers += [nn.Conv2d(inputs, outputs, k, padding=k // 2, bias=False, **kinds),
                       nn.BatchNorm2d(outputs, **kinds), nn.ReLU(), nn.MaxPool2d(2),
                       BasicBlock(outputs, **kinds)]
        super().__init__([*layers, nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(),
                          nn.Linear(channels[-1], num_classes, **kinds)])

    # backward: written by autograd, which meets each block's fork (manual/model.py, ResNet).
