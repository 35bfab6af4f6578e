"""The graph loss.backward() walks, manual's held against torch's node by node (--graph), and
the tutor's question at node granularity: which node's backward is wrong when it is fed
torch's own gradient?

Both learners record their forward on the same batch from the same parameters: manual's
through its engine (manual/functions.py), torch's by autograd. Walked from the loss along
next_functions, the two graphs are paired node by node and held against each other:
    nodes         the same name (torch's: "AddmmBackward0", "AccumulateGrad")
    edges         the same next_functions, input index included, to paired nodes
    saved         every tensor torch's node saved (grad_fn._saved_*), torch.equal to
                  manual's, or within the limit where it comes from a kernel of torch's own
                  (KERNELS), or from one upstream (then that node is named)
    order         the order the nodes run in, seen by a prehook on every node of both
    per node      torch's incoming gradient, caught by a prehook, is fed to the manual node;
                  each gradient it returns is held against torch's, caught by a hook:
                  bit-identical where the two formulas are the same operations, else within
                  the limit, for the reason KERNELS states
"""

import itertools
import math
import textwrap
from dataclasses import dataclass, field

import torch

from lockstep.culprit import qualified, where
from lockstep.kinds import distance
from lockstep.learner import Learner

# Nodes whose torch kernel computes its own way what manual's formula computes: why they
# agree to rounding only.
KERNELS = {
    "LogSoftmaxBackward0": "torch's log_softmax kernel sums the exponentials in its own "
                           "(vectorized) order, in forward and in backward",
    "NativeBatchNormBackward0": "torch's batch-norm kernel computes the batch mean, 1 / std and "
                                "backward's two sums over the batch in its own order",
    "ConvolutionBackward0": "torch's convolution backward sums the products for weight.grad "
                            "and bias.grad in its own order; manual's is a convolution of x "
                            "with g",
}
HEADER = """\
Step 1: the graph loss.backward() walks, manual's (manual/functions.py) beside torch's
(loss.grad_fn), a row per node in the order torch's backward ran them. -> the rows its
edges lead to (- None: no gradient needed). saved: the tensors it saved, = torch.equal to
torch's, ~ within rounding. fed torch's: each gradient the manual node returns when fed
the gradient torch's node received, = bit-identical, ~ within rounding, - none."""
# What each input of a node is, for the tutor: (self, mat1, mat2) of addmm are the bias, the
# layer's input and its weight, transposed.
INPUTS = {"AddmmBackward0": ("bias", "input", "weight"), "MmBackward0": ("input", "weight"),
          "NativeBatchNormBackward0": ("input", "weight", "bias"),
          "ConvolutionBackward0": ("input", "weight", "bias")}


@dataclass
class Pair:
    """One node of each graph, paired: its layer, and what was found."""

    manual: object
    torch: object
    layer: str = ""
    problems: list[str] = field(default_factory=list)
    saved: dict[str, str] = field(default_factory=dict)  # name -> "=", "~" or "X"
    grads: list[float | None] = field(default_factory=list)  # per edge: 0.0 is bit-identical
    reason: str = ""  # why the "~" ones are within rounding only


def name(node) -> str:
    """torch's name of a node, without its C++ namespace: "AccumulateGrad"."""
    return "None" if node is None else node.name().rpartition("::")[2]


def record(learner: Learner, x: torch.Tensor, y: torch.Tensor):
    """(the loss, {node: the layer whose output it made}, {id(parameter): its name}) of
    learner's forward on (x, y), recorded by its package's engine: manual/functions.py, or
    autograd for torch_impl."""
    package, model = learner.package, learner.model
    logits, hidden = package.functions.forward(model, package.autograd.Variable(
        learner.as_input(x)))
    loss = package.functions.cross_entropy(logits, y, learner.label_smoothing)
    layers = {output.grad_fn: f"layers.{index}" for index, output in enumerate(hidden)}
    layers[logits.grad_fn] = f"layers.{len(hidden)}" if hidden else "linear"
    params = {id(param): name for name, param in learner.named_parameters()}
    return loss, layers, params


