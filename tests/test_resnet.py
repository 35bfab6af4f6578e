"""The residual network's pieces by hand, against torch: BatchNorm2d, AdaptiveAvgPool2d, the
BasicBlock's fork, and the whole ResNet, which trains through the engine.

- BatchNorm2d (BatchNorm1d on the view (N, C, H W)) against nn.BatchNorm2d holding the same
  random weight, bias and running statistics: the output bit-identical in float32, in
  training and in eval mode; after a training step running_mean and running_var
  bit-identical (the variance unbiased over a channel's n = N H W values); weight.grad,
  bias.grad and dLoss/dx for a random upstream gradient in float64 to 1e-12, both modes.
  BatchNorm1d on sequences (N, C, L) against nn.BatchNorm1d the same way.
- AdaptiveAvgPool2d((1, 1)): output and dLoss/dx against nn.AdaptiveAvgPool2d.
- ResNet against torch_impl's after the same torch.manual_seed: every parameter and buffer
  bit-identical, under the same names in the same order; train() and eval() reach every
  BatchNorm2d, the blocks' too, and the eval-mode logits agree.
- The engine's gradients of a small ResNet (channels (4, 8), 6 images of 28 x 28, float64):
  the loss, every hidden output, dLoss/dlogits, every parameter's .grad and every hidden
  output's gradient within 1e-10 of torch's loss.backward(), the forks' included (the
  gradient of each block's input, the hidden output just below it, is the sum of the skip's
  share and the branch's); and lockstep.graph.check: GRAPH MATCH, node by node.
- Broken twins (marker twin), each failing the very check above with the sentence the
  grader shows: the skip's gradient lost at the fork (an engine that overwrites where x's
  two gradients meet, or a basic_block that hands the add a detached x): the block's input
  gradient is torch's minus the skip's share; BatchNorm2d normalizing per (channel, row),
  over dims (0, 3); its running variance biased (divided by n, not n - 1); the block's ReLU
  before the add, y = x + relu(f(x)).

python -m pytest --manual DIR grades BatchNorm2d.backward (13) and basic_block (14) with
these checks.
"""

import copy
import itertools

import pytest
import torch

import manual
import torch_impl
from lockstep import graph
from lockstep.kinds import tensor_key
from lockstep.learner import Learner
from tests.helpers import Differs, assert_agrees, assert_matches_torch, one_thread, tutor
from tests.test_graph import overwriting

