"""The operations the models run, recorded for the engine (manual/autograd.py) as torch records
them: the nodes of torch's graph, each forward with its backward formula beside it.

Twin of torch_impl/functions.py. Each function computes its forward on plain tensors and, when
an input requires grad (and no_grad() is not on), creates the node torch's autograd creates
for the same aten operation: its name, one edge per input in torch's order, the tensors it
saves under torch's names, and its formula. One nn module can be several nodes: nn.Linear is
TBackward0 (W^T) and AddmmBackward0 (b + x W^T), or MmBackward0 without a bias.

Each derivative is written once in the project. A layer's node runs that layer's own
backward from manual/layers.py, on a stand-in (holding) that holds only what the node
saved. The loss's nodes (log_softmax, nll_loss and the label smoothing's sum, neg,
masked_fill_, div, mul and add) have their formulas here: the chain's cross_entropy_grad
(manual/functional.py) is the derivative of their composition, (softmax(z) - q) / N.
"""

import torch

from manual import functional
from manual.autograd import Node, Variable, is_grad_enabled
from manual.layers import (
    AdaptiveAvgPool2d,
    BatchNorm1d,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    SyncBatchNorm,
    per_channel,
)

IGNORE_INDEX = -100  # F.cross_entropy's default: a target never ignored here


def record(name: str, formula, output: torch.Tensor, inputs: list, saved: dict) -> Variable:
    """output as a Variable, with a new node as its grad_fn when an input requires grad."""
    if not is_grad_enabled() or not any(v is not None and v.requires_grad for v in inputs):
        return Variable(output)
    return Variable(output, grad_fn=Node(name, formula, inputs, saved))


def holding(layer_class, **saved):
    """A layer of layer_class that holds only what its backward reads: a node's saved tensors.
    Its backward sets .grad on the stand-in's own weight and bias, never on the model's."""
    layer = layer_class.__new__(layer_class)
    layer.__dict__.update(saved)
    return layer


def holder(grad: torch.Tensor, *shape: int) -> torch.Tensor:
    """A tensor for a stand-in's parameter to carry .grad, where the node saved none: the
    bias (its gradient needs none), or the weight torch leaves unsaved when x needs no
    gradient (dLoss/dx = g W is the only use of W)."""
    return grad.new_empty(shape)  # grad's dtype and device


def forward(model, x: Variable) -> tuple[Variable, list[Variable]]:
    """model's forward, recorded: each layer's ops in order. x: (N, D) or (N, 1, H, W) ->
    (logits (N, C), the hidden outputs), as Chain.forward computes them. A model wrapped in
    DistributedDataParallel (manual/parallel.py): its work before forward, then the model's."""
    if hasattr(model, "pre_forward"):
        model.pre_forward()
        model = model.module
    layers = getattr(model, "layers", [model])
    hidden = []
    for layer in layers:
        x = LAYER_OPS[layer_kind(layer)](layer, x)
        hidden.append(x)
    return hidden.pop(), hidden


def layer_kind(layer) -> str:
    """The manual layer class a layer is or derives from: SoftmaxRegression -> "Linear"."""
    return next(cls.__name__ for cls in type(layer).__mro__ if cls.__name__ in LAYER_OPS)


def parameter(tensor: torch.Tensor | None) -> Variable | None:
    """A parameter as a leaf that requires grad: backward adds into tensor.grad."""
    return None if tensor is None else Variable(tensor, requires_grad=True)


# nn.Linear: F.linear(x, W, b) is addmm(b, x, t(W)), or mm(x, t(W)) without b.

def linear(layer: Linear, x: Variable) -> Variable:
    weight_t = t(parameter(layer.weight))
    if layer.bias is None:
        return mm(x, weight_t)
    return addmm(parameter(layer.bias), x, weight_t)


def t(weight: Variable) -> Variable:
    """TBackward0: W^T, a view. Its entries only move: dLoss/dW = (dLoss/dW^T)^T."""
    return record("TBackward0", lambda grad, needs: (grad.T,), weight.data.T, [weight], {})


def addmm(bias: Variable, mat1: Variable, mat2: Variable) -> Variable:
    """AddmmBackward0, saves mat1 and mat2: b + mat1 @ mat2, with mat1 = x, mat2 = W^T.
    Its formula is Linear.backward's on x and W = mat2^T: (sum_n g_n, g W, (g^T x)^T)."""
    output = torch.addmm(bias.data, mat1.data, mat2.data)
    saved = {"alpha": 1, "beta": 1, "mat1": mat1 if mat2.requires_grad else None,
             "mat2": mat2 if mat1.requires_grad else None}  # torch saves what the grads need
    return record("AddmmBackward0", addmm_backward, output, [bias, mat1, mat2], saved)


