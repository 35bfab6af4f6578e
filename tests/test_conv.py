"""manual/layers.py's image layers and the manual CNN: each hand-written backward against autograd.

- Each layer (Conv2d with and without bias, MaxPool2d, Flatten) against its torch.nn twin
  holding the same parameters: output, dLoss/dx, weight.grad and bias.grad for a random
  upstream gradient (never ones), in float64 to 1e-12 and float32 within assert_close's
  defaults; backward sets .grad, never adds to it. Conv2d over strides 1 and 2, paddings 0,
  1 and 2, kernels 1, 3 and 5 on non-square images (7 x 9, 8 x 6), and rows and columns no
  window covers (stride 2 or 3, an uneven size), which get a zero gradient;
  backward(g, needs_input_grad=False) returns None and still sets the grads. MaxPool2d over
  kernels 2 and 3 and strides None, 1, 2 and 3: overlapping windows, and windows that do not
  fit, which are dropped.
- Conv2d's initialization: bit-identical to nn.Conv2d's after the same torch.manual_seed.
- Each layer against central differences (lockstep.checks.numerical_gradient) and against
  torch.autograd.gradcheck, in float64, wrt x and every parameter; MaxPool2d on inputs
  without ties, where its gradient is defined.
- MaxPool2d's ties: output and dLoss/dx bit-identical (torch.equal) to torch's on an all-zero
  plane, on inputs of few distinct values and on the output of ReLU: the first maximum of a
  window in row-major order gets its gradient. Side by side windows with a random upstream
  gradient; overlapping ones with an integer-valued one, whose sums are exact in any order
  (the manual layer adds the overlapping windows in another order than torch does).
- The whole CNN, against torch_impl's from the same seed (parameters, names, logits, the
  gradients of every parameter and hidden output) and through gradcheck.
- Three SGD steps with momentum through two Learners (manual and torch_impl): the loss, every
  named gradient and the parameters after each update agree to 1e-10.
- Broken twins (a kernel gradient rotated by 180 degrees, one divided by N, a max pooling
  that sends the gradient to every tied maximum, a flatten in (H, W, C) order) fail the very
  check each one targets: the checks can catch these bugs.

Run with `pytest -s` to see each comparison printed.
"""

import copy

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

import manual
import torch_impl
import torch_impl.layers as nn_layers
import torch_impl.model
from lockstep import diagnosis
from lockstep.diagnosis import around
from lockstep.kinds import tensor_key
from lockstep.learner import Learner
from lockstep.ties import tied_maxima, tied_windows
from manual.layers import Conv2d, Flatten, MaxPool2d
from manual.model import CNN
from tests.helpers import (
    DTYPE_IDS,
    DTYPES,
    Differs,
    WorstAgreement,
    assert_matches_torch,
    hidden_gradients,
    one_thread,
    random_batch,
    tutor,
)
from tests.test_layers import (
    check_layer_against_autograd,
    check_layer_against_central_differences,
    check_mlp_against_autograd,
    check_with_gradcheck,
    copy_state,
)