def walk(roots: tuple, labels: tuple) -> list[Pair]:
    """The two graphs paired, depth first from the roots along next_functions in order;
    each node once. A pair's problems: another name, or edges that do not match torch's."""
    pairs, seen, stack, inherited = [], {}, [roots], {}
    while stack:
        a, b = stack.pop()
        if b in seen:
            continue
        pair = seen[b] = Pair(a, b, layer_of(a, b, labels) or inherited.get(b, "loss"))
        pairs.append(pair)
        if name(a) != name(b):
            pair.problems.append(f"named {name(a)} where torch's is {name(b)}")
        ours, theirs = a.next_functions, b.next_functions
        if len(ours) != len(theirs):
            pair.problems.append(f"{len(ours)} edges where torch's has {len(theirs)}")
        edges = list(enumerate(zip(ours, theirs, strict=False)))
        rewired = sorted(map(name, targets(ours))) == sorted(map(name, targets(theirs)))
        for index, ((m, i), (t, j)) in reversed(edges):  # another name: on its own row,
            if (m is None) != (t is None) or i != j or (  # unless the edges are swapped
                    rewired and name(m) != name(t)):
                pair.problems.append(f"edge {index} leads to {name(m)}, input {i}, where "
                                     f"torch's leads to {name(t)}, input {j}")
            elif t is not None and t in seen and seen[t].manual is not m:
                pair.problems.append(f"edge {index} leads to another node than torch's")
            elif t is not None:
                stack.append((m, t))
                inherited.setdefault(t, block(pair.layer))
    return pairs


def targets(edges: tuple) -> list:
    return [node for node, _ in edges]


def layer_of(a, b, labels: tuple) -> str | None:
    """The layer a node belongs to: the layer whose output it made, a parameter's name, or
    the layer of the parameters its edges lead to (TBackward0, a convolution in a residual
    block: "layers.4.conv1"); else None (walk then takes its parent's block, or "loss")."""
    layers, params = labels
    if a in layers:
        return layers[a]
    if name(a) == "AccumulateGrad":
        return params.get(id(a.variable.data), "?")
    for node in targets(a.next_functions):
        if name(node) == "AccumulateGrad":
            param = params.get(id(node.variable.data), "?")
            return param.rpartition(".")[0] or "linear"  # softmax regression's "weight"
    return None


def block(layer: str) -> str:
    """The layer a node inside it inherits from the node above: "layers.4.conv2" ->
    "layers.4" (a residual block's ReLU and add), "loss" -> "loss"."""
    return ".".join(layer.split(".")[:2])


def saved_names(node) -> list[str]:
    return [attribute for attribute in dir(node) if attribute.startswith("_saved_")]


def compare_saved(pairs: list[Pair], limit: float) -> None:
    """Each tensor torch's node saved against manual's: "=" torch.equal, "~" within the limit
    (for the node's own kernel, or from the nearest such node upstream), "X" not."""
    upstream = None  # the last node, in the forward's order, whose own kernel rounds its way
    for pair in sorted(pairs, key=lambda pair: pair.manual.sequence_nr):  # forward's order
        mine = set(saved_names(pair.manual))
        for attribute in saved_names(pair.torch):
            theirs = getattr(pair.torch, attribute)
            if not isinstance(theirs, torch.Tensor) and theirs is not None:
                if attribute in mine and not same_value(getattr(pair.manual, attribute), theirs):
                    pair.problems.append(f"saved {attribute[7:]} "
                                         f"{getattr(pair.manual, attribute)} where torch's is "
                                         f"{theirs}")
                continue
            ours = getattr(pair.manual, attribute, None) if attribute in mine else None
            key = attribute[7:]
            if (ours is None) != (theirs is None):
                pair.saved[key] = "X"
                pair.problems.append(f"saves {key} as {what(ours)} where torch's saves "
                                     f"{what(theirs)}")
            elif theirs is not None:
                apart = gap(ours, theirs)
                pair.saved[key] = mark(apart, limit)
                if pair.saved[key] == "X":
                    pair.problems.append(f"saved {key} differs from torch's" + (
                        f" by {apart:.1e}" if math.isfinite(apart) else
                        ": in its shape, or in its integers"))
        if "~" in pair.saved.values():
            pair.reason = KERNELS.get(name(pair.torch)) or (
                f"it saved what {upstream} computed, within rounding" if upstream else "")
            if name(pair.torch) in KERNELS:
                upstream = f"{name(pair.torch)} ({pair.layer})"
        for key in mine - set(saved_names(pair.torch)):
            pair.problems.append(f"saves {key[7:]}, which torch's node does not")