def addmm_backward(grad, needs, alpha, beta, mat1, mat2):
    grad_input, grad_weight_t, grad_bias = linear_backward(grad, needs[1], mat1, mat2, True)
    return grad_bias, grad_input, grad_weight_t


def linear_backward(grad, needs_input_grad: bool, x, mat2, bias: bool) -> tuple:
    """Linear.backward on x and W = mat2^T (a holder where the node saved no mat2):
    (dLoss/dx or None, (dLoss/dW)^T, which is dLoss/dmat2, dLoss/db or None)."""
    weight = holder(grad, grad.shape[1], x.shape[1]) if mat2 is None else mat2.T
    layer = holding(Linear, input=x, weight=weight,
                    bias=holder(grad, grad.shape[1]) if bias else None)
    grad_input = layer.backward(grad, needs_input_grad)
    return grad_input, layer.weight.grad.T, layer.bias.grad if bias else None


def mm(mat1: Variable, mat2: Variable) -> Variable:
    """MmBackward0, saves self and mat2: mat1 @ mat2; Linear.backward without a bias."""
    saved = {"mat2": mat2 if mat1.requires_grad else None,
             "self": mat1 if mat2.requires_grad else None}
    return record("MmBackward0", mm_backward, mat1.data @ mat2.data, [mat1, mat2], saved)


def mm_backward(grad, needs, mat2, self):
    grad_input, grad_weight_t, _ = linear_backward(grad, needs[0], self, mat2, False)
    return grad_input, grad_weight_t


def relu(layer: ReLU, x: Variable) -> Variable:
    """ReluBackward0, saves result: ReLU.backward, g where result > 0."""
    result = layer.forward(x.data)
    return record("ReluBackward0", relu_backward, result, [x], {"result": result})


def relu_backward(grad, needs, result):
    return (holding(ReLU, output=result).backward(grad),)


def batch_norm(layer: BatchNorm1d, x: Variable) -> Variable:
    """NativeBatchNormBackward0, saves input, weight, the running statistics, result1 (the
    batch mean) and result2 (1 / sqrt(var + eps)): BatchNorm1d.backward, or BatchNorm2d's
    for images (N, C, H, W)."""
    output = layer.forward(x.data)
    saved = {"eps": layer.eps, "input": x, "result1": layer.mean, "result2": layer.inv_std,
             "running_mean": layer.running_mean, "running_var": layer.running_var,
             "training": layer.training, "weight": layer.weight}
    inputs = [x, parameter(layer.weight), parameter(layer.bias)]
    if isinstance(layer, SyncBatchNorm):  # torch's is a Python Function, nn.SyncBatchNorm's
        result = record("SyncBatchNormBackward", sync_batch_norm_backward, output, inputs, saved)
    else:
        result = record("NativeBatchNormBackward0", batch_norm_backward, output, inputs, saved)
    if result.grad_fn is not None:  # BatchNorm1d or BatchNorm2d: whose backward it runs
        result.grad_fn.metadata["layer"] = type(layer)
    return result


def batch_norm_backward(grad, needs, eps, input, result1, result2, running_mean, running_var,
                        training, weight, layer_class=None):
    images = input.dim() == 4
    x = input.flatten(2) if images else input  # as the layer's forward normalized it
    layer_class = layer_class or (BatchNorm2d if images else BatchNorm1d)
    layer = holding(layer_class, weight=weight.detach(),
                    bias=holder(grad, grad.shape[1]), inv_std=result2,
                    x_hat=(x - per_channel(result1, x)).mul_(per_channel(result2, x)),
                    batch_statistics=training)
    grad_input = layer.backward(grad)
    return grad_input, layer.weight.grad, layer.bias.grad


def sync_batch_norm_backward(grad, needs, **saved):
    """SyncBatchNorm.backward: batch_norm_backward's, its two sums added up across the ranks."""
    return batch_norm_backward(grad, needs, **saved, layer_class=SyncBatchNorm)


def conv2d(layer: Conv2d, x: Variable) -> Variable:
    """ConvolutionBackward0, saves input and weight: Conv2d.backward."""
    output = layer.forward(x.data)
    saved = {"bias_sym_sizes_opt": [0] if layer.bias is None else list(layer.bias.shape),
             "dilation": [1, 1], "groups": 1, "input": x, "output_padding": [0, 0],
             "padding": list(layer.padding), "stride": list(layer.stride), "transposed": False,
             "weight": layer.weight}
    inputs = [x, parameter(layer.weight), parameter(layer.bias)]
    return record("ConvolutionBackward0", convolution_backward, output, inputs, saved)


def convolution_backward(grad, needs, bias_sym_sizes_opt, dilation, groups, input,
                         output_padding, padding, stride, transposed, weight):
    layer = holding(Conv2d, input=input, weight=weight.detach(), stride=tuple(stride),
                    bias=holder(grad, *bias_sym_sizes_opt) if needs[2] else None,
                    padding=tuple(padding), kernel_size=tuple(weight.shape[2:]))
    grad_input = layer.backward(grad, needs[0])
    return grad_input, layer.weight.grad, None if layer.bias is None else layer.bias.grad


