"""manual/autograd.py and manual/functions.py, the engine by hand, against torch's autograd.

Each check holds the engine against torch itself (torch_impl's models built after the same
seed, or the same operations on torch's tensors), never against numbers typed in. A prehook
on every node, on both sides, records the order the nodes run in.

- Small graphs. A leaf used by two operations gets the sum of both paths. A node with two
  parents runs once, after both, and every node runs in torch's order. A leaf's .grad adds up
  over backward() calls (retain_graph=True) and SGD.zero_grad clears it. A second backward()
  raises torch's error, word for word, without retain_graph, and passes with it, as torch's
  does. A saved tensor changed in place raises torch's error. .grad of a non-leaf warns in
  torch's words and is None, unless retain_grad() was called. no_grad() records nothing.
- Each model (softmax regression, the MLP with and without BatchNorm, the CNN), label
  smoothing 0 and 0.1: the graph that functions.forward and functions.cross_entropy record is
  torch's, node for node (names, edges with their input index, the order of the sequence
  numbers); backward runs the nodes in torch's order and fills dLoss/dlogits and every
  parameter's .grad as torch does; and the chain (model.backward), fed the engine's
  dLoss/dlogits, gives the same bits: the engine adds to the layers' formulas only their order
  and the sums at fan-out.
- Broken twins (marker twin) fail these checks: an engine that overwrites (=) where it must
  add (+) at fan-out, an AccumulateGrad that overwrites .grad, an engine that never frees the
  saved tensors, one without the version check, one that runs the ready nodes from a stack or
  a queue instead of by sequence number (its gradients are still right: only the order check
  sees it), nn.Linear recorded as one node "LinearBackward0", and addmm's edges in another
  order.

python -m pytest --manual DIR grades DIR's autograd.backward (the exercise "backward") with
these checks: they reach the engine as manual.autograd and manual.functions, DIR's own.
"""

import inspect
import re
import textwrap
import warnings
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
import torch

import manual.model
import torch_impl.functions
import torch_impl.model
from manual import autograd, functions
from manual.autograd import Variable
from manual.layers import Linear, ReLU
from manual.optim import SGD
from tests.helpers import (
    DTYPE_IDS,
    DTYPES,
    Differs,
    assert_matches_torch,
    one_thread,
    random_batch,
)

N = 5  # examples a batch: BatchNorm needs 2 or more
# Each model: how to build it from manual.model or torch_impl.model, and one example's shape.
MODELS = {
    "softmax": (lambda models, dtype: models.SoftmaxRegression(784, 10, dtype=dtype), (784,)),
    "mlp": (lambda models, dtype: models.MLP(784, 8, 10, dtype=dtype), (784,)),
    "mlp-batchnorm": (lambda models, dtype: models.MLP(784, 8, 10, batchnorm=True, dtype=dtype),
                      (784,)),
    "cnn": (lambda models, dtype: models.CNN(1, (2, 3), dtype=dtype), (1, 28, 28)),
}
LABEL_SMOOTHING = [0.0, 0.1]
SMOOTHING_IDS = ["no-smoothing", "smoothing-0.1"]
# The engine's line that adds at fan-out, and the mistake of writing = instead
# (test_exercises.py seeds the same mistake into a learner's folder).
ADDS_AT_FAN_OUT = ("buffers[target] = grad if buffers.get(target) is None else "
                   "buffers[target] + grad")
OVERWRITES_AT_FAN_OUT = "buffers[target] = grad"


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Every test of this file on one thread (tiny tensors; see helpers.one_thread)."""
    with one_thread():
        yield


# The two sides -------------------------------------------------------------------------------

def twins(kind: str, dtype: torch.dtype = torch.float64, seed: int = 0):
    """manual's model of MODELS[kind] and torch_impl's, each built right after
    torch.manual_seed(seed), and a batch: x (N, ...) like MNIST's pixels, y (N,)."""
    make, shape = MODELS[kind]
    torch.manual_seed(seed)
    mine = make(manual.model, dtype)
    torch.manual_seed(seed)
    theirs = make(torch_impl.model, dtype)
    x, y = random_batch(N, 784, 10, dtype)
    return mine, theirs, x.reshape(N, *shape), y