# (N, C, H, W) of the layer tests: non-square images, of an odd and an even size.
IMAGES = [(2, 2, 7, 9), (3, 2, 8, 6)]
IMAGE_IDS = [f"N{n}-C{c}-{h}x{w}" for n, c, h, w in IMAGES]
OUT_CHANNELS = 3  # Conv2d: (N, C, H, W) -> (N, 3, H_out, W_out)
# Central differences and gradcheck: tiny, so that one forward per entry stays fast.
TINY = (2, 2, 5, 6)
# (kernel, stride, padding, bias) for central differences and gradcheck: on 5 x 6, stride 2
# with padding leaves the last padded column to no window.
TINY_CONVS = [(3, 1, 1, True), (3, 2, 1, True), (2, 1, 0, False)]
TINY_CONV_IDS = [f"k{k}-s{s}-p{p}" + ("" if bias else "-no-bias") for k, s, p, bias in TINY_CONVS]
# (kernel, stride) of max pooling: side by side (stride None = the kernel), and overlapping.
POOLS = [(2, None), (2, 1), (2, 2), (2, 3), (3, None), (3, 1), (3, 2), (3, 3)]
POOL_IDS = [f"k{k}-s{s}" for k, s in POOLS]
# Finite differences (a step of 1e-6) must not move a window's maximum to another entry, nor
# an input of ReLU across 0: each margin at least this.
MARGIN = 1e-4
# The CNN, small: (N, 1, 8, 8) -> (N, 2, 4, 4) -> (N, 3, 2, 2) -> (N, 12) -> (N, 3).
CNN_SIZES = dict(in_channels=1, channels=(2, 3), num_classes=3, kernel_size=3, image_size=8)
FLATTEN_INDEX = 6  # Conv2d, ReLU, MaxPool2d, Conv2d, ReLU, MaxPool2d, Flatten, Linear
TRAINING_MAX_REL_DIFF = 1e-10  # as in test_training_step.py
LEARNER_SIZES = dict(in_features=64, num_classes=3, channels=(2, 3))  # 8 x 8 images
SGD_OPTIONS = {"lr": 0.1, "momentum": 0.9}


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Every test of this file on one thread (tiny tensors; see helpers.one_thread)."""
    with one_thread():
        yield


# Inputs and twins ------------------------------------------------------------------------

def random_images(shape: tuple[int, ...], dtype: torch.dtype = torch.float64,
                  seed: int = 1) -> torch.Tensor:
    """x ~ N(0, 1) of `shape`, (N, C, H, W): no two entries equal (almost surely), so no max
    pooling ties; assert_no_ties makes sure where it matters."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def random_upstream(shape: tuple[int, ...], dtype: torch.dtype = torch.float64,
                    seed: int = 2) -> torch.Tensor:
    """A random dLoss/dy of `shape`: backward is the chain rule for any g; ones would hide bugs
    (a kernel gradient rotated by 180 degrees is right for a constant g)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def integer_upstream(shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
                     seed: int = 2) -> torch.Tensor:
    """A random dLoss/dy of small integers, -3 to 3: its sums are exact in any order."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-3, 4, shape, generator=generator).to(dtype)


def twin_convs(in_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
               bias: bool = True, dtype: torch.dtype = torch.float64, seed: int = 0,
               manual_class: type = Conv2d) -> tuple[Conv2d, torch.nn.Conv2d]:
    """(manual Conv2d, nn.Conv2d) with OUT_CHANNELS outputs and the manual one's parameters.

    manual_class: a subclass of Conv2d to build instead (the broken twins below)."""
    torch.manual_seed(seed)
    settings = dict(stride=stride, padding=padding, bias=bias, dtype=dtype)
    layer = manual_class(in_channels, OUT_CHANNELS, kernel_size, **settings)
    reference = nn_layers.Conv2d(in_channels, OUT_CHANNELS, kernel_size, **settings)
    copy_state(layer, reference)
    return layer, reference


def output_shape(reference: torch.nn.Module, x: torch.Tensor) -> torch.Size:
    """The shape of the torch twin's output for x."""
    with torch.no_grad():
        return reference(x).shape


def assert_no_ties(x: torch.Tensor, kernel_size: int, stride: int | None) -> None:
    """Every window of max pooling has one largest entry, by at least MARGIN: steps of 1e-6
    (central differences, gradcheck) cannot hand its gradient to another entry."""
    windows = x.unfold(2, kernel_size, stride or kernel_size).unfold(3, kernel_size,
                                                                     stride or kernel_size)
    top = windows.flatten(-2).topk(2, dim=-1).values
    assert not tied_windows(x, kernel_size, stride).any()
    assert (top[..., 0] - top[..., 1]).min() > MARGIN


# Each layer against its torch.nn twin -----------------------------------------------------

# (stride, padding, kernel, dtype): every stride, padding and kernel in float64; in float32,
# where each new shape costs oneDNN a kernel compiled on its first call, those of the CNN and a
# few around them.
CONVS = ([(s, p, k, torch.float64) for s in (1, 2) for p in (0, 1, 2) for k in (1, 3, 5)]
         + [(s, p, k, torch.float32) for s in (1, 2) for p, k in ((0, 1), (1, 3), (2, 5))])


@pytest.mark.parametrize(("stride", "padding", "kernel_size", "dtype"), CONVS,
                         ids=[f"s{s}-p{p}-k{k}-{str(d).removeprefix('torch.')}"
                              for s, p, k, d in CONVS])
def test_conv2d_matches_autograd(stride, padding, kernel_size, dtype):
    """Output, dLoss/dx, weight.grad and bias.grad equal nn.Conv2d's (1e-12 in float64), set
    not added, over strides, paddings and kernels: on both images of IMAGES, the first with a
    bias, the second without."""
    for shape, bias in zip(IMAGES, (True, False), strict=True):
        layer, reference = twin_convs(shape[1], kernel_size, stride, padding, bias, dtype)
        assert [name for name, _ in layer.named_parameters()] == ["weight", "bias"][:1 + bias]
        x = random_images(shape, dtype)
        check_layer_against_autograd(layer, reference, x,
                                     random_upstream(output_shape(reference, x), dtype))