def max_pool2d(layer: MaxPool2d, x: Variable) -> Variable:
    """MaxPool2DWithIndicesBackward0, saves self and result1 (the winners' indices):
    MaxPool2d.backward."""
    output = layer.forward(x.data)
    k, s = layer.kernel_size, layer.stride
    saved = {"ceil_mode": False, "dilation": [1, 1], "kernel_size": [k, k], "padding": [0, 0],
             "result1": layer.indices, "self": x, "stride": [s, s]}
    return record("MaxPool2DWithIndicesBackward0", max_pool2d_backward, output, [x], saved)


def max_pool2d_backward(grad, needs, ceil_mode, dilation, kernel_size, padding, result1, self,
                        stride):
    layer = holding(MaxPool2d, input_shape=self.shape, indices=result1)
    return (layer.backward(grad),)


def flatten(layer: Flatten, x: Variable) -> Variable:
    """ViewBackward0, saves self_sym_sizes: x.flatten(1) is a view; Flatten.backward."""
    output = layer.forward(x.data)
    saved = {"self_sym_sizes": list(x.shape)}
    return record("ViewBackward0", view_backward, output, [x], saved)


def view_backward(grad, needs, self_sym_sizes):
    return (holding(Flatten, input_shape=torch.Size(self_sym_sizes)).backward(grad),)


def mean(layer: AdaptiveAvgPool2d, x: Variable) -> Variable:
    """MeanBackward1, saves dim, keepdim and the input's sizes: nn.AdaptiveAvgPool2d((1, 1))
    is x.mean((-1, -2), keepdim=True) in torch; AdaptiveAvgPool2d.backward."""
    output = layer.forward(x.data)
    saved = {"dim": [-1, -2], "keepdim": True, "self_sym_numel": x.data.numel(),
             "self_sym_sizes": list(x.shape)}
    return record("MeanBackward1", mean_backward, output, [x], saved)


def mean_backward(grad, needs, dim, keepdim, self_sym_numel, self_sym_sizes):
    return (holding(AdaptiveAvgPool2d, input_shape=torch.Size(self_sym_sizes)).backward(grad),)


def basic_block(block, x: Variable) -> Variable:
    """The residual block, recorded: conv1, bn1, relu, conv2 and bn2 make f(x); x + f(x) is an
    AddBackward0 whose first input is x itself, which also feeds conv1: x forks, and the
    engine adds its two gradients; then relu (manual/model.py, BasicBlock)."""
    branch = x
    for _, layer in block.named_children():  # conv1, bn1, relu, conv2, bn2
        branch = LAYER_OPS[layer_kind(layer)](layer, branch)
    return relu(block.relu, add(x, branch))


LAYER_OPS = {"Linear": linear, "ReLU": relu, "BatchNorm1d": batch_norm, "Conv2d": conv2d,
             "MaxPool2d": max_pool2d, "Flatten": flatten, "AdaptiveAvgPool2d": mean,
             "BasicBlock": basic_block}


# F.cross_entropy: log_softmax, then nll_loss; with label smoothing eps, as torch composes it:
#     (1 - eps) nll_loss + eps / C sum_n (-sum_c log p_nc) / N

def cross_entropy(logits: Variable, targets: torch.Tensor,
                  label_smoothing: float = 0.0) -> Variable:
    """The mean cross-entropy of logits (N, C) against targets (N,), recorded node by node in
    torch's order (and so with torch's sequence numbers, relative to each other)."""
    log_p = log_softmax(logits)
    nll = nll_loss(log_p, targets)
    if not label_smoothing:
        return nll
    ignored = targets == IGNORE_INDEX
    smooth = neg(sum(log_p, dim=1))
    masked_fill_(smooth, ignored, 0.0)
    smoothed = mul(div(sum(smooth), (~ignored).sum()), label_smoothing / logits.shape[-1])
    return add(mul(nll, 1 - label_smoothing), smoothed)


def log_softmax(x: Variable) -> Variable:
    """LogSoftmaxBackward0, saves result and dim. y = z - log sum_k exp(z_k), so
    dy_c/dz_j = [c == j] - softmax(z)_j and dLoss/dz = g - exp(y) sum_c g_c."""
    result = functional.log_softmax(x.data)  # the exercise's, looked up when called
    return record("LogSoftmaxBackward0", log_softmax_backward, result, [x],
                  {"dim": 1, "result": result})


def log_softmax_backward(grad, needs, dim, result):
    return (grad - result.exp() * grad.sum(dim, keepdim=True),)