def what(saved: torch.Tensor | None) -> str:
    return "nothing" if saved is None else "a tensor"


def same_value(ours, theirs) -> bool:
    """A saved number, flag or list of sizes, as torch's (a list and a tuple alike)."""
    if isinstance(theirs, (tuple, list)):  # mean's dims -1, -2 show as 2^64 - 1, 2^64 - 2
        return (isinstance(ours, (tuple, list)) and len(ours) == len(theirs)
                and all(map(same_value, ours, theirs)))
    if isinstance(theirs, int) and isinstance(ours, int):  # torch shows int64 -100 as the
        return (ours - theirs) % 2**64 == 0               # uint64 2^64 - 100
    return ours == theirs


def gap(ours: torch.Tensor | None, theirs: torch.Tensor | None) -> float | None:
    """How far manual's tensor is from torch's: None where both are None, 0.0 where they are
    torch.equal, the distance (max|a - b| / max|b|) of floating ones of one shape, else inf."""
    if ours is None or theirs is None:
        return None if ours is theirs else math.inf
    if ours.shape != theirs.shape:
        return math.inf
    if torch.equal(ours, theirs):
        return 0.0
    return distance(ours, theirs) if ours.is_floating_point() else math.inf


def mark(apart: float | None, limit: float) -> str:
    """A gap as the table shows it: "=" bit-identical, "~" within the limit, "X" over it, "-"
    none (no tensor on either side)."""
    if apart is None:
        return "-"
    return "=" if apart == 0 else "~" if apart <= limit else "X"


def hooked(root) -> tuple[list, dict, dict]:
    """Prehooks and hooks on every node reachable from root: (the order they ran in,
    {node: its incoming gradients}, {node: its outgoing ones}), filled by backward."""
    order, incoming, outgoing, stack, seen = [], {}, {}, [root], set()

    def watch(node) -> None:
        def before(grads):
            order.append(node)
            incoming[node] = grads

        def after(grads, _):
            outgoing[node] = grads

        node.register_prehook(before)
        node.register_hook(after)

    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            watch(node)
            stack += targets(node.next_functions)
    return order, incoming, outgoing


def fed(pairs: list[Pair], incoming: dict, outgoing: dict, limit: float) -> None:
    """Each manual node (AccumulateGrad aside) called on torch's node's incoming gradient;
    each gradient it returns held against torch's: 0.0 bit-identical, else the distance."""
    for pair in pairs:
        if name(pair.torch) == "AccumulateGrad" or pair.torch not in incoming or pair.problems:
            continue
        ours = pair.manual(*incoming[pair.torch])  # an error is the learner's to see
        for index, (a, b) in enumerate(zip(ours, outgoing[pair.torch], strict=False)):
            pair.grads.append(gap(a, b))
            if pair.grads[-1] is not None and pair.grads[-1] > limit:
                pair.problems.append(f"fed torch's gradient, its gradient for the "
                                     f"{input_name(pair, index)} differs")
            elif pair.grads[-1] and not pair.reason:
                pair.reason = KERNELS.get(name(pair.torch), "")


def input_name(pair: Pair, index: int) -> str:
    """What a node's input is: "input", "weight", "bias" of a layer's node, else "input"
    (numbered where a node has several)."""
    names = INPUTS.get(name(pair.torch))
    if names:
        return names[index]
    return "input" if len(pair.torch.next_functions) == 1 else f"input {index}"


@dataclass
class Check:
    """The graphs of one step, paired and checked; order: the position where manual ran a
    node other than torch's (None when the same), with the two nodes."""

    pairs: list[Pair]
    order: tuple[int, Pair | None, Pair | None] | None
    runs: list[Pair]  # the pairs in the order torch ran them
    limit: float

    @property
    def match(self) -> bool:
        return self.order is None and not any(pair.problems for pair in self.pairs)


