"""lockstep.graph: manual's graph (manual/functions.py, manual/autograd.py) held against the
one torch's loss.backward() walks, node by node, and the tutor's sentence for a wrong node.

- Each model (softmax regression, the MLP with and without BatchNorm1d, the CNN), with and
  without label smoothing, in float32 and float64: GRAPH MATCH, the same nodes, edges, saved
  tensors (torch saves only what the needed gradients use: the first Linear's addmm saves
  no weight, since the images need no gradient) and order, and every node's gradients, fed
  torch's, within the limit; the nodes whose formulas are torch's own operations
  bit-identical.
- Each kind of node on its own, fed torch's incoming gradient (a check of its own, so that
  the grader counts it for the layer backward it runs): within 1e-10 in float64; else the
  tutor's node sentence, which the grader shows.
- Broken twins: Linear recorded as one node, an addmm wired in another order, a ReLU that
  saves its input, an engine that runs a plain depth-first order, and a Conv2d.backward
  whose dLoss/dx flips the kernel: each one's GRAPH MISMATCH, or the tutor's node sentence.
"""

import pytest
import torch

import manual
import torch_impl
from lockstep import graph
from lockstep.learner import Learner
from tests.helpers import Differs

MODELS = {"softmax": {}, "mlp": {"hidden": 8}, "mlp-batchnorm": {"hidden": 8, "batchnorm": True},
          "cnn": {"channels": (2, 3)}}
NODES = {  # the nodes of each model's layers, then those of the loss with label smoothing
    "softmax": ["AddmmBackward0", "TBackward0"],
    "mlp": ["AddmmBackward0", "TBackward0", "ReluBackward0"],
    "mlp-batchnorm": ["AddmmBackward0", "TBackward0", "ReluBackward0",
                      "NativeBatchNormBackward0", "MmBackward0"],
    "cnn": ["AddmmBackward0", "TBackward0", "ViewBackward0", "MaxPool2DWithIndicesBackward0",
            "ReluBackward0", "ConvolutionBackward0"],
}
LOSS_NODES = ["NllLossBackward0", "LogSoftmaxBackward0", "AddBackward0", "MulBackward1",
              "DivBackward0", "SumBackward0", "MaskedFillBackward0", "NegBackward0",
              "SumBackward1"]
LIMITS = {torch.float32: 1e-4, torch.float64: 1e-10}  # lockstep.limits, the lock step's own
# The nodes whose formula is not the operations torch's kernel runs (lockstep.graph.KERNELS)
ROUNDING = {"LogSoftmaxBackward0", "NativeBatchNormBackward0", "ConvolutionBackward0"}


def learners(model: str, label_smoothing: float = 0.1, dtype: torch.dtype = torch.float64,
             engine: bool = False) -> list[Learner]:
    made = []
    for side in (manual, torch_impl):
        torch.manual_seed(0)
        made.append(Learner(side, 784, 10, {"lr": 0.1}, label_smoothing, dtype=dtype,
                            engine=engine, **MODELS[model]))
    return made