def nll_loss(log_p: Variable, targets: torch.Tensor) -> Variable:
    """NllLossBackward0, saves self, target and total_weight (N): -sum_n log_p[n, t_n] / N.
    dLoss/dlog_p[n, c] = -g / N where c = t_n, 0 elsewhere."""
    total_weight = (targets != IGNORE_INDEX).sum().to(log_p.data.dtype)
    output = -log_p.data.gather(1, targets.unsqueeze(1)).sum() / total_weight
    saved = {"ignore_index": IGNORE_INDEX, "reduction": 1, "self": log_p, "target": targets,
             "total_weight": total_weight, "weight": None}
    return record("NllLossBackward0", nll_loss_backward, output, [log_p], saved)


def nll_loss_backward(grad, needs, ignore_index, reduction, self, target, total_weight, weight):
    per_target = (-(grad / total_weight)).expand(len(target), 1)
    return (torch.zeros_like(self).scatter_(1, target.unsqueeze(1), per_target),)


def sum(x: Variable, dim: int | None = None) -> Variable:
    """SumBackward0 (every entry) or SumBackward1 (over dim), saves self_sym_sizes: each
    entry moves the sum one for one, so dLoss/dx = g, copied back over the summed dims."""
    sizes = list(x.shape)
    if dim is None:
        return record("SumBackward0", lambda grad, needs, self_sym_sizes:
                      (grad.expand(self_sym_sizes),), x.data.sum(), [x],
                      {"self_sym_sizes": sizes})
    saved = {"dim": [dim], "keepdim": False, "self_sym_sizes": sizes}
    return record("SumBackward1", lambda grad, needs, dim, keepdim, self_sym_sizes:
                  (grad.unsqueeze(dim[0]).expand(self_sym_sizes),), x.data.sum(dim), [x], saved)


def neg(x: Variable) -> Variable:
    """NegBackward0: -x, so dLoss/dx = -g."""
    return record("NegBackward0", lambda grad, needs: (grad.neg(),), x.data.neg(), [x], {})


def masked_fill_(x: Variable, mask: torch.Tensor, value: float) -> Variable:
    """MaskedFillBackward0, saves mask: x[mask] = value, in place. The filled entries no
    longer depend on x: dLoss/dx = g, 0 where mask. In place, so x's grad_fn becomes the new
    node, whose edge leads to the old one (and x's version counter moves on)."""
    x.data.masked_fill_(mask, value)
    before = Variable(x.data, grad_fn=x.grad_fn)
    changed = record("MaskedFillBackward0", lambda grad, needs, mask:
                     (grad.masked_fill(mask, 0),), x.data, [before], {"mask": mask})
    if changed.grad_fn is not None:
        changed.grad_fn.retained, x.grad_fn.retained = x.grad_fn.retained, []
        x.grad_fn = changed.grad_fn
    return x


def div(x: Variable, other: torch.Tensor) -> Variable:
    """DivBackward0, saves other (and self, only for other's gradient, not needed for a
    count): x / other; dLoss/dx = g / other."""
    return record("DivBackward0", lambda grad, needs, other, self: (grad / other, None),
                  x.data / other, [x, Variable(other)], {"other": other, "self": None})


def mul(x: Variable, other: float) -> Variable:
    """MulBackward1, saves other (a number): x other, so dLoss/dx = g other."""
    return record("MulBackward1", lambda grad, needs, other: (grad * other,), x.data * other,
                  [x], {"other": other})


def add(x: Variable, other: Variable) -> Variable:
    """AddBackward0, saves alpha (1): x + other. The residual block's skip, x + f(x)."""
    return record("AddBackward0", add_backward, x.data + other.data, [x, other], {"alpha": 1})


def add_backward(grad, needs, alpha):
    """s = x + alpha other moves one for one with x and alpha for one with other:
    (dLoss/dx, dLoss/dother) = (g, alpha g). The skip passes g to x as it is; where x also
    feeds another path (the residual block's f), the engine adds this share to that path's."""
    return grad, grad if alpha == 1 else alpha * grad

# The layer whose backward each layer node runs: its formula, for the tutor to point at. A
# batch norm's node keeps its layer (BatchNorm1d or BatchNorm2d) in its metadata instead.
LAYER_BACKWARD = {"AddmmBackward0": Linear, "MmBackward0": Linear, "ReluBackward0": ReLU,
                  "ConvolutionBackward0": Conv2d,
                  "MaxPool2DWithIndicesBackward0": MaxPool2d, "ViewBackward0": Flatten,
                  "MeanBackward1": AdaptiveAvgPool2d}


def formula_of(node):
    """The function that holds a node's formula, for the tutor to point at: the backward of
    the layer it runs (a batch norm's: the layer's class, kept in its metadata), else the
    node's own formula."""
    layer = node.metadata.get("layer") or LAYER_BACKWARD.get(node.name())
    return node.formula if layer is None else layer.backward