IMAGES = (4, 3, 5, 6)  # (N, C, H, W): small, H != W, so that a row and a column differ
SEQUENCES = (4, 3, 7)  # (N, C, L)
CHANNELS = (4, 8)  # the small ResNet: (N, 1, 28, 28) -> (N, 4, 14, 14) -> (N, 8, 7, 7)
BATCH = 6
LIMIT = 1e-10  # the lock step's float64 limit (lockstep.limits), as in test_graph.py
MODES = ["train", "eval"]


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Every test of this file on one thread (tiny tensors; see helpers.one_thread)."""
    with one_thread():
        yield


# BatchNorm2d and BatchNorm1d on (N, C, L) ------------------------------------------------------

def twin_norms(shape: tuple[int, ...], mode: str, dtype: torch.dtype, seed: int = 0):
    """(manual BatchNorm2d or BatchNorm1d for shape (N, C, H, W) or (N, C, L), nn's twin),
    holding the same random weight, bias and running statistics (not ones and zeros, so that
    a formula that forgets gamma, or an eval mode that ignores the running statistics, cannot
    pass by accident), both in `mode`."""
    generator = torch.Generator().manual_seed(seed)
    channels, images = shape[1], len(shape) == 4
    mine = (manual.layers.BatchNorm2d if images else manual.layers.BatchNorm1d)(
        channels, dtype=dtype)
    theirs = (torch.nn.BatchNorm2d if images else torch.nn.BatchNorm1d)(channels, dtype=dtype)
    for name in ("weight", "bias", "running_mean", "running_var"):
        fresh = torch.randn(channels, generator=generator, dtype=dtype)
        fresh = 0.5 + fresh.abs() if name == "running_var" else fresh  # a variance stays > 0
        getattr(mine, name).copy_(fresh)
        with torch.no_grad():
            getattr(theirs, name).copy_(fresh)
    for layer in (mine, theirs):
        layer.train(mode == "train")
    return mine, theirs


def random_tensor(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    """2 N(0, 1) + 1, from `seed`: neither mean 0 nor variance 1 to start with."""
    generator = torch.Generator().manual_seed(seed)
    return 2 * torch.randn(shape, generator=generator, dtype=dtype) + 1


def assert_bit_identical(name: str, actual: torch.Tensor, expected: torch.Tensor,
                         told: str | None = None) -> None:
    """torch.equal, or Differs with told (default: the tutor's sentence)."""
    if actual is None or actual.shape != expected.shape or not torch.equal(actual, expected):
        raise Differs(f"{name}: not bit-identical to torch's",
                      told or tutor(name, actual, expected, 0.0))


def normalized_over(y: torch.Tensor, layer) -> tuple[int, ...] | None:
    """The fewest dims over which (y - beta) / gamma, y a BatchNorm's training-mode output
    (N, C, H, W), has mean 0 and variance 1 (~1e-3: eps), as it has over each channel's
    (0, 2, 3) when the statistics are a channel's; None if over none."""
    standard = (y - layer.bias.view(-1, 1, 1)) / layer.weight.view(-1, 1, 1)
    for size in (1, 2, 3):  # the smallest groups first: per row normalized is per channel too
        for dims in itertools.combinations((0, 2, 3), size):
            mean, var = standard.mean(dims), standard.var(dims, unbiased=False)
            if mean.abs().max() < 1e-3 and (var - 1).abs().max() < 1e-3:
                return dims
    return None


def statistics_sentence(y: torch.Tensor, layer) -> str | None:
    """What the tutor says of a BatchNorm2d output normalized over other dims than (0, 2, 3)."""
    dims = normalized_over(y, layer)
    if dims is None or dims == (0, 2, 3):
        return None
    return (f"the output is normalized over dims {dims} of (N, C, H, W), not per channel: "
            "BatchNorm2d's mean and variance are each channel's, over its N H W values, "
            "dims (0, 2, 3) (the view (N, C, H W) that BatchNorm1d takes)")


@pytest.mark.parametrize("mode", MODES)
def test_batchnorm2d_forward_is_bit_identical_to_torch(mode):
    """float32, the dtype compare.py trains in: the output torch.equal to nn.BatchNorm2d's
    (the arithmetic of torch's CPU kernel, step for step), in training and in eval mode."""
    mine, theirs = twin_norms(IMAGES, mode, torch.float32)
    x = random_tensor(IMAGES, torch.float32, seed=1)
    y, expected = mine(x), theirs(x).detach()
    told = statistics_sentence(y, mine) if mode == "train" else None
    assert_bit_identical("hidden.batchnorm2d", y, expected, told)


def running_var_sentence(mine, before: torch.Tensor, x: torch.Tensor) -> str | None:
    """What the tutor says of a running_var updated with the biased batch variance."""
    n = x.numel() // x.shape[1]
    biased = before.lerp(x.var((0, 2, 3), unbiased=False), mine.momentum)
    if not torch.allclose(mine.running_var, biased):
        return None
    return (f"running_var is updated with the biased batch variance, divided by n = N H W = "
            f"{n}; torch's divides by n - 1 = {n - 1}: the running estimate is unbiased, "
            "though the normalization itself uses the biased one")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_batchnorm2d_running_statistics_after_a_step_are_torchs(dtype):
    """A training-mode forward: running_mean and running_var are nn.BatchNorm2d's (to 1e-12 in
    float64, within assert_close's tolerances in float32: lerp_ rounds otherwise than torch's
    kernel), the variance unbiased over each channel's n = N H W values (n / (n - 1) times the
    biased one), and num_batches_tracked one more."""
    mine, theirs = twin_norms(IMAGES, "train", dtype)
    before = mine.running_var.clone()
    x = random_tensor(IMAGES, dtype, seed=1)
    mine(x)
    theirs(x)
    assert_matches_torch("running_mean", mine.running_mean, theirs.running_mean)
    try:
        assert_matches_torch("running_var", mine.running_var, theirs.running_var)
    except Differs as error:
        told = running_var_sentence(mine, before, x)
        if told is None:
            raise
        raise Differs(str(error).split("\n")[0], told) from None
    assert int(mine.num_batches_tracked) == int(theirs.num_batches_tracked) == 1


def check_norm_backward(shape: tuple[int, ...], mode: str) -> None:
    """float64: the output, dLoss/dx, weight.grad and bias.grad of the manual layer, for a
    random upstream gradient g (never ones: with ones BatchNorm's true dLoss/dx is 0), against
    autograd through nn's twin, to 1e-12."""
    mine, theirs = twin_norms(shape, mode, torch.float64)
    x = random_tensor(shape, torch.float64, seed=1)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x_autograd = x.clone().requires_grad_()
    expected = theirs(x_autograd)
    expected.backward(g)
    assert_matches_torch("output", mine(x), expected.detach())
    assert_matches_torch("dLoss/dx", mine.backward(g), x_autograd.grad, batch_size=shape[0])
    for name in ("weight", "bias"):
        assert_matches_torch(f"{name}.grad", getattr(mine, name).grad,
                             getattr(theirs, name).grad, batch_size=shape[0])


@pytest.mark.parametrize("mode", MODES)
def test_batchnorm2d_backward_matches_autograd(mode):
    check_norm_backward(IMAGES, mode)


@pytest.mark.parametrize("mode", MODES)
def test_batchnorm1d_on_sequences_matches_autograd(mode):
    """BatchNorm1d's (N, C, L) case, the one BatchNorm2d runs on its view (N, C, H W)."""
    check_norm_backward(SEQUENCES, mode)


def test_batchnorm1d_on_sequences_keeps_torchs_running_statistics():
    mine, theirs = twin_norms(SEQUENCES, "train", torch.float64)
    x = random_tensor(SEQUENCES, torch.float64, seed=1)
    mine(x)
    theirs(x)
    for name in ("running_mean", "running_var"):
        assert_matches_torch(name, getattr(mine, name), getattr(theirs, name))


# AdaptiveAvgPool2d -------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_adaptive_avg_pool_matches_autograd(dtype):
    """(N, C, H, W) -> (N, C, 1, 1), the mean of each plane; dLoss/dx = g / (H W) on every
    entry of the plane."""
    pool = manual.layers.AdaptiveAvgPool2d((1, 1))
    x = random_tensor(IMAGES, dtype, seed=1)
    g = torch.randn(*IMAGES[:2], 1, 1, generator=torch.Generator().manual_seed(2), dtype=dtype)
    x_autograd = x.clone().requires_grad_()
    expected = torch.nn.AdaptiveAvgPool2d((1, 1))(x_autograd)
    expected.backward(g)
    assert_matches_torch("output", pool(x), expected.detach())
    assert_matches_torch("dLoss/dx", pool.backward(g), x_autograd.grad)


# The ResNet against torch_impl's -----------------------------------------------------------------

def twin_resnets(dtype: torch.dtype = torch.float64):
    """manual's ResNet and torch_impl's, each built right after torch.manual_seed(0)."""
    made = []
    for side in (manual, torch_impl):
        torch.manual_seed(0)
        made.append(side.model.ResNet(1, CHANNELS, 10, dtype=dtype))
    return made


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_resnet_initialization_and_names_equal_torch_impl(dtype):
    """The same parameters and buffers, bit for bit, under nn's names, in nn's order."""
    mine, theirs = twin_resnets(dtype)
    for named in ("named_parameters", "named_buffers"):
        ours, twin = getattr(mine, named)(), list(getattr(theirs, named)())
        assert [name for name, _ in ours] == [name for name, _ in twin], named
        for (name, tensor), (_, expected) in zip(ours, twin, strict=True):
            assert tensor.dtype == expected.dtype and torch.equal(tensor, expected.detach()), name
    assert "layers.4.conv1.weight" in dict(mine.named_parameters())
    assert "layers.9.bn2.running_var" in dict(mine.named_buffers())


def norms(model) -> list:
    """Every BatchNorm2d of a ResNet, the blocks' included, in nn's order: manual's, or
    torch_impl's (nn.Module.modules)."""
    if isinstance(model, torch.nn.Module):
        return [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)]
    found = []
    for layer in model.layers:
        children = [child for _, child in layer.named_children()] \
            if hasattr(layer, "named_children") else [layer]
        found += [child for child in children if type(child).__name__ == "BatchNorm2d"]
    return found


def test_resnet_train_and_eval_reach_every_batchnorm():
    """eval() puts every BatchNorm2d, the blocks' too, in eval mode, train() back, as nn's
    do; after a training-mode forward, the eval-mode logits (the running statistics) are
    torch's."""
    mine, theirs = twin_resnets()
    x = random_tensor((BATCH, 1, 28, 28), torch.float64, seed=1)
    mine(x)
    theirs(x)
    assert len(norms(mine)) == len(norms(theirs)) == 6
    for mode in (False, True):
        mine.train(mode)
        theirs.train(mode)
        assert [norm.training for norm in norms(mine)] == [
            norm.training for norm in norms(theirs)] == [mode] * 6, mode
    mine.eval()
    theirs.eval()
    with torch.no_grad():
        assert_matches_torch("logits (eval mode)", mine(x), theirs(x))


def learners(dtype: torch.dtype = torch.float64) -> list[Learner]:
    """The manual and the torch_impl Learner of the small ResNet, each built after
    torch.manual_seed(0): the manual one trains through its engine."""
    made = []
    for side in (manual, torch_impl):
        torch.manual_seed(0)
        made.append(Learner(side, 784, 10, {"lr": 0.1}, dtype=dtype, channels=CHANNELS,
                            resnet=True))
    return made


def batch(dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """BATCH flat images like MNIST's pixels, in [0, 1), and labels, from a seeded generator."""
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(BATCH, 784, generator=generator, dtype=dtype),
            torch.randint(0, 10, (BATCH,), generator=generator))


def blocks(learner: Learner) -> list[int]:
    """The indices of the learner's BasicBlocks among its model's layers."""
    return [index for index, layer in enumerate(learner.model.layers)
            if type(layer).__name__ == "BasicBlock"]


def skip_share(theirs: Learner, block: int) -> torch.Tensor:
    """Torch's dLoss/ds of the block's sum s = x + f(x), the share of its input's gradient
    that the skip passes on as it is: g_out where the block's output y = relu(s) > 0."""
    output = theirs.model.hidden_outputs[block]
    return output.grad * (output > 0)


def fork_sentence(name: str, actual: torch.Tensor, theirs: Learner, block: int) -> str | None:
    """What the tutor says of the gradient of block's input when one of its two shares is
    missing: the skip's, or the branch's; None when it is neither."""
    expected, skip = theirs.model.hidden_outputs[block - 1].grad, skip_share(theirs, block)
    tolerance = LIMIT * float(expected.abs().max())
    alone = [(kept, lost) for share, kept, lost in ((expected - skip, "branch", "skip"),
                                                     (skip, "skip", "branch"))
             if torch.allclose(actual, share, rtol=LIMIT, atol=tolerance)]
    if not alone:
        return None
    kept, lost = alone[0]
    return (f"{name} is the {kept}'s share alone, without the {lost}'s: x forks into conv1 "
            f"and the add of the block layers.{block}, and its gradient is the sum of the "
            "two; record x itself as the add's first input (basic_block), and add (+) the "
            "two gradients where they meet (backward)")


def block_sentence(name: str, actual: torch.Tensor, theirs: Learner, block: int) -> str | None:
    """What the tutor says of a block's output that is x + relu(f(x)): the ReLU before the add."""
    module = copy.deepcopy(theirs.model.layers[block])  # its running statistics stay
    x = theirs.model.hidden_outputs[block - 1].detach()
    with torch.no_grad():
        branch = module.bn2(module.conv2(module.relu(module.bn1(module.conv1(x)))))
    if not torch.allclose(actual, x + branch.relu()):
        return None
    return (f"{name} is x + relu(f(x)): the block's ReLU comes after the add, "
            "y = relu(x + f(x)), so that the skip and the branch are summed before it")


def check_engine(sides: list[Learner], x: torch.Tensor, y: torch.Tensor) -> None:
    """One step of both learners: every hidden output and the loss (the forward), then every
    named gradient (compare.py's order: dLoss/dlogits, then from the top layer down each
    layer's parameters' and the gradient of its input) within LIMIT of torch's. A failure
    says what the tutor says, or what is wrong at a block or its fork."""
    mine, theirs = sides
    loss, their_loss = mine.gradients(x, y), theirs.gradients(x, y).detach()
    forks = {index - 1: index for index in blocks(theirs)}
    for index, ((name, ours), (_, twin)) in enumerate(zip(
            mine.named_hidden_outputs(), theirs.named_hidden_outputs(), strict=True)):
        told = block_sentence(name, ours, theirs, index) if index in forks.values() else None
        assert_within(name, ours, twin.detach(), told, len(y))
    assert_agrees("loss", loss, their_loss, LIMIT)
    names = {name: index for index, (name, _) in enumerate(theirs.named_hidden_outputs())}
    for (name, ours), (their_name, twin) in zip(mine.named_gradients(),
                                                theirs.named_gradients(), strict=True):
        assert name == their_name
        key, below = tensor_key("grad", name), names.get(name)
        told = fork_sentence(f"dLoss/d({name})", ours, theirs, forks[below]) \
            if below in forks else None
        assert_within(key, ours, twin, told, len(y), y if name == "logits" else None)


def assert_within(name: str, actual, expected, told: str | None, batch_size: int,
                  targets: torch.Tensor | None = None) -> None:
    """assert_agrees within LIMIT; where told is given, a failure says it instead."""
    try:
        assert_agrees(name, actual, expected, LIMIT, batch_size, targets)
    except Differs as error:
        if told is None:
            raise
        raise Differs(str(error).split("\n")[0], told) from None


def test_the_engines_gradients_are_torchs_forks_included():
    """float64, channels (4, 8), 6 images: every gradient within 1e-10 of loss.backward()'s,
    each block's input's (the hidden output below it, where x forks) the sum of its shares."""
    sides = learners()
    check_engine(sides, *batch())
    names = [name for name, _ in sides[0].named_gradients()]
    assert {"hidden.maxpool2d.3", "hidden.maxpool2d.8", "layers.4.conv1.weight",
            "layers.9.bn2.bias", "layers.0.weight"} <= set(names)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_the_resnets_graph_matches_torchs_node_by_node(dtype):
    """lockstep.graph.check (compare.py --graph): GRAPH MATCH, the blocks' AddBackward0 with
    x itself (the maxpool's node) on its first edge."""
    limit = {torch.float32: 1e-4, torch.float64: LIMIT}[dtype]
    result = graph.check(learners(dtype), *batch(dtype), limit)
    if not result.match:  # the verdict names the first node that differs, and how
        raise Differs("the ResNet's graph is not torch's", graph.verdict(result))
    adds = [pair for pair in result.pairs if graph.name(pair.torch) == "AddBackward0"]
    assert sorted(pair.layer for pair in adds) == ["layers.4", "layers.9"]
    assert all(graph.name(pair.manual.next_functions[0][0]) == "MaxPool2DWithIndicesBackward0"
               for pair in adds)
    assert graph.verdict(result).startswith("GRAPH MATCH: ")


# Broken twins: each check above can fail -----------------------------------------------------

def recorded_branch(block, x):
    """f(x) recorded as functions.basic_block records it, for its broken twins below."""
    functions = manual.functions
    for _, layer in block.named_children():
        x = functions.LAYER_OPS[functions.layer_kind(layer)](layer, x)
    return x


def detached_skip(block, x):
    """A broken twin of functions.basic_block: the add takes a copy of x that requires no
    gradient, so the skip's share never reaches x."""
    functions = manual.functions
    branch = recorded_branch(block, x)
    return functions.relu(block.relu, functions.add(manual.autograd.Variable(x.data), branch))


@pytest.mark.twin
@pytest.mark.parametrize("broken", ["engine-overwrites", "detached-skip"])
def test_the_skip_lost_at_the_fork_is_named(monkeypatch, broken):
    """The last block's input gets the branch's share alone: torch's minus the skip's, dLoss/ds
    = g_out (y > 0); the engine check fails at that fork, the first from the top, saying so.
    (Below it every gradient is off already: the first block's share is not torch's.)"""
    if broken == "engine-overwrites":
        monkeypatch.setattr(manual.autograd, "backward", overwriting)
    else:
        monkeypatch.setitem(manual.functions.LAYER_OPS, "BasicBlock", detached_skip)
    sides = learners()
    with pytest.raises(Differs) as error:
        check_engine(sides, *batch())
    assert error.value.told.startswith(
        "dLoss/d(hidden.maxpool2d.8) is the branch's share alone, without the skip's: x forks "
        "into conv1 and the add of the block layers.9")
    mine, theirs = sides
    block = blocks(theirs)[-1]
    branch = theirs.model.hidden_outputs[block - 1].grad - skip_share(theirs, block)
    assert_agrees("the branch's share", mine.model.hidden_outputs[block - 1].grad, branch, LIMIT)


def per_row(self, x):
    """A broken twin of BatchNorm2d.forward in training mode: each (channel, row)'s statistics,
    over dims (0, 3), where a channel's are over (0, 2, 3)."""
    mean = x.mean((0, 3), keepdim=True)
    inv_std = 1 / (x.var((0, 3), unbiased=False, keepdim=True) + self.eps).sqrt()
    return (x - mean) * inv_std * self.weight.view(-1, 1, 1) + self.bias.view(-1, 1, 1)


@pytest.mark.twin
def test_batchnorm2d_per_row_is_caught(monkeypatch):
    for name in ("forward", "__call__"):
        monkeypatch.setattr(manual.layers.BatchNorm2d, name, per_row)
    with pytest.raises(Differs) as error:
        test_batchnorm2d_forward_is_bit_identical_to_torch("train")
    assert error.value.told.startswith(
        "the output is normalized over dims (0, 3) of (N, C, H, W), not per channel")


@pytest.mark.twin
def test_batchnorm2d_biased_running_variance_is_caught(monkeypatch):
    right = manual.layers.BatchNorm2d.forward

    def biased(self, x):
        before = self.running_var.clone()
        y = right(self, x)
        if self.training:
            self.running_var.copy_(before.lerp(x.var((0, 2, 3), unbiased=False), self.momentum))
        return y

    for name in ("forward", "__call__"):
        monkeypatch.setattr(manual.layers.BatchNorm2d, name, biased)
    with pytest.raises(Differs) as error:
        test_batchnorm2d_running_statistics_after_a_step_are_torchs(torch.float32)
    n = IMAGES[0] * IMAGES[2] * IMAGES[3]
    assert error.value.told.startswith(
        f"running_var is updated with the biased batch variance, divided by n = N H W = {n}; "
        f"torch's divides by n - 1 = {n - 1}")


def relu_before_the_add(block, x):
    """A broken twin of functions.basic_block: y = x + relu(f(x))."""
    functions = manual.functions
    return functions.add(x, functions.relu(block.relu, recorded_branch(block, x)))


@pytest.mark.twin
def test_the_blocks_relu_before_the_add_is_caught(monkeypatch):
    """The engine check fails at the first block's output, saying where the ReLU belongs; the
    graph check finds an AddBackward0 where torch's has the last block's ReluBackward0."""
    monkeypatch.setitem(manual.functions.LAYER_OPS, "BasicBlock", relu_before_the_add)
    with pytest.raises(Differs) as error:
        check_engine(learners(), *batch())
    assert error.value.told.startswith(
        "hidden.basicblock.4 is x + relu(f(x)): the block's ReLU comes after the add")
    result = graph.check(learners(), *batch(), LIMIT)
    assert not result.match
    assert [pair.layer for pair in result.pairs if "named AddBackward0 where torch's is "
            "ReluBackward0" in pair.problems] == ["layers.9"]  # the walk stops there