def batch(dtype: torch.dtype = torch.float64, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return (torch.rand(n, 784, generator=generator, dtype=dtype),
            torch.randint(0, 10, (n,), generator=generator))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("model", MODELS)
def test_graph_matches_torch_node_by_node(model, label_smoothing, dtype):
    result = graph.check(learners(model, label_smoothing, dtype), *batch(dtype), LIMITS[dtype])
    assert result.match, graph.verdict(result)
    assert len(result.runs) == len(result.pairs)  # torch ran every node it has, and so did manual
    names = {graph.name(pair.torch) for pair in result.pairs}
    assert set(NODES[model]) <= names
    assert set(LOSS_NODES) <= names if label_smoothing else "AddBackward0" not in names
    for pair in result.pairs:
        exact = graph.name(pair.torch) not in ROUNDING and "~" not in pair.saved.values()
        if exact:  # the same operations on the same saved tensors: the same bits
            assert all(d in (0.0, None) for d in pair.grads), (graph.name(pair.torch), pair.grads)
    assert graph.verdict(result).startswith("GRAPH MATCH: ")


def test_the_first_layer_saves_no_weight_as_torch_does():
    """The images need no gradient, so the first addmm needs no W (dLoss/dx = g W): torch
    saves none, and the graph check holds manual to that."""
    result = graph.check(learners("mlp"), *batch(), LIMITS[torch.float64])
    first = next(pair for pair in result.pairs if pair.layer == "layers.0"
                 and graph.name(pair.torch) == "AddmmBackward0")
    assert first.torch._saved_mat2 is None and first.manual._saved_mat2 is None
    assert first.saved == {"mat1": "="}


@pytest.mark.parametrize(("model", "node"), [(model, node) for model in MODELS
                                             for node in NODES[model] + LOSS_NODES])
def test_each_node_fed_torchs_gradient_returns_torchs(model, node):
    """Only the manual nodes named `node` run, each on the gradient torch's node received."""
    sides = learners(model)
    x, y = batch()
    (ours, layers, params), (theirs, _, _) = (graph.record(learner, x, y) for learner in sides)
    pairs = [pair for pair in graph.walk((ours.grad_fn, theirs.grad_fn), (layers, params))
             if graph.name(pair.torch) == node]
    assert pairs and not any(pair.problems for pair in pairs)
    _, incoming, outgoing = graph.hooked(theirs.grad_fn)
    theirs.backward()
    graph.fed(pairs, incoming, outgoing, LIMITS[torch.float64])
    for pair in pairs:
        if not pair.grads or pair.problems:
            sentence = graph.node_sentence(pair, sides[0].package, LIMITS[torch.float64])
            raise Differs(f"{node} ({pair.layer}): {pair.problems}", sentence)


def linear_as_one_node(layer, x):
    """A broken twin: nn.Linear recorded as one node of its own, not t and addmm."""
    functions, weight, bias = manual.functions, layer.weight, layer.bias
    output = torch.addmm(bias, x.data, weight.T)
    return functions.record("LinearBackward0", lambda grad, needs, input: (
        grad @ weight, grad.T @ input, grad.sum(0)), output,
        [x, functions.parameter(weight), functions.parameter(bias)], {"input": x})


def addmm_wired_otherwise(bias, mat1, mat2):
    """A broken twin: addmm's edges in another order than torch's (mat2 before mat1)."""
    functions = manual.functions
    output = torch.addmm(bias.data, mat1.data, mat2.data)
    return functions.record("AddmmBackward0", lambda grad, needs, mat1: (
        grad.sum(0), (grad.T @ mat1).T, None), output, [bias, mat2, mat1], {"mat1": mat1})


def relu_saving_its_input(layer, x):
    """A broken twin: a ReLU node that saves its input where torch's saves its result."""
    result = layer.forward(x.data)
    return manual.functions.record("ReluBackward0", lambda grad, needs, self: (
        grad * (self > 0),), result, [x], {"self": x})


@pytest.mark.twin
@pytest.mark.parametrize(("table", "key", "broken", "caught"), [
    ("LAYER_OPS", "Linear", linear_as_one_node,
     "LinearBackward0 (layers.2): named LinearBackward0 where torch's is AddmmBackward0"),
    (None, "addmm", addmm_wired_otherwise, "AddmmBackward0 (layers.2): edge 2 leads to"),
    ("LAYER_OPS", "ReLU", relu_saving_its_input,
     "ReluBackward0 (layers.1): saves result as nothing where torch's saves a tensor"),
], ids=["linear-as-one-node", "addmm-wired-otherwise", "relu-saves-its-input"])
def test_a_graph_unlike_torchs_is_a_graph_mismatch(monkeypatch, table, key, broken, caught):
    if table:
        monkeypatch.setitem(getattr(manual.functions, table), key, broken)
    else:
        monkeypatch.setattr(manual.functions, key, broken)
    result = graph.check(learners("mlp"), *batch(), LIMITS[torch.float64])
    assert not result.match
    assert graph.verdict(result).startswith(f"GRAPH MISMATCH: {caught}")


def depth_first(tensor, gradient=None, retain_graph=False):
    """A broken twin of autograd.backward: each node as soon as one edge reaches it, last
    reached first (a stack), its gradient however much has arrived: not torch's order."""
    buffers, stack = {tensor.grad_fn: torch.ones_like(tensor.data)}, [tensor.grad_fn]
    while stack:
        node = stack.pop()
        for (target, _), grad in zip(node.next_functions, manual.autograd.run(
                node, buffers.pop(node), retain_graph), strict=True):
            if target is not None and grad is not None:
                buffers[target] = grad
                stack.append(target)


@pytest.mark.twin
def test_an_order_unlike_torchs_is_a_graph_mismatch(monkeypatch):
    monkeypatch.setattr(manual.autograd, "backward", depth_first)
    result = graph.check(learners("mlp", 0.0), *batch(), LIMITS[torch.float64])
    assert result.order is not None
    assert graph.verdict(result).startswith(  # a stack runs addmm's last edge first
        "GRAPH MISMATCH: the order: node 4 to run is TBackward0 (layers.2) in manual's "
        "backward, AccumulateGrad (layers.2.bias) in torch's")


@pytest.mark.twin
def test_a_flipped_kernel_is_named_at_its_node(monkeypatch):
    """The tutor's node sentence for a Conv2d.backward whose dLoss/dx uses the kernel
    unrotated: the node, the gradient that differs, the two that agree, the formula's line."""
    right = manual.layers.Conv2d.backward

    def flipped(self, grad_output, needs_input_grad=True):
        grad_input = right(self, grad_output, needs_input_grad)  # and the right weight.grad
        if grad_input is None:
            return None
        weight, self.weight = self.weight, self.weight.flip(-2, -1)
        try:
            return right(self, grad_output, needs_input_grad)
        finally:
            self.weight = weight

    monkeypatch.setattr(manual.layers.Conv2d, "backward", flipped)
    sides = learners("cnn")
    sentence = graph.first_wrong_node(sides, *batch(), LIMITS[torch.float64])
    assert sentence is not None and sentence.startswith(
        "ConvolutionBackward0 (layers.3), its gradient for the input, differs when fed "
        "torch's grad_output; its weight and bias gradients agree; the formula is ")
    assert sentence.endswith(f"test_graph.py line {flipped.__code__.co_firstlineno}")
    monkeypatch.undo()
    assert graph.first_wrong_node(learners("cnn"), *batch(), LIMITS[torch.float64]) is None


def overwriting(tensor, gradient=None, retain_graph=False):
    """A broken twin of autograd.backward: torch's order, but a node's buffer overwritten (=)
    by each edge that delivers, not added to: a tensor used twice keeps one path's share."""
    waiting = manual.autograd.dependencies(tensor.grad_fn)
    buffers, ready = {tensor.grad_fn: torch.ones_like(tensor.data)}, [tensor.grad_fn]
    while ready:
        node = max(ready, key=lambda node: node.sequence_nr)
        ready.remove(node)
        grads = manual.autograd.run(node, buffers.pop(node, None), retain_graph)
        for (target, _), grad in zip(node.next_functions, grads, strict=True):
            if target is not None:
                if grad is not None:
                    buffers[target] = grad
                waiting[target] -= 1
                if waiting[target] == 0:
                    ready.append(target)


@pytest.mark.twin
def test_a_walk_that_overwrites_at_fan_out_is_named(monkeypatch):
    """With label smoothing, log_softmax's output feeds two nodes (nll_loss and the sum):
    an engine that overwrites keeps one share, though every node is right fed torch's."""
    monkeypatch.setattr(manual.autograd, "backward", overwriting)
    sides = learners("mlp", 0.1, engine=True)
    x, y = batch()
    for side in sides:
        side.gradients(x, y)
    assert not torch.allclose(sides[0].last_logits.grad, sides[1].last_logits.grad)
    sentence = graph.first_wrong_node(sides, x, y, LIMITS[torch.float64])
    assert sentence == (
        "every node returns torch's gradients when fed torch's, so the walk is wrong: "
        f"test_graph.overwriting (tests/test_graph.py line "
        f"{overwriting.__code__.co_firstlineno}) must add (+) the gradient of every edge into "
        "its node's buffer, and run a node only once all its edges have delivered")