@dataclass
class Recorded:
    """One batch through both models: the loss and the logits (each kept with retain_grad),
    recorded by manual.functions on one side and by torch's autograd on the other."""
    mine: object
    theirs: torch.nn.Module
    loss: Variable
    their_loss: torch.Tensor
    logits: Variable
    their_logits: torch.Tensor
    y: torch.Tensor


def recorded(kind: str, label_smoothing: float, dtype: torch.dtype = torch.float64) -> Recorded:
    mine, theirs, x, y = twins(kind, dtype)
    logits, _ = functions.forward(mine, Variable(x))
    logits.retain_grad()
    their_logits, _ = torch_impl.functions.forward(theirs, x)
    their_logits.retain_grad()
    return Recorded(mine, theirs, functions.cross_entropy(logits, y, label_smoothing),
                    torch_impl.functions.cross_entropy(their_logits, y, label_smoothing),
                    logits, their_logits, y)


class TorchOps:
    """The operations of manual.functions that the small graphs use, on torch's tensors, each
    recording the node functions' records: a product by a number is aten's mul.Scalar
    (MulBackward1), as in F.cross_entropy; Python's x * 2.0 would be MulBackward0."""
    neg = staticmethod(torch.neg)
    mul = staticmethod(torch.ops.aten.mul.Scalar)
    add = staticmethod(torch.add)
    relu = staticmethod(torch.relu)

    @staticmethod
    def sum(x: torch.Tensor, dim: int | None = None) -> torch.Tensor:
        return x.sum() if dim is None else x.sum(dim)


def manual_ops() -> SimpleNamespace:
    """The same operations from manual.functions (looked up now: a grading's folder's own)."""
    return SimpleNamespace(neg=functions.neg, mul=functions.mul, add=functions.add,
                           sum=functions.sum, relu=lambda x: functions.relu(ReLU(), x))


def leaves(shape: tuple[int, ...] = (3, 4), seed: int = 3) -> tuple[Variable, torch.Tensor]:
    """The same random values as a manual leaf and a torch leaf, each requiring grad."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return Variable(x.clone(), requires_grad=True), x.clone().requires_grad_()


def upstream(shape: torch.Size, seed: int = 4) -> torch.Tensor:
    """A random dLoss/d(output) to start backward from: ones would hide a factor."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def used_twice(ops, x):
    """x * 2 + x * 3: two edges lead to x's AccumulateGrad."""
    return ops.add(ops.mul(x, 2.0), ops.mul(x, 3.0))


def two_parents(ops, x):
    """h = -x feeds two products; their sums (over dim 1) are added, the later one first, so
    that of the two ready sums the one with the larger sequence number is the second edge."""
    h = ops.neg(x)
    first = ops.sum(ops.mul(h, 2.0), dim=1)
    second = ops.sum(ops.mul(h, 3.0), dim=1)
    return ops.add(second, first)


def raised(call) -> RuntimeError | None:
    """The RuntimeError call() raised, or None. A NotImplementedError (a RuntimeError too),
    such as an exercise's stub, goes on up: the grader skips the check then."""
    try:
        call()
    except NotImplementedError:
        raise
    except RuntimeError as error:
        return error
    return None


# The graph and the order its nodes run in --------------------------------------------------

def graph(root) -> tuple[list, list[tuple[str, tuple]]]:
    """The nodes that can be reached from root, in the order a breadth-first walk over
    next_functions meets them, and each as (its name, its edges): the name without torch's
    "torch::autograd::" ("AccumulateGrad"), each edge as (the index in that list of the node
    it leads to and that node's name, or None twice, then its input index). The same for
    manual's nodes and torch's."""
    nodes, index = [root], {id(root): 0}
    for node in nodes:  # the list grows as the walk goes
        for target, _ in node.next_functions:
            if target is not None and id(target) not in index:
                index[id(target)] = len(nodes)
                nodes.append(target)
    described = [(short_name(node), tuple(
        (None, None, number) if target is None else
        (index[id(target)], short_name(target), number) for target, number in node.next_functions))
        for node in nodes]
    return nodes, described