def check(learners: list[Learner], x: torch.Tensor, y: torch.Tensor, limit: float) -> Check:
    """Record both learners' forward on (x, y), pair the two graphs and hold them against
    each other: nodes, edges, saved tensors, per-node gradients (fed torch's), order. Runs
    backward on both: it fills the parameters' .grad (use twins where that matters)."""
    (ours, layers, params), (theirs, _, _) = (record(learner, x, y) for learner in learners)
    pairs = walk((ours.grad_fn, theirs.grad_fn), (layers, params))
    compare_saved(pairs, limit)  # before backward frees them
    manual_order, _, _ = hooked(ours.grad_fn)
    torch_order, incoming, outgoing = hooked(theirs.grad_fn)
    theirs.backward()
    fed(pairs, incoming, outgoing, limit)
    learners[0].package.autograd.backward(ours)
    by_manual = {id(pair.manual): pair for pair in pairs}
    by_torch = {pair.torch: pair for pair in pairs}
    runs = [by_torch.get(node) for node in torch_order]
    ran = [by_manual.get(id(node)) for node in manual_order]
    order = next(((index, mine, them) for index, (mine, them)
                  in enumerate(itertools.zip_longest(ran, runs)) if mine is not them), None)
    return Check(pairs, order, [run for run in runs if run is not None], limit)


def table(result: Check) -> list[str]:
    """Both graphs side by side, a row per node in the order torch ran them: the position,
    manual's node and torch's, each with its edges (to rows; - for None), the layer, the
    saved tensors ("=" torch.equal, "~" within rounding, "X" not), and each gradient the
    manual node returns when fed torch's ("=" bit-identical, "~" within the limit)."""
    rows = {id(pair): index + 1 for index, pair in enumerate(result.runs)}
    rows_of = [{id(pair.manual): rows[id(pair)] for pair in result.runs},
               {pair.torch: rows[id(pair)] for pair in result.runs}]

    def cell(node, side: int) -> str:
        edges = [str(rows_of[side].get(target if side else id(target), "?"))
                 if target is not None else "-" for target, _ in node.next_functions]
        return name(node) + (f" -> {', '.join(edges)}" if edges else "")

    cells = [(cell(pair.manual, 0), cell(pair.torch, 1)) for pair in result.runs]
    width = max(len(text) for row in cells for text in row) + 1
    layer = max(16, *(len(pair.layer) + 1 for pair in result.runs))
    lines = [HEADER, f"{'#':>3}  {'manual':<{width}} {'torch':<{width}} {'layer':<{layer}} "
                     f"{'saved':<9} fed torch's"]
    for row, pair in enumerate(result.runs, 1):
        saved = " ".join(f"{sum(mark == kind for mark in pair.saved.values())}{kind}"
                         for kind in "=~X" if kind in pair.saved.values())
        grads = " ".join(mark(apart, result.limit) for apart in pair.grads)
        mine, theirs = cells[row - 1]
        lines.append(f"{row:>3}  {mine:<{width}} {theirs:<{width}} "
                     f"{pair.layer:<{layer}} {saved or '-':<9} {grads or '-'}")
    return lines


def notes(result: Check) -> list[str]:
    """Why each node that agrees only within rounding does: its saved tensors or its
    gradients, with the worst distance and the reason."""
    lines = []
    for pair in result.runs:
        close = [key for key, mark in pair.saved.items() if mark == "~"]
        worst = max((d for d in pair.grads if d), default=0.0)
        if (close or worst) and not pair.problems:
            what = [f"saved {', '.join(close)}"] if close else []
            what += [f"gradients within {worst:.1e}"] if worst else []
            lines += textwrap.wrap(f"~ {name(pair.torch)} ({pair.layer}): {' and '.join(what)}:"
                                   f" {pair.reason or 'rounding'}", 92, initial_indent="  ",
                                   subsequent_indent="    ")
    return lines