# (kernel, stride, padding, (H, W)): the rows and columns at the bottom and right of x that no
# window reaches, max(0, (size + 2 padding - kernel) % stride - padding), and inside with
# kernel 1 and stride 3, every row and column between two windows.
UNCOVERED = [(3, 2, 0, (8, 6)), (3, 3, 1, (9, 7)), (1, 3, 0, (8, 7)), (5, 2, 0, (8, 9))]


@pytest.mark.parametrize(("kernel_size", "stride", "padding", "size"), UNCOVERED,
                         ids=[f"k{k}-s{s}-p{p}-{h}x{w}" for k, s, p, (h, w) in UNCOVERED])
def test_conv2d_rows_no_window_covers_get_zero_gradient(kernel_size, stride, padding, size):
    """Where a stride skips rows and columns of x, dLoss/dx is 0 there, as torch's, and the
    rest still equals torch's: backward returns the input's full shape."""
    layer, reference = twin_convs(2, kernel_size, stride, padding)
    x = random_images((2, 2, *size))
    x_autograd = x.clone().requires_grad_()
    expected = reference(x_autograd)
    grad_output = random_upstream(expected.shape)
    expected.backward(grad_output)
    layer(x)
    grad_x = layer.backward(grad_output)
    assert_matches_torch("dLoss/dx", grad_x, x_autograd.grad)
    rows, columns = expected.shape[-2:]
    row_hit = {stride * p + i - padding for p in range(rows) for i in range(kernel_size)}
    column_hit = {stride * q + j - padding for q in range(columns) for j in range(kernel_size)}
    covered = torch.tensor([[h in row_hit and w in column_hit for w in range(size[1])]
                            for h in range(size[0])])
    assert not covered.all(), "the case must leave some rows or columns of x uncovered"
    assert (grad_x[..., ~covered] == 0).all()
    assert (x_autograd.grad[..., ~covered] == 0).all()


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_conv2d_without_input_gradient_returns_none_and_sets_the_grads(bias):
    """backward(g, needs_input_grad=False), as for the images: None, and the same weight.grad
    and bias.grad bits as backward(g)."""
    layer, _ = twin_convs(2, 3, stride=2, padding=1, bias=bias)
    x = random_images(IMAGES[0])
    grad_output = random_upstream(layer(x).shape)
    layer.backward(grad_output)
    expected = [param.grad for param in layer.parameters()]
    for param in layer.parameters():
        param.grad = None
    assert layer.backward(grad_output, needs_input_grad=False) is None
    for (name, param), grad in zip(layer.named_parameters(), expected, strict=True):
        assert param.grad is not None and torch.equal(param.grad, grad), name


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("kernel_size", "stride"), POOLS, ids=POOL_IDS)
def test_maxpool2d_matches_autograd(kernel_size, stride, dtype):
    """Output and dLoss/dx equal nn.MaxPool2d's, windows overlapping or dropped at the edge,
    on both images of IMAGES."""
    for shape in IMAGES:
        layer = MaxPool2d(kernel_size, stride)
        reference = nn_layers.MaxPool2d(kernel_size, stride)
        x = random_images(shape, dtype)
        out = output_shape(reference, x)
        step = stride or kernel_size
        assert out[-2:] == tuple((size - kernel_size) // step + 1 for size in shape[-2:])
        check_layer_against_autograd(layer, reference, x, random_upstream(out, dtype))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", IMAGES, ids=IMAGE_IDS)
def test_flatten_matches_autograd(shape, dtype):
    """Output (N, C H W) and dLoss/dx equal nn.Flatten's."""
    layer, reference = Flatten(), nn_layers.Flatten()
    x = random_images(shape, dtype)
    check_layer_against_autograd(layer, reference, x,
                                 random_upstream(output_shape(reference, x), dtype))


# Conv2d's initialization ------------------------------------------------------------------

# (in, out, kernel, bias): fan_in = in k k of 1, 3 and 13 (where 1/sqrt(fan_in) is one ulp off
# nn's bound in float64, see manual.layers.initialized), 18, 25 and 400.
INITS = [(1, 2, 1, True), (3, 4, 1, True), (13, 2, 1, True), (1, 16, 5, True),
         (16, 32, 5, True), (2, 3, 3, False)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("in_channels", "out_channels", "kernel_size", "bias"), INITS,
                         ids=[f"{i}-{o}-k{k}" + ("" if b else "-no-bias")
                              for i, o, k, b in INITS])
def test_conv2d_initialization_equals_torch(in_channels, out_channels, kernel_size, bias,
                                            dtype):
    """After the same seed: the same names, shapes, dtypes and bits as nn.Conv2d, and the
    global random stream left at the same place."""
    torch.manual_seed(3)
    layer = Conv2d(in_channels, out_channels, kernel_size, bias=bias, dtype=dtype)
    after_manual = torch.rand(1)
    torch.manual_seed(3)
    reference = nn_layers.Conv2d(in_channels, out_channels, kernel_size, bias=bias, dtype=dtype)
    assert torch.equal(after_manual, torch.rand(1)), "a different number of draws"
    theirs = list(reference.named_parameters())
    assert [name for name, _ in layer.named_parameters()] == [name for name, _ in theirs]
    for (name, mine), (_, twin) in zip(layer.named_parameters(), theirs, strict=True):
        assert mine.dtype == twin.dtype and torch.equal(mine, twin.detach()), name


# Central differences and gradcheck -------------------------------------------------------

def tiny_conv(kernel_size: int, stride: int, padding: int, bias: bool) -> Conv2d:
    """A manual Conv2d for TINY images (its torch twin is not needed here)."""
    layer, _ = twin_convs(TINY[1], kernel_size, stride, padding, bias)
    return layer


@pytest.mark.parametrize(("kernel_size", "stride", "padding", "bias"), TINY_CONVS,
                         ids=TINY_CONV_IDS)
def test_conv2d_gradients_match_central_differences(kernel_size, stride, padding, bias):
    """dLoss/dx, dLoss/dweight and dLoss/dbias agree with central differences to 1e-7."""
    layer = tiny_conv(kernel_size, stride, padding, bias)
    x = random_images(TINY)
    check_layer_against_central_differences(layer, x, random_upstream(layer(x).shape))


@pytest.mark.parametrize(("kernel_size", "stride", "padding", "bias"), TINY_CONVS,
                         ids=TINY_CONV_IDS)
def test_conv2d_passes_torch_gradcheck(kernel_size, stride, padding, bias):
    """torch.autograd.gradcheck accepts Conv2d's backward wrt x, weight and bias (float64)."""
    layer = tiny_conv(kernel_size, stride, padding, bias)
    assert len(layer.parameters()) == 1 + bias
    check_with_gradcheck(layer, random_images(TINY))


TINY_POOLS = [(2, None), (2, 1), (3, 2)]


@pytest.mark.parametrize(("kernel_size", "stride"), TINY_POOLS,
                         ids=[f"k{k}-s{s}" for k, s in TINY_POOLS])
def test_maxpool2d_gradient_matches_central_differences(kernel_size, stride):
    """dLoss/dx agrees with central differences to 1e-7, on an input without ties."""
    layer, x = MaxPool2d(kernel_size, stride), random_images(TINY)
    assert_no_ties(x, kernel_size, stride)
    check_layer_against_central_differences(layer, x, random_upstream(layer(x).shape))


@pytest.mark.parametrize(("kernel_size", "stride"), TINY_POOLS,
                         ids=[f"k{k}-s{s}" for k, s in TINY_POOLS])
def test_maxpool2d_passes_torch_gradcheck(kernel_size, stride):
    """gradcheck accepts MaxPool2d's backward wrt x, on an input without ties."""
    x = random_images(TINY)
    assert_no_ties(x, kernel_size, stride)
    check_with_gradcheck(MaxPool2d(kernel_size, stride), x)


def test_flatten_gradient_matches_central_differences_and_gradcheck():
    """Flatten's dLoss/dx: central differences to 1e-7, and gradcheck."""
    x = random_images(TINY)
    check_layer_against_central_differences(Flatten(), x, random_upstream((2, 60)))
    check_with_gradcheck(Flatten(), x)


# MaxPool2d's ties: the first maximum of each window, bit for bit ---------------------------

def tied_input(kind: str, shape: tuple[int, ...], dtype: torch.dtype,
               seed: int = 4) -> torch.Tensor:
    """An input full of ties: "zeros", one plane of 0; "few-values", integers 0 to 2;
    "relu", ReLU of N(-1, 1), mostly zeros, as ReLU leaves MNIST's blank background."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "zeros":
        return torch.zeros(shape, dtype=dtype)
    if kind == "few-values":
        return torch.randint(0, 3, shape, generator=generator).to(dtype)
    return (torch.randn(shape, generator=generator, dtype=dtype) - 1).relu()


def check_pool_ties(layer: MaxPool2d, x: torch.Tensor, grad_output: torch.Tensor) -> None:
    """Output and dLoss/dx of the manual layer are torch.equal to nn.MaxPool2d's; where they
    are not, the tutor's sentence (with the tied maxima of x: compare.py's words for them)."""
    reference = nn_layers.MaxPool2d(layer.kernel_size, layer.stride)
    x_autograd = x.clone().requires_grad_()
    expected = reference(x_autograd)
    expected.backward(grad_output)
    output = layer(x)
    assert torch.equal(output, expected.detach()), "output: not bit-identical to torch's"
    grad_x = layer.backward(grad_output)
    assert grad_x.shape == x.shape, f"dLoss/dx: shape {tuple(grad_x.shape)}"
    if not torch.equal(grad_x, x_autograd.grad):
        raise Differs(f"dLoss/dx: {int((grad_x != x_autograd.grad).sum())} entries differ from "
                      "torch's", tutor("dLoss/dx", grad_x, x_autograd.grad, 0.0,
                                       ties=tied_maxima(x, layer.kernel_size, layer.stride)))


TIE_KINDS = ["zeros", "few-values", "relu"]
SIDE_BY_SIDE = [(2, None), (2, 2), (3, 3)]  # (2, None): the CNN's
OVERLAPPING = [(3, 1), (2, 1), (3, 2)]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize(("kernel_size", "stride"), SIDE_BY_SIDE + OVERLAPPING,
                         ids=[f"k{k}-s{s}" for k, s in SIDE_BY_SIDE + OVERLAPPING])
def test_maxpool2d_ties_are_bit_identical_to_torch(kernel_size, stride, dtype):
    """Ties go to the first maximum in row-major order, as in torch: torch.equal for the
    output and dLoss/dx, on each kind of TIE_KINDS. Side by side windows: a random gradient
    (each entry gets at most one window's); overlapping ones: an integer-valued one, exact
    whatever the order of the sum."""
    for kind in TIE_KINDS:
        x = tied_input(kind, (2, 3, 7, 9), dtype)
        assert tied_windows(x, kernel_size, stride).any(), f"{kind}: the input must hold ties"
        layer = MaxPool2d(kernel_size, stride)
        shape = output_shape(nn_layers.MaxPool2d(kernel_size, stride), x)
        overlapping = (kernel_size, stride) in OVERLAPPING
        grad_output = (integer_upstream if overlapping else random_upstream)(shape, dtype)
        check_pool_ties(layer, x, grad_output)


# The whole CNN -----------------------------------------------------------------------------

def twin_cnns(dtype: torch.dtype = torch.float64,
              seed: int = 0) -> tuple[CNN, torch_impl.model.CNN]:
    """The manual CNN and torch_impl's, each built right after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    by_hand = CNN(**CNN_SIZES, dtype=dtype)
    torch.manual_seed(seed)
    return by_hand, torch_impl.model.CNN(**CNN_SIZES, dtype=dtype)


def cnn_input(n: int = 2, dtype: torch.dtype = torch.float64, seed: int = 5) -> torch.Tensor:
    size = CNN_SIZES["image_size"]
    return random_images((n, CNN_SIZES["in_channels"], size, size), dtype, seed)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_cnn_initialization_and_names_equal_torch_impl(dtype):
    """After the same seed: the same parameter names, in order, and the same bits; no buffers."""
    by_hand, reference = twin_cnns(dtype)
    theirs = list(reference.named_parameters())
    names = [name for name, _ in by_hand.named_parameters()]
    assert names == [name for name, _ in theirs]
    assert names == [f"layers.{i}.{kind}" for i in (0, 3, 7) for kind in ("weight", "bias")]
    for (name, mine), (_, twin) in zip(by_hand.named_parameters(), theirs, strict=True):
        assert mine.dtype == twin.dtype and torch.equal(mine, twin.detach()), name
    assert by_hand.named_buffers() == [] and list(reference.named_buffers()) == []


def test_cnn_matches_torch_impl():
    """Logits, hidden outputs, every parameter's .grad, every hidden output's .grad and
    dLoss/dx equal torch_impl's CNN to 1e-12 (float64)."""
    by_hand, reference = twin_cnns()
    x = cnn_input()
    check_mlp_against_autograd(by_hand, reference, x,
                               random_upstream((len(x), CNN_SIZES["num_classes"])))
    assert len(by_hand.hidden_outputs) == FLATTEN_INDEX + 1
    assert all(output.grad is not None for output in by_hand.hidden_outputs)


def test_hidden_gradients_are_named_and_tied_as_compare_py_takes_them():
    """helpers.hidden_gradients, what a check of the hidden outputs' gradients hands the tutor:
    the Learner's names with ".grad" (compare.py's, lockstep.kinds.tensor_key), and the tied
    maxima for the inputs of the two max poolings, hidden.relu.1 and hidden.relu.4, only."""
    _, by_torch = twin_learners()
    x, y = sgd_batch(1)
    by_torch.gradients(x, y)
    named = hidden_gradients(by_torch.model)
    assert [name for name, _ in named] == [tensor_key("grad", name) for name, _ in
                                           by_torch.named_hidden_outputs()]
    tied = {name: ties for name, ties in named if ties is not None}
    assert list(tied) == ["hidden.relu.1.grad", "hidden.relu.4.grad"]
    for name, ties in tied.items():
        output = by_torch.model.hidden_outputs[int(name.split(".")[2])]
        assert torch.equal(ties, tied_maxima(output, 2)), name
    assert tied["hidden.relu.1.grad"].any()  # ReLU's zeros


def test_cnn_passes_torch_gradcheck():
    """gradcheck of the whole manual chain (forward, then CNN.backward) wrt x and each
    parameter, where no step of 1e-6 crosses ReLU's kink or moves a window's maximum."""
    by_hand, _ = twin_cnns()
    x = cnn_input()
    probe = copy.deepcopy(by_hand)
    probe(x)
    for index, layer in enumerate(probe.layers[:-1]):
        if isinstance(layer, Conv2d):  # the input of ReLU
            assert probe.hidden_outputs[index].abs().min() > MARGIN
        if isinstance(layer, MaxPool2d):  # ties only among ReLU's zeros, which stay 0
            k, s = layer.kernel_size, layer.stride
            windows = probe.hidden_outputs[index - 1].unfold(2, k, s).unfold(3, k, s)
            top = windows.flatten(-2).topk(2, dim=-1).values
            assert ((top[..., 0] == 0) | (top[..., 0] - top[..., 1] > MARGIN)).all()
    check_with_gradcheck(by_hand, x)


# Three SGD steps through two Learners -----------------------------------------------------

def twin_learners(seed: int = 0) -> tuple[Learner, Learner]:
    """The manual and the torch_impl Learner of the CNN, each built after manual_seed(seed)."""
    learners = []
    for package in (manual, torch_impl):
        torch.manual_seed(seed)
        learners.append(Learner(package, LEARNER_SIZES["in_features"],
                                LEARNER_SIZES["num_classes"], SGD_OPTIONS, dtype=torch.float64,
                                channels=LEARNER_SIZES["channels"]))
    return learners[0], learners[1]


def test_cnn_sgd_steps_match_torch_impl():
    """3 SGD steps with momentum 0.9: each loss, every named gradient (dLoss/dlogits, the
    parameters', the hidden outputs') and the parameters after each update agree to 1e-10."""
    check_sgd_steps(*twin_learners())


def sgd_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    return random_batch(8, LEARNER_SIZES["in_features"], LEARNER_SIZES["num_classes"],
                        seed=step - 1)


def check_gradients(checks: WorstAgreement, step: int, by_hand: Learner, by_torch: Learner,
                    y: torch.Tensor) -> None:
    """Every named gradient of the two learners after gradients(x, y), each under compare.py's
    name (tensor_key: "logits.grad", "hidden.relu.1.grad") with what its tutor knows of it
    (the targets for dLoss/dlogits, the ties of a max pooling's input): a failure says what
    compare.py says."""
    ours, theirs = by_hand.named_gradients(), by_torch.named_gradients()
    assert [name for name, _ in ours] == [name for name, _ in theirs]
    assert {"logits", "layers.0.weight", "hidden.conv2d.0", "hidden.maxpool2d.2",
            "hidden.flatten.6"} <= {name for name, _ in ours}
    for (name, mine), (_, twin) in zip(ours, theirs, strict=True):
        checks.check(tensor_key("grad", name), step, mine, twin, len(y),
                     y if name == "logits" else None, around(by_torch.model, name).get("ties"))


def check_sgd_steps(by_hand: Learner, by_torch: Learner) -> None:
    for (name, mine), (_, theirs) in zip(by_hand.named_parameters(), by_torch.named_parameters(),
                                         strict=True):
        assert torch.equal(mine, theirs.detach()), f"{name}: not starting from the same values"
    checks = WorstAgreement(TRAINING_MAX_REL_DIFF)
    for step in range(1, 4):
        x, y = sgd_batch(step)
        checks.check("loss", step, by_hand.gradients(x, y), by_torch.gradients(x, y))
        check_gradients(checks, step, by_hand, by_torch, y)
        by_hand.step()
        by_torch.step()
        for (name, mine), (_, twin) in zip(by_hand.named_parameters(),
                                           by_torch.named_parameters(), strict=True):
            checks.check(f"{name} after the update", step, mine, twin.detach())
    checks.report()
    assert checks.steps["loss"] == 3 and checks.largest() <= TRAINING_MAX_REL_DIFF


# The checks can fail: broken twins ---------------------------------------------------------

class FlippedKernelConv2d(Conv2d):
    """Broken: weight.grad rotated by 180 degrees, each kernel, as a true convolution's."""

    def backward(self, grad_output, needs_input_grad=True):
        grad_x = super().backward(grad_output, needs_input_grad)
        self.weight.grad = self.weight.grad.flip(-2, -1)
        return grad_x


class WeightGradOverNConv2d(Conv2d):
    """Broken: weight.grad divided by the batch size N, as if the loss were averaged twice."""

    def backward(self, grad_output, needs_input_grad=True):
        grad_x = super().backward(grad_output, needs_input_grad)
        self.weight.grad = self.weight.grad / len(grad_output)
        return grad_x


class EveryTieMaxPool2d(MaxPool2d):
    """Broken: each window's gradient goes to every entry equal to its maximum, not to the
    first one. Without ties it is right: it passes every check on tie-free random input."""

    def forward(self, x):
        self.input = x
        self.output = super().forward(x)
        return self.output

    __call__ = forward  # MaxPool2d's __call__ is MaxPool2d.forward itself

    def backward(self, grad_output):
        grad_input = grad_output.new_zeros(self.input_shape)
        for rows, columns in self.windows(self.input_shape):
            grad_input[..., rows, columns] += grad_output * (self.input[..., rows, columns]
                                                             == self.output)
        return grad_input


class HWCFlatten(Flatten):
    """Broken: each example flattened in (H, W, C) order, channels last, and its backward the
    matching reshape. Forward and backward agree with each other (gradcheck passes); only
    the comparison with the torch twin, which flattens in (C, H, W) order, catches it."""

    def forward(self, x):
        self.input_shape = x.shape
        return x.permute(0, 2, 3, 1).flatten(1)

    __call__ = forward  # Flatten's __call__ is Flatten.forward itself

    def backward(self, grad_output):
        n, c, h, w = self.input_shape
        return grad_output.reshape(n, h, w, c).permute(0, 3, 1, 2)


@pytest.mark.twin
@pytest.mark.parametrize(("broken", "caught"), [
    (FlippedKernelConv2d, r"weight\.grad \(first backward\)[\s\S]*rotated by 180 degrees"),
    (WeightGradOverNConv2d, r"weight\.grad \(first backward\)[\s\S]*1/N"),
], ids=["flipped-kernel", "weight-grad-over-N"])
def test_broken_conv2d_fails_the_autograd_check(broken, caught):
    """check_layer_against_autograd (test_conv2d_matches_autograd) raises for each broken
    Conv2d, on weight.grad, with the tutor's diagnosis."""
    layer, reference = twin_convs(2, 3, stride=2, padding=1, manual_class=broken)
    x = random_images(IMAGES[0])
    with pytest.raises(AssertionError, match=caught):
        check_layer_against_autograd(layer, reference, x,
                                     random_upstream(output_shape(reference, x)))


@pytest.mark.twin
@pytest.mark.parametrize("broken", [FlippedKernelConv2d, WeightGradOverNConv2d],
                         ids=["flipped-kernel", "weight-grad-over-N"])
def test_broken_conv2d_fails_gradcheck_and_central_differences(broken):
    """Each broken Conv2d fails gradcheck and central differences, on the weight."""
    layer, _ = twin_convs(TINY[1], 3, padding=1, manual_class=broken)
    x = random_images(TINY)
    with pytest.raises(GradcheckError, match="Jacobian mismatch for output 0 with respect to "
                                             "input 1"):  # input 0 is x, 1 the weight
        check_with_gradcheck(layer, x)
    with pytest.raises(AssertionError, match="dLoss/dweight vs central differences"):
        check_layer_against_central_differences(layer, x, random_upstream(layer(x).shape))


@pytest.mark.twin
@pytest.mark.parametrize(("kernel_size", "stride"), [(2, None), (3, 1)],
                         ids=["k2-s2", "k3-s1"])
def test_every_tie_maxpool2d_fails_the_ties_check(kernel_size, stride):
    """The pooling that feeds every tied maximum fails check_pool_ties on an all-zero plane,
    at the tied maxima, while it passes it, and the autograd check, on tie-free input."""
    layer = EveryTieMaxPool2d(kernel_size, stride)
    x = random_images((2, 3, 7, 9), torch.float32)
    assert_no_ties(x, kernel_size, stride)
    shape = output_shape(nn_layers.MaxPool2d(kernel_size, stride), x)
    grad_output = integer_upstream(shape) + 0.5  # never 0, exact in any order
    check_pool_ties(layer, x, grad_output)  # no ties: right
    check_layer_against_autograd(layer, nn_layers.MaxPool2d(kernel_size, stride), x,
                                 grad_output)
    with pytest.raises(Differs) as error:
        check_pool_ties(layer, tied_input("zeros", x.shape, torch.float32), grad_output)
    assert error.value.told.startswith("dLoss/dx differs (partial): only entries at tied maxima "
                                       "of max pooling differ: ")
    assert error.value.told.endswith("did you send the gradient to every tied maximum?")


@pytest.mark.twin
def test_every_tie_pooling_in_the_cnn_is_told_in_compare_pys_words():
    """The pooling that feeds every tied maximum, in the manual CNN: the SGD steps' check
    (test_cnn_sgd_steps_match_torch_impl) fails at step 1 on dLoss/d(hidden.relu.1), the
    gradient max pooling returns, with the sentence compare.py's tutor gives for the same
    learners (lockstep.diagnosis), word for word: a gradient, never "the hidden layer's output
    in the forward pass", and the ties named."""
    by_hand, by_torch = twin_learners()
    pool = by_hand.model.layers[2]
    learners = type("MaxPool2d", (EveryTieMaxPool2d,), {})  # a learner's, named as manual's
    by_hand.model.layers[2] = learners(pool.kernel_size, pool.stride)
    with pytest.raises(Differs) as error:
        check_sgd_steps(by_hand, by_torch)
    x, y = sgd_batch(1)
    found = diagnosis.of_gradients(1, [by_hand, by_torch], x, y, TRAINING_MAX_REL_DIFF, False)
    assert found["tensor"] == "hidden.relu.1.grad" and found["kind"] == "partial"
    assert error.value.told == found["message"].replace(" differs first (", " differs (", 1)
    assert error.value.told.startswith("step 1, dLoss/d(hidden.relu.1), the hidden layer's "
                                       "output gradient")
    assert error.value.told.endswith("did you send the gradient to every tied maximum?")


@pytest.mark.twin
def test_hwc_flatten_fails_the_cnn_comparison():
    """A CNN whose Flatten takes (H, W, C) order fails the comparison with torch_impl's CNN
    (test_cnn_matches_torch_impl) at its logits, though the flatten alone passes gradcheck."""
    check_with_gradcheck(HWCFlatten(), random_images(TINY))  # consistent with itself
    by_hand, reference = twin_cnns()
    assert isinstance(by_hand.layers[FLATTEN_INDEX], Flatten)
    by_hand.layers[FLATTEN_INDEX] = HWCFlatten()
    x = cnn_input()
    with pytest.raises(AssertionError, match=r"^logits: DIFFERENT"):
        check_mlp_against_autograd(by_hand, reference, x,
                                   random_upstream((len(x), CNN_SIZES["num_classes"])))


class LastMaximumMaxPool2d(MaxPool2d):
    """Broken: the window's offsets visited in reverse, so of tied maxima the last one wins."""

    def windows(self, shape):
        return list(reversed(super().windows(shape)))


@pytest.mark.parametrize("kind", TIE_KINDS)
def test_maxpool2d_keeps_torchs_own_indices(kind):
    """MaxPool2d.indices are the positions h W + w that F.max_pool2d(return_indices=True)
    gives, ties included (the first maximum in row-major order)."""
    x = tied_input(kind, (2, 3, 7, 9), torch.float32)
    for kernel_size, stride in SIDE_BY_SIDE + OVERLAPPING:
        layer = MaxPool2d(kernel_size, stride)
        layer(x)
        _, indices = torch.nn.functional.max_pool2d(x, kernel_size, stride, return_indices=True)
        assert torch.equal(layer.indices, indices), (kernel_size, stride)


@pytest.mark.twin
def test_a_pooling_that_takes_the_last_maximum_keeps_other_indices():
    """The twin: the last of the tied maxima, the same values, other indices."""
    x = tied_input("zeros", (2, 3, 7, 9), torch.float32)
    layer = LastMaximumMaxPool2d(2)
    output = layer(x)
    values, indices = torch.nn.functional.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(output, values) and not torch.equal(layer.indices, indices)