def watched(root) -> tuple[list, list[int]]:
    """graph(root)'s nodes, and the list each one's prehook appends its index to when it
    runs: the order of the run, once backward has run."""
    nodes, _ = graph(root)
    ran = []
    for number, node in enumerate(nodes):
        node.register_prehook(lambda grads, number=number: ran.append(number))
    return nodes, ran


def short_name(node) -> str:
    """node.name() without torch's "torch::autograd::" ("AccumulateGrad")."""
    return node.name().split("::")[-1]


def name_of(nodes: list, number: int) -> str:
    return f"{short_name(nodes[number])} (node {number})"


def assert_runs_in_torchs_order(nodes: list, ran: list[int], their_nodes: list,
                                their_ran: list[int]) -> None:
    """The nodes ran as torch's did: each once, in the same order (indices of graph())."""
    if ran == their_ran:
        return
    names = ", ".join(name_of(nodes, number) for number in ran)
    message = f"the nodes ran in the order {names}; torch's: " + ", ".join(
        name_of(their_nodes, number) for number in their_ran)
    twice = sorted({number for number in ran if ran.count(number) > 1})
    if twice:
        told = (f"{name_of(nodes, twice[0])} ran {ran.count(twice[0])} times, torch's once: "
                "run a node once, when every edge into it has delivered its gradient (its "
                "count from dependencies() reaches 0)")
    elif sorted(ran) != sorted(their_ran):
        told = (f"the nodes did not run as torch's: {len(ran)} of {len(nodes)} ran, "
                f"{len(their_ran)} of torch's {len(their_nodes)}: run every node that can be "
                "reached from the loss, once")
    else:
        at = next(step for step, (a, b) in enumerate(zip(ran, their_ran, strict=True))
                  if a != b)
        told = (f"the nodes ran in another order than torch's: {name_of(nodes, ran[at])} ran "
                f"{ordinal(at + 1)}, where torch's runs {name_of(their_nodes, their_ran[at])}: "
                "of the ready nodes, run the one with the largest sequence number first "
                "(AccumulateGrad's is the largest of all)")
    raise Differs(message, told)


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, ..., 21st."""
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{'th' if 10 <= number % 100 <= 20 else suffix}"


def assert_sum_of_paths(name: str, actual: torch.Tensor | None, expected: torch.Tensor,
                        paths: list[torch.Tensor]) -> None:
    """actual, the gradient of a tensor used on several paths, against torch's; where it is
    the gradient along one path alone (paths: torch's, one per path), say so."""
    try:
        assert_matches_torch(name, actual, expected)
    except Differs as error:
        alone = actual is not None and any(
            path.shape == actual.shape and torch.allclose(actual, path) for path in paths)
        if not alone:
            raise
        raise Differs(str(error), f"{name} is the gradient along one of its {len(paths)} paths "
                      "alone; torch's is their sum: at fan-out, add (+) each gradient into the "
                      "target's buffer, never replace (=) what is there") from None


def path_gradients(paths, x: torch.Tensor, gradient: torch.Tensor) -> list[torch.Tensor]:
    """Torch's dLoss/dx along each path alone: path(x) for each of paths, from gradient."""
    return [torch.autograd.grad(path(x), x, gradient)[0] for path in paths]


# Small graphs --------------------------------------------------------------------------------

def test_a_leaf_used_twice_gets_the_sum_of_both_paths():
    """y = x * 2 + x * 3 from a random dLoss/dy: x.grad is torch's, the sum over the paths."""
    x, their_x = leaves()
    y, their_y = used_twice(manual_ops(), x), used_twice(TorchOps, their_x)
    gradient = upstream(y.shape)
    autograd.backward(y, gradient)
    their_y.backward(gradient)
    paths = path_gradients([lambda x: TorchOps.mul(x, 2.0), lambda x: TorchOps.mul(x, 3.0)],
                           their_x.detach().requires_grad_(), gradient)
    assert_sum_of_paths("x.grad", x.grad, their_x.grad, paths)


def test_a_node_with_two_parents_runs_once_after_both_in_torchs_order():
    """h = -x feeds two products, whose sums are added, the later one first: the graph is
    torch's, NegBackward0 runs once, after both its parents, every node in torch's order
    (a stack or a queue of ready nodes would run the first sum first), and x.grad is torch's."""
    x, their_x = leaves()
    y, their_y = two_parents(manual_ops(), x), two_parents(TorchOps, their_x)
    nodes, ran = watched(y.grad_fn)
    their_nodes, their_ran = watched(their_y.grad_fn)
    assert graph(y.grad_fn)[1] == graph(their_y.grad_fn)[1]
    gradient = upstream(y.shape)
    autograd.backward(y, gradient)
    their_y.backward(gradient)
    paths = path_gradients([lambda x: TorchOps.sum(TorchOps.mul(x.neg(), 2.0), dim=1),
                            lambda x: TorchOps.sum(TorchOps.mul(x.neg(), 3.0), dim=1)],
                           their_x.detach().requires_grad_(), gradient)
    assert_sum_of_paths("x.grad", x.grad, their_x.grad, paths)
    assert_runs_in_torchs_order(nodes, ran, their_nodes, their_ran)


@pytest.mark.parametrize("kind", MODELS)
def test_grad_adds_up_over_backward_calls_and_zero_grad_clears_it(kind):
    """Two backward() calls through one graph (retain_graph=True on the first): every
    parameter's .grad, and dLoss/dlogits kept by retain_grad, are torch's, the sums of both
    calls; then SGD.zero_grad sets each .grad to None, as torch's does."""
    run = recorded(kind, 0.1)
    autograd.backward(run.loss, retain_graph=True)
    autograd.backward(run.loss)
    run.their_loss.backward(retain_graph=True)
    run.their_loss.backward()
    assert_matches_torch("logits.grad (two calls)", run.logits.grad, run.their_logits.grad)
    for (name, mine), (_, theirs) in zip(run.mine.named_parameters(),
                                         run.theirs.named_parameters(), strict=True):
        assert_matches_torch(f"{name}.grad (two calls)", mine.grad, theirs.grad)
    SGD(run.mine.parameters(), lr=0.1).zero_grad()
    torch.optim.SGD(run.theirs.parameters(), lr=0.1).zero_grad()
    assert [param.grad for param in run.mine.parameters()] == [
        param.grad for param in run.theirs.parameters()] == [None] * len(
        list(run.theirs.parameters()))


@pytest.mark.parametrize("retain_graph", [False, True], ids=["freed", "retained"])
def test_a_second_backward_fails_or_passes_as_torchs(retain_graph):
    """The MLP's loss, backward twice: without retain_graph on the first, the second raises
    torch's RuntimeError, word for word (the saved tensors are freed); with it, it passes on
    both sides and the gradients add up to torch's."""
    run = recorded("mlp", 0.0)
    autograd.backward(run.loss, retain_graph=retain_graph)
    run.their_loss.backward(retain_graph=retain_graph)
    theirs = raised(run.their_loss.backward)
    assert (theirs is None) == retain_graph, theirs  # torch's own behaviour, to start from
    mine = raised(lambda: autograd.backward(run.loss))
    if theirs is not None and mine is None:
        raise Differs("a second backward() without retain_graph passed", "a second backward() "
                      "without retain_graph=True passed, where torch's raises: free each "
                      "node's saved tensors once it has run, unless retain_graph (pass "
                      "retain_graph to run())")
    if theirs is None and mine is not None:
        raise Differs(f"a second backward() with retain_graph raised: {mine}", "a second "
                      "backward() after one with retain_graph=True raised, where torch's "
                      f"passes ({mine}): free the saved tensors only without retain_graph")
    if theirs is not None:
        assert str(mine) == str(theirs)
        return
    for (name, param), (_, their_param) in zip(run.mine.named_parameters(),
                                               run.theirs.named_parameters(), strict=True):
        assert_matches_torch(f"{name}.grad (two calls)", param.grad, their_param.grad)


def without_maker(message: str) -> str:
    """An in-place error's text, with the op its tensor came from named without "Backward0"
    (torch 2.14 says "output 0 of Relu"; earlier ones, as manual does, "of ReluBackward0")
    and without torch's hint on anomaly detection."""
    return re.sub(r"(output \d+ of \w+?)Backward\d+,", r"\1,", message.split(" Hint:")[0])


def test_a_saved_tensor_changed_in_place_raises_torchs_error():
    """y = relu(x) saves y; y changed in place before backward: both raise the same error.
    manual's Variable has no add_: its tensor, .data, is changed. torch's .data is another
    tensor with a version counter of its own, so there y itself is."""
    x, their_x = leaves()
    y, their_y = manual_ops().relu(x), TorchOps.relu(their_x)
    loss, their_loss = functions.sum(y), TorchOps.sum(their_y)
    y.data.add_(1)
    their_y.add_(1)
    assert y._version == their_y._version == 1
    theirs = raised(their_loss.backward)
    assert theirs is not None and "modified by an inplace operation" in str(theirs)
    mine = raised(lambda: autograd.backward(loss))
    if mine is None:
        raise Differs("backward() passed", "backward() ran on a saved tensor changed in place, "
                      f"where torch's raises: {without_maker(str(theirs))}")
    assert without_maker(str(mine)) == without_maker(str(theirs))


@pytest.mark.parametrize("retain", [False, True], ids=["not-retained", "retain_grad"])
def test_grad_of_a_non_leaf_is_none_and_warns_unless_retained(retain):
    """y = relu(x), after backward: y.grad warns (a UserWarning in torch's words) and is None;
    after y.retain_grad(), it is torch's dLoss/dy, without a warning."""
    x, their_x = leaves()
    y, their_y = manual_ops().relu(x), TorchOps.relu(their_x)
    if retain:
        y.retain_grad()
        their_y.retain_grad()
    autograd.backward(functions.sum(y))
    TorchOps.sum(their_y).backward()
    with warnings.catch_warnings(record=True) as mine:
        warnings.simplefilter("always")
        grad = y.grad
    with warnings.catch_warnings(record=True) as theirs:
        warnings.simplefilter("always")
        their_grad = their_y.grad
    if retain:
        assert mine == theirs == []
        assert_matches_torch("dLoss/dy", grad, their_grad)
        return
    assert grad is None and their_grad is None
    assert [warning.category for warning in mine] == [warning.category for warning in theirs] \
        == [UserWarning]
    assert str(theirs[0].message).startswith(str(mine[0].message)), str(mine[0].message)


@pytest.mark.parametrize("kind", MODELS)
def test_no_grad_records_nothing(kind):
    """Under no_grad() the loss has no grad_fn and needs no gradient, as under torch's; after
    it, both record again."""
    mine, theirs, x, y = twins(kind)
    with autograd.no_grad(), torch.no_grad():
        assert autograd.is_grad_enabled() == torch.is_grad_enabled() is False
        loss = functions.cross_entropy(functions.forward(mine, Variable(x))[0], y, 0.1)
        their_loss = torch_impl.functions.cross_entropy(
            torch_impl.functions.forward(theirs, x)[0], y, 0.1)
    assert loss.grad_fn is None and their_loss.grad_fn is None
    assert loss.requires_grad is their_loss.requires_grad is False
    loss = functions.cross_entropy(functions.forward(mine, Variable(x))[0], y, 0.1)
    their_loss = torch_impl.functions.cross_entropy(torch_impl.functions.forward(theirs, x)[0],
                                                    y, 0.1)
    assert loss.grad_fn is not None and their_loss.grad_fn is not None


# Each model ----------------------------------------------------------------------------------

@pytest.mark.parametrize("label_smoothing", LABEL_SMOOTHING, ids=SMOOTHING_IDS)
@pytest.mark.parametrize("kind", MODELS)
def test_the_graph_is_torchs(kind, label_smoothing):
    """Node for node, the graph from the loss is torch's: each node's name and its edges
    (where each leads, and the input index), and the order of the sequence numbers (each
    AccumulateGrad's: torch's, the largest there is)."""
    run = recorded(kind, label_smoothing)
    nodes, mine = graph(run.loss.grad_fn)
    their_nodes, theirs = graph(run.their_loss.grad_fn)
    first = next((number for number, (a, b) in enumerate(zip(mine, theirs, strict=False))
                  if a != b),
                 min(len(mine), len(theirs)))
    assert mine == theirs, (f"{len(mine)} nodes, torch's {len(theirs)}; first difference at "
                            f"node {first}: {mine[first:first + 1]} against torch's "
                            f"{theirs[first:first + 1]}")
    numbers = [node._sequence_nr() for node in nodes]
    their_numbers = [node._sequence_nr() for node in their_nodes]
    assert sorted(range(len(nodes)), key=numbers.__getitem__) == sorted(
        range(len(nodes)), key=their_numbers.__getitem__)
    accumulators = [number for number, (name, _) in enumerate(mine) if name == "AccumulateGrad"]
    assert {numbers[i] for i in accumulators} == {their_numbers[i] for i in accumulators} == {
        autograd.ACCUMULATE_GRAD_SEQUENCE_NR}


@pytest.mark.parametrize("label_smoothing", LABEL_SMOOTHING, ids=SMOOTHING_IDS)
@pytest.mark.parametrize("kind", MODELS)
def test_backward_runs_the_nodes_in_torchs_order(kind, label_smoothing):
    """A prehook on every node, on both sides: backward runs each node once, in torch's order."""
    run = recorded(kind, label_smoothing)
    nodes, ran = watched(run.loss.grad_fn)
    their_nodes, their_ran = watched(run.their_loss.grad_fn)
    autograd.backward(run.loss)
    run.their_loss.backward()
    assert_runs_in_torchs_order(nodes, ran, their_nodes, their_ran)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("label_smoothing", LABEL_SMOOTHING, ids=SMOOTHING_IDS)
@pytest.mark.parametrize("kind", MODELS)
def test_backward_fills_every_gradient_as_torch_does(kind, label_smoothing, dtype):
    """The loss, dLoss/dlogits (retain_grad) and every parameter's .grad are torch's: to 1e-12
    in float64, within assert_close's tolerances in float32."""
    run = recorded(kind, label_smoothing, dtype)
    assert_matches_torch("loss", run.loss.data, run.their_loss.detach())
    autograd.backward(run.loss)
    run.their_loss.backward()
    assert_matches_torch("logits.grad", run.logits.grad, run.their_logits.grad, N, run.y)
    for (name, mine), (_, theirs) in zip(run.mine.named_parameters(),
                                         run.theirs.named_parameters(), strict=True):
        assert_matches_torch(f"{name}.grad", mine.grad, theirs.grad, N)


@pytest.mark.parametrize("label_smoothing", LABEL_SMOOTHING, ids=SMOOTHING_IDS)
@pytest.mark.parametrize("kind", MODELS)
def test_the_engine_gives_the_chains_bits(kind, label_smoothing):
    """float32: the chain (model.backward), fed the dLoss/dlogits the engine computed, gives
    every parameter's .grad bit for bit: each node runs its layer's own backward on what it
    saved, so the engine adds nothing but the order and the sums at fan-out."""
    engine, _, x, y = twins(kind, torch.float32)
    chain, _, _, _ = twins(kind, torch.float32)
    logits, _ = functions.forward(engine, Variable(x))
    logits.retain_grad()
    autograd.backward(functions.cross_entropy(logits, y, label_smoothing))
    chain(x)
    chain.backward(logits.grad, False)
    for (name, mine), (_, theirs) in zip(engine.named_parameters(), chain.named_parameters(),
                                         strict=True):
        assert mine.grad is not None and torch.equal(mine.grad, theirs.grad), (
            f"{name}.grad: the engine's is not the chain's, bit for bit")


# Broken twins: each check above can fail --------------------------------------------------------

def seeded_backward(right: str, wrong: str):
    """autograd.backward with its line `right` written as `wrong`: the mistake seeded into the
    engine's own source, as test_exercises.py seeds a learner's mistakes."""
    source = textwrap.dedent(inspect.getsource(autograd.backward))
    assert source.count(right) == 1, f"autograd.backward has no line {right!r}: update the twin"
    namespace = dict(vars(autograd))
    exec(compile(source.replace(right, wrong), inspect.getsourcefile(autograd), "exec"),
         namespace)
    return namespace["backward"]


@pytest.mark.twin
def test_an_engine_that_overwrites_at_fan_out_fails(monkeypatch):
    """= instead of + into the buffers: the fan-out checks fail, saying that the gradient is
    one path's alone, and so do the gradients of each model with label smoothing (log_p feeds
    nll_loss and the smoothing's sum); without it, no tensor of the models is used twice."""
    monkeypatch.setattr(autograd, "backward",
                        seeded_backward(ADDS_AT_FAN_OUT, OVERWRITES_AT_FAN_OUT))
    for check in (test_a_leaf_used_twice_gets_the_sum_of_both_paths,
                  test_a_node_with_two_parents_runs_once_after_both_in_torchs_order):
        with pytest.raises(Differs, match="is the gradient along one of its 2 paths alone"):
            check()
    with pytest.raises(Differs, match=r"logits\.grad"):
        test_backward_fills_every_gradient_as_torch_does("mlp", 0.1, torch.float64)
    test_backward_fills_every_gradient_as_torch_does("mlp", 0.0, torch.float64)


@pytest.mark.twin
def test_an_accumulate_grad_that_overwrites_fails(monkeypatch):
    """AccumulateGrad setting .grad = g on every call, not adding: two calls give the
    second's gradient alone."""
    def overwrite(self, *grad_outputs):
        self.variable.data.grad = grad_outputs[0].clone()
        return ()

    monkeypatch.setattr(autograd.AccumulateGrad, "__call__", overwrite)
    with pytest.raises(Differs, match=r"\.grad \(two calls\)"):
        test_grad_adds_up_over_backward_calls_and_zero_grad_clears_it("softmax")


@pytest.mark.twin
def test_an_engine_that_never_frees_the_saved_tensors_fails(monkeypatch):
    """release() doing nothing: a second backward passes, where torch's raises."""
    monkeypatch.setattr(autograd.Node, "release", lambda self: None)
    with pytest.raises(Differs, match="without retain_graph passed"):
        test_a_second_backward_fails_or_passes_as_torchs(False)
    test_a_second_backward_fails_or_passes_as_torchs(True)


@pytest.mark.twin
def test_an_engine_without_the_version_check_fails(monkeypatch):
    """Each saved tensor's version taken as it is now, not as it was when saved: backward runs
    on the tensor changed in place, where torch's raises."""
    unpack = autograd.Node.unpack

    def unchecked(self, key):
        value, _, maker = self.saved[key]
        if isinstance(value, torch.Tensor):
            self.saved[key] = (value, value._version, maker)
        return unpack(self, key)

    monkeypatch.setattr(autograd.Node, "unpack", unchecked)
    with pytest.raises(Differs, match="changed in place, where torch's raises"):
        test_a_saved_tensor_changed_in_place_raises_torchs_error()


@pytest.mark.twin
@pytest.mark.parametrize("ready", [
    SimpleNamespace(heappush=list.append, heappop=list.pop),
    SimpleNamespace(heappush=list.append, heappop=lambda queue: queue.pop(0)),
], ids=["stack", "queue"])
def test_an_engine_in_another_order_fails_the_order_checks_only(monkeypatch, ready):
    """The ready nodes taken from a stack (depth first: the last one pushed, so the bias's
    AccumulateGrad runs after the weight's path) or a queue (breadth first), not by sequence
    number: the order checks fail, and the gradients, sums at fan-out included, stay right."""
    monkeypatch.setattr(autograd, "heapq", ready)
    with pytest.raises(Differs, match="the nodes ran in another order than torch's"):
        test_a_node_with_two_parents_runs_once_after_both_in_torchs_order()
    if ready.heappop is list.pop:  # softmax regression: addmm's last edge, W^T, runs first
        with pytest.raises(Differs, match=r"TBackward0 \(node 4\) ran 4th, where torch's runs "
                                          r"AccumulateGrad \(node 3\)"):
            test_backward_runs_the_nodes_in_torchs_order("softmax", 0.0)
    with pytest.raises(Differs, match="the nodes ran in another order than torch's"):
        test_backward_runs_the_nodes_in_torchs_order("mlp", 0.1)
    test_a_leaf_used_twice_gets_the_sum_of_both_paths()
    test_backward_fills_every_gradient_as_torch_does("mlp", 0.1, torch.float64)


def linear_as_one_node(layer: Linear, x: Variable) -> Variable:
    """nn.Linear recorded as one node, "LinearBackward0", with edges to x, W and b: the right
    gradients from a graph that is not torch's (AddmmBackward0 and TBackward0)."""
    weight, bias = functions.parameter(layer.weight), functions.parameter(layer.bias)

    def formula(grad, needs, input, weight):
        bias = None if layer.bias is None else functions.holder(grad, grad.shape[1])
        stand_in = functions.holding(Linear, input=input, weight=weight.detach(), bias=bias)
        grad_input = stand_in.backward(grad, needs[0])
        return (grad_input, stand_in.weight.grad,
                None if stand_in.bias is None else stand_in.bias.grad)

    output = x.data @ layer.weight.T + (0 if layer.bias is None else layer.bias)
    return functions.record("LinearBackward0", formula, output, [x, weight, bias],
                            {"input": x, "weight": weight})


def addmm_bias_last(bias: Variable, mat1: Variable, mat2: Variable) -> Variable:
    """AddmmBackward0 with its edges as (mat1, mat2, bias), torch's being (bias, mat1, mat2)."""
    def formula(grad, needs, **saved):
        grad_bias, grad_mat1, grad_mat2 = functions.addmm_backward(
            grad, (needs[2], needs[0], needs[1]), **saved)
        return grad_mat1, grad_mat2, grad_bias

    saved = {"alpha": 1, "beta": 1, "mat1": mat1, "mat2": mat2}
    return functions.record("AddmmBackward0", formula,
                            torch.addmm(bias.data, mat1.data, mat2.data), [mat1, mat2, bias],
                            saved)


@pytest.mark.twin
@pytest.mark.parametrize("kind", MODELS)
def test_linear_recorded_as_one_node_fails_the_graph_check(monkeypatch, kind):
    """One node for nn.Linear: the gradients are right, the graph check fails, and so does
    the order check (there are fewer nodes to run)."""
    monkeypatch.setitem(functions.LAYER_OPS, "Linear", linear_as_one_node)
    test_backward_fills_every_gradient_as_torch_does(kind, 0.0, torch.float64)
    with pytest.raises(AssertionError, match="LinearBackward0"):
        test_the_graph_is_torchs(kind, 0.0)
    with pytest.raises(Differs, match="the nodes did not run as torch's"):
        test_backward_runs_the_nodes_in_torchs_order(kind, 0.0)


@pytest.mark.twin
def test_addmm_wired_in_another_order_fails_the_graph_check(monkeypatch):
    """addmm's edges in another order than torch's: the gradients are right, the graph check
    fails on the edges."""
    monkeypatch.setattr(functions, "addmm", addmm_bias_last)
    test_backward_fills_every_gradient_as_torch_does("mlp", 0.0, torch.float64)
    with pytest.raises(AssertionError, match="AddmmBackward0"):
        test_the_graph_is_torchs("mlp", 0.0)
