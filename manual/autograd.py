"""The engine that loss.backward() runs, by hand: forward records a graph, backward walks it.

Twin of torch_impl/autograd.py (torch.autograd itself). Plain tensor operations only: the
engine never asks torch's autograd for anything.

Forward records. An operation on a Variable that requires grad (manual/functions.py) creates
a Node, the operation's backward, which torch calls its grad_fn and names after the aten
operation ("AddmmBackward0", "ReluBackward0"). A node holds
    next_functions: one edge (node, input index) per input, in the operation's argument order:
        the input's own grad_fn; the AccumulateGrad of a leaf that requires grad (a
        parameter); or (None, 0) for an input that needs no gradient (the images)
    the tensors its formula needs, under torch's names (node._saved_mat1, node._saved_result),
        each with the version counter it had when saved
    a sequence number: the nodes created before it. An operation's inputs exist before it, so
        a node's number is larger than that of every node its edges lead to.

backward(loss) walks the graph from loss.grad_fn:
    1. dependencies: how many edges lead to each node that can be reached.
    2. a node is ready once all of them have delivered their gradient; of the ready nodes,
       the one with the largest sequence number runs first. AccumulateGrad has the largest
       number of all, 2^64 - 1: a leaf's gradient is stored as soon as it is complete.
    3. a node turns dLoss/d(its output) into dLoss/d(each input), by its formula. Each goes
       along its edge and is added (+) into the next node's buffer at the edge's input
       index. A tensor used twice gets the sum of both paths: for y = f(x) and z = g(x),
           dLoss/dx = dLoss/dy dy/dx + dLoss/dz dz/dx    (the chain rule sums over paths)
       which is why a buffer is added to, never overwritten.
    4. AccumulateGrad adds into its leaf's .grad (sets it when None), across backward()
       calls too: that is why the optimizers' zero_grad() exists.
    5. unless retain_graph=True, each node frees its saved tensors once it has run: a second
       backward() through it raises, as torch's does.
    6. after AccumulateGrad stores a leaf's gradient, the leaf's post-accumulate hooks run
       (register_post_accumulate_grad_hook). DistributedDataParallel hooks in there: a
       gradient goes into its bucket as soon as it is complete (manual/parallel.py).
"""

import contextlib
import heapq
import itertools
import re
import warnings
import weakref

import torch

ACCUMULATE_GRAD_SEQUENCE_NR = 2**64 - 1  # UINT64_MAX: runs first of all the ready nodes
BACKWARD_TWICE = (
    "Trying to backward through the graph a second time (or directly access saved tensors "
    "after they have already been freed). Saved intermediate values of the graph are freed "
    "when you call .backward() or autograd.grad(). Specify retain_graph=True if you need to "
    "backward through the graph a second time or if you need to access saved tensors after "
    "calling backward.")
NON_LEAF_GRAD = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad "
    "attribute won't be populated during autograd.backward(). If you indeed want the .grad "
    "field to be populated for a non-leaf Tensor, use .retain_grad() on the non-leaf Tensor.")
FREED = object()  # what a saved tensor becomes once backward has run (retain_graph=False)
sequence_numbers = itertools.count()  # one counter for every node, as torch's per thread
grad_enabled = [True]  # no_grad() sets it to False while it lasts
POST_ACCUMULATE_GRAD_HOOKS = "post_accumulate_grad_hooks"  # a leaf tensor's attribute


class Variable:
    """A tensor with what autograd adds to it: torch.autograd.Variable, which torch 0.4 merged
    into Tensor. Kept apart here so that the additions show.

    data: the plain tensor (any shape). requires_grad. grad_fn: the Node that made it, None
    for a leaf. grad: a leaf's is data.grad, filled by backward (the parameters' .grad, read
    by the optimizers); a non-leaf's stays None, with a warning, unless retain_grad() was
    called before backward. _version: data's version counter, bumped by every in-place op.
    """

    def __init__(self, data: torch.Tensor, requires_grad: bool = False, grad_fn=None):
        self.data, self.grad_fn = data, grad_fn
        self.requires_grad = requires_grad or grad_fn is not None
        self.retains_grad, self.retained, self.accumulator = False, None, None

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def grad(self) -> torch.Tensor | None:
        if self.is_leaf:
            return self.data.grad
        if not self.retains_grad:
            warnings.warn(NON_LEAF_GRAD, UserWarning, stacklevel=2)
        return self.retained

    @property
    def _version(self) -> int:
        return self.data._version

    @property
    def shape(self) -> torch.Size:
        return self.data.shape

    def retain_grad(self) -> None:
        """Keep dLoss/d(this non-leaf) in .grad: the gradient its grad_fn receives."""
        if not self.is_leaf and not self.retains_grad:
            self.retains_grad = True
            self.grad_fn.retained.append(weakref.ref(self))  # weak, as torch's hook: no cycle

    def grad_accumulator(self) -> "AccumulateGrad":
        """The leaf's AccumulateGrad node, one per leaf, made when an op first uses it."""
        accumulator = self.accumulator and self.accumulator()
        if accumulator is None:  # weak, as torch's: the graph holds it, and it holds the leaf
            accumulator = AccumulateGrad(self)
            self.accumulator = weakref.ref(accumulator)
        return accumulator

    def backward(self, gradient: torch.Tensor | None = None, retain_graph: bool = False):
        backward(self, gradient, retain_graph)