def verdict(result: Check) -> str:
    """GRAPH MATCH with the counts, or GRAPH MISMATCH with the first problem, in torch's order."""
    pairs = result.runs
    saved = [mark for pair in pairs for mark in pair.saved.values()]
    grads = [d for pair in pairs for d in pair.grads if d is not None]
    edges = sum(len(pair.torch.next_functions) for pair in pairs)
    if not result.match:
        return "GRAPH MISMATCH: " + first_problem(result)
    fed = sum(name(pair.torch) != "AccumulateGrad" for pair in pairs)
    return (f"GRAPH MATCH: {len(pairs)} nodes and {edges} edges as torch's, in torch's order; "
            f"{len(saved)} saved tensors ({saved.count('=')} bit-identical, "
            f"{saved.count('~')} within rounding); fed torch's gradients, the {fed} nodes "
            f"return {len(grads)} gradients ({grads.count(0.0)} bit-identical, the others "
            f"within {max(grads, default=0.0):.1e} <= {result.limit:g})")


def first_problem(result: Check) -> str:
    """The first problem of the walk (from the loss), or the order's."""
    for pair in result.pairs:
        if pair.problems:
            return f"{name(pair.manual)} ({pair.layer}): {pair.problems[0]}"
    position, mine, them = result.order
    def told(pair):
        return "nothing" if pair is None else f"{name(pair.torch)} ({pair.layer})"
    return (f"the order: node {position + 1} to run is {told(mine)} in manual's backward, "
            f"{told(them)} in torch's (the ready node with the largest sequence number runs "
            "first, AccumulateGrad as soon as it is ready)")


def report(learners: list[Learner], x: torch.Tensor, y: torch.Tensor, limit: float) -> tuple[
        bool, list[str]]:
    """(match, the lines compare.py --graph prints): the table, the notes, the verdict."""
    result = check(learners, x, y, limit)
    return result.match, [*table(result), *notes(result), verdict(result)]


def first_wrong_node(learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
                     limit: float) -> str | None:
    """The tutor at node granularity: the first node, from the loss, whose backward is wrong
    when fed torch's own incoming gradient, said as node_sentence; None when every node's
    agrees (or the graphs differ: --graph says how). On twins: the learners are untouched."""
    if not hasattr(learners[0].package, "functions"):  # an exercise folder from before it
        return None
    probes = [learner.twin() for learner in learners]
    with torch.enable_grad():  # the diagnosis runs under no_grad; torch's graph needs it
        result = check(probes, x, y, limit)
    for pair in result.pairs:
        if any(d is not None and d > limit for d in pair.grads):
            return node_sentence(pair, probes[0].package, limit)
    return engine_sentence(result, probes[0].package) if learners[0].settings["engine"] else None


def engine_sentence(result: Check, package) -> str:
    """Every node is right, fed torch's gradient, and yet the engine's gradients differ: the
    walk itself (autograd.backward) delivers other gradients to them."""
    function = package.autograd.backward
    order = f" ({first_problem(result)})" if result.order else ""
    return (f"every node returns torch's gradients when fed torch's, so the walk is wrong"
            f"{order}: {qualified(function)} ({where(function)}) must add (+) the gradient "
            "of every edge into its node's buffer, and run a node only once all its edges "
            "have delivered")


def node_sentence(pair: Pair, package, limit: float) -> str:
    """"ConvolutionBackward0 (layers.3), its gradient for the input, differs when fed
    torch's grad_output; its weight and bias gradients agree; the formula is
    manual/layers.py line 214": the node, which of its gradients differ and which agree,
    and where its formula is (the layer's backward it runs, else its own)."""
    names = [input_name(pair, index) for index in range(len(pair.grads))]
    wrong = [names[i] for i, d in enumerate(pair.grads) if d is not None and d > limit]
    right = [names[i] for i, d in enumerate(pair.grads) if d is not None and d <= limit]
    agree = (f"; its {' and '.join(right)} gradient{'s agree' if len(right) > 1 else ' agrees'}"
             if right else "")
    return (f"{name(pair.torch)} ({pair.layer}), its gradient for the {' and '.join(wrong)}, "
            f"differs when fed torch's grad_output{agree}; the formula is "
            f"{where(formula(pair.manual, package))}")


def formula(node, package):
    """The function that holds a manual node's formula: the backward of the layer it runs,
    else the node's own (functions.formula_of)."""
    return package.functions.formula_of(node)
