"""Which function of the manual code computed a gradient that differs: its layer, its class,
its file and line, and how the layer's other gradients compare.

The tutor adds it where no simpler pattern explains a difference, so that a learner reads
"layers.3 (Conv2d).backward returned it (exercises/layers.py line 258): its dLoss/dx is wrong
where its weight.grad and bias.grad agree" rather than decoding a hidden output's name. A
layer's backward sets the .grad of its parameters and returns dLoss/d(its input), which is
the output gradient of the layer below: hidden output i (the output of layer i) gets its
gradient from layer i + 1.
"""

import inspect

from lockstep.learner import Learner, layer_index
from lockstep.tracebacks import shown


def responsible(learner: Learner, name: str, over: dict[str, bool]) -> str | None:
    """The sentence naming what computed manual's gradient `name` ("logits", a parameter's
    "layers.3.weight", a hidden output's "hidden.maxpool2d.2"), with `over`: whether each
    gradient, by the same names, went over the limit. None where nothing is known of it."""
    if name == "logits":
        function = learner.package.functional.cross_entropy_grad
        return (f"{qualified(function)} computed it ({where(function)}), from softmax's "
                "probabilities")
    hidden = [hidden for hidden, _ in learner.named_hidden_outputs()]
    layers = getattr(learner.model, "layers", None)
    if name in hidden:
        index, verb = hidden.index(name) + 1, "returned"
    elif name in dict(learner.named_parameters()):
        index, verb = layer_index(name), "set"
    else:
        return None
    layer = layers[index] if layers else learner.model
    function = type(layer).backward
    who = f"layers.{index} ({type(layer).__name__}).backward" if layers else qualified(function)
    params = [param for param, _ in learner.named_parameters() if layer_index(param) == index]
    below = hidden[index - 1] if layers and index else None  # dLoss/d(its input), if compared
    return f"{who} {verb} it ({where(function)}){rest(name, params, below, over)}"


def rest(name: str, params: list[str], below: str | None, over: dict[str, bool]) -> str:
    """How the layer's other gradients compare, where `name` is one of its parameters or
    its input's gradient. Backward's order compares a layer's parameters before its input, so
    where the input's is the first to differ its parameters' agree: ": its dLoss/dx is wrong
    where its weight.grad and bias.grad agree"; for a parameter: ": its bias.grad agrees; its
    dLoss/dx differs too", ..."""
    def grads(names: list[str]) -> str:
        return " and ".join(param.rsplit(".", 1)[-1] + ".grad" for param in names)

    if name not in params:  # its input's gradient
        return f": its dLoss/dx is wrong where its {grads(params)} agree" if params else ""
    parts = [f"its {grads([param])} {'differs too' if over.get(param) else 'agrees'}"
             for param in params if param != name]
    if below is not None:
        parts.append("its dLoss/dx differs too" if over.get(below) else "its dLoss/dx agrees")
    return f": {'; '.join(parts)}" if parts else ""


def qualified(function) -> str:
    """"Conv2d.backward", "cross_entropy_grad" (under the learner's wrapper, if any), with
    its module's last name for a function: "functional.cross_entropy_grad"."""
    function = inspect.unwrap(function)
    module = function.__module__.rsplit(".", 1)[-1]
    return function.__qualname__ if "." in function.__qualname__ else (
        f"{module}.{function.__qualname__}")


def where(function) -> str:
    """'exercises/layers.py line 258': the file and the line of the function's def."""
    code = inspect.unwrap(function).__code__
    return f"{shown(code.co_filename)} line {code.co_firstlineno}"