def edge(variable: Variable | None) -> tuple["Node | None", int]:
    """Where an input's gradient goes: (its grad_fn, 0), (its AccumulateGrad, 0) or (None, 0)."""
    if variable is None or not variable.requires_grad:
        return None, 0
    return variable.grad_fn or variable.grad_accumulator(), 0


class Node:
    """One recorded operation's backward (torch's grad_fn): name(), next_functions,
    _sequence_nr(), the saved tensors as _saved_<name>, register_prehook / register_hook,
    and node(grad) -> one gradient per edge, by formula(grad, needs_input_grad, **saved)."""

    def __init__(self, name: str, formula, inputs: list, saved: dict | None = None,
                 sequence_nr: int | None = None):
        self._name, self.formula = name, formula
        self.next_functions = tuple(edge(variable) for variable in inputs)
        self.needs_input_grad = tuple(node is not None for node, _ in self.next_functions)
        self.saved = {}  # name -> (value, version when saved, the op that made it)
        for key, value in (saved or {}).items():
            if isinstance(value, Variable):  # an input: made by its grad_fn, or a leaf
                value, maker = value.data, value.grad_fn and value.grad_fn.name()
            else:  # this node's own output (result, result1, ...), or a plain tensor or value
                maker = name if key.startswith("result") else None
            version = value._version if isinstance(value, torch.Tensor) else None
            self.saved[key] = (value, version, maker)
        self.sequence_nr = next(sequence_numbers) if sequence_nr is None else sequence_nr
        self.prehooks, self.hooks, self.retained = [], [], []
        self.metadata = {}  # free for the caller's use, as torch's Node.metadata

    def name(self) -> str:
        return self._name

    def _sequence_nr(self) -> int:
        return self.sequence_nr

    def __repr__(self) -> str:
        return f"<{self._name} {self.sequence_nr}>"

    def __dir__(self):
        return [*super().__dir__(), *(f"_saved_{key}" for key in self.saved)]

    def __getattr__(self, attribute: str):
        if attribute.startswith("_saved_") and attribute[7:] in self.__dict__.get("saved", {}):
            return self.unpack(attribute[7:])
        raise AttributeError(attribute)

    def unpack(self, key: str):
        """A saved value, as torch's SavedVariable unpacks it: refused once freed, or when
        its tensor was changed in place since it was saved (its version counter moved on)."""
        value, version, maker = self.saved[key]
        if value is FREED:
            raise RuntimeError(BACKWARD_TWICE)
        if not isinstance(value, torch.Tensor):
            return value
        if value._version != version:
            op = maker and re.sub(r"Backward\d*$", "", maker)  # the op: "Relu", as torch says
            of = f", which is output 0 of {op}," if op else ""
            raise RuntimeError(
                "one of the variables needed for gradient computation has been modified by an "
                f"inplace operation: [{value.type()} {list(value.shape)}]{of} is at version "
                f"{value._version}; expected version {version} instead.")
        return value

    def __call__(self, *grad_outputs: torch.Tensor) -> tuple:
        """One gradient per edge, from dLoss/d(output) (grad_outputs[0]; the others, for the
        outputs no gradient flows into, are None)."""
        saved = {}
        for key, (value, version, _) in self.saved.items():  # unpack(key), inline: the fast case
            if value is FREED or (version is not None and value._version != version):
                self.unpack(key)  # raises torch's error
            saved[key] = value
        return tuple(self.formula(grad_outputs[0], self.needs_input_grad, **saved))

    def release(self) -> None:
        """Free the saved tensors (retain_graph=False): drop them, keep the other values."""
        for key, (_, version, maker) in self.saved.items():
            if version is not None:  # a tensor (a number or None has no version)
                self.saved[key] = FREED, version, maker

    def register_prehook(self, hook) -> None:
        """hook(grad_outputs) before the node runs; what it returns, if not None, replaces them."""
        self.prehooks.append(hook)

    def register_hook(self, hook) -> None:
        """hook(grad_inputs, grad_outputs) after the node has run."""
        self.hooks.append(hook)


class AccumulateGrad(Node):
    """The node at the end of every path to a leaf: adds dLoss/dleaf into leaf.grad.

    leaf.grad = g when it is None, else leaf.grad + g: the sum over backward() calls, as
    over paths. g is stored as it is (a copy only if it is not contiguous, an expanded sum's
    gradient), and the sum is a new tensor: the engine never writes into a gradient, so
    nothing that shares one can change under it. Torch stores g as it is too when nothing
    else holds it (use_count), else a copy, and adds in place."""

    def __init__(self, variable: Variable):
        super().__init__("AccumulateGrad", None, [], sequence_nr=ACCUMULATE_GRAD_SEQUENCE_NR)
        self.variable = variable

    def __call__(self, *grad_outputs: torch.Tensor) -> tuple:
        leaf, grad = self.variable.data, grad_outputs[0]
        if leaf.grad is None:
            leaf.grad = grad if grad.is_contiguous() else grad.contiguous()
        else:
            leaf.grad = leaf.grad + grad
        for hook in getattr(leaf, POST_ACCUMULATE_GRAD_HOOKS, ()):
            hook(leaf)
        return ()


def register_post_accumulate_grad_hook(tensor: torch.Tensor, hook,
                                       prepend: bool = False) -> None:
    """hook(tensor) after every backward() stores tensor's gradient in tensor.grad: torch's
    tensor.register_post_accumulate_grad_hook(hook), for a leaf (a parameter). The tensor
    holds its hooks, as torch's does, in an attribute: they live as long as it. prepend: run
    it before those registered already (as nn.Module's hooks take it)."""
    if not hasattr(tensor, POST_ACCUMULATE_GRAD_HOOKS):
        setattr(tensor, POST_ACCUMULATE_GRAD_HOOKS, [])
    hooks = getattr(tensor, POST_ACCUMULATE_GRAD_HOOKS)
    hooks.insert(0 if prepend else len(hooks), hook)



def is_grad_enabled() -> bool:
    return grad_enabled[-1]


@contextlib.contextmanager
def no_grad():
    """Record nothing while it lasts (evaluation, the optimizers' updates): torch.no_grad()."""
    grad_enabled.append(False)
    try:
        yield
    finally:
        grad_enabled.pop()


def backward(tensor: Variable, gradient: torch.Tensor | None = None,
             retain_graph: bool = False) -> None:
    """dLoss/d(every leaf that requires grad), added into its .grad: torch.autograd.backward.

    tensor: the loss, a scalar Variable, so that gradient defaults to 1 (dLoss/dLoss); any
    other shape needs gradient, dLoss/dtensor, of its shape. Runs the nodes in torch's order
    and adds at fan-out (see the module's docstring); frees each node's saved tensors once
    it has run, unless retain_graph."""
    if not tensor.requires_grad:
        raise RuntimeError("element 0 of tensors does not require grad and does not have a "
                           "grad_fn")
    if gradient is None:
        if tensor.data.numel() != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        gradient = torch.ones_like(tensor.data)
    root = tensor.grad_fn or tensor.grad_accumulator()
    waiting = dependencies(root)
    buffers = {root: gradient}  # each node's dLoss/d(its output), summed over its edges
    ready, arrivals = [(-root.sequence_nr, 0, root)], itertools.count(1)
    while ready:
        node = heapq.heappop(ready)[2]
        grads = run(node, buffers.pop(node, None), retain_graph)
        for (target, _), grad in zip(node.next_functions, grads, strict=True):
            if target is None:
                continue
            if grad is not None:
                buffers[target] = grad if buffers.get(target) is None else buffers[target] + grad
            waiting[target] -= 1
            if waiting[target] == 0:  # every edge into it has delivered: ready
                heapq.heappush(ready, (-target.sequence_nr, next(arrivals), target))


def dependencies(root: Node) -> dict[Node, int]:
    """For each node reachable from root, how many edges lead to it."""
    counts, stack = {root: 0}, [root]
    while stack:
        for target, _ in stack.pop().next_functions:
            if target is not None:
                if target not in counts:
                    counts[target] = 0
                    stack.append(target)
                counts[target] += 1
    return counts


def run(node: Node, grad: torch.Tensor, retain_graph: bool) -> tuple:
    """One node: its retained gradients, its prehooks, its formula, its hooks; then free it."""
    if grad is None:  # no gradient reached it (every edge into it delivered None)
        return (None,) * len(node.next_functions)
    for variable in filter(None, (ref() for ref in node.retained)):  # the live ones
        kept = variable.retained
        if kept is None:  # the gradient itself, which nothing changes after; a copy if a hook might
            variable.retained = grad.clone() if node.prehooks or node.hooks else grad
        else:
            variable.retained = kept + grad
    grads = (grad,)
    for hook in node.prehooks:  # after retain_grad's, as torch runs them
        grads = hook(grads) or grads
    result = node(*grads)
    for hook in node.hooks:
        hook(result, grads)
    if not retain_graph:
        node.release()
    return result
