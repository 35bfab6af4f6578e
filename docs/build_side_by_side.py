"""Build docs/side_by_side.html: every manual/ function beside its torch_impl/ twin.

    python docs/build_side_by_side.py          # or: make docs
    python docs/build_side_by_side.py --check  # exit 1 if the committed page is stale

The page is made from the live source, never by hand, so it cannot drift from the
code (tests/test_docs.py rebuilds it in memory and compares it byte for byte).
It only parses files (ast), it imports nothing from the project.

How the pairs are found. Every file name in manual/ has its twin in torch_impl/
(functional.py, layers.py, model.py, optim.py, train.py, ...). In each pair of files,
every function, class and method is paired with the item of the same qualified name
(`softmax` with `softmax`, `Chain.forward` with `Chain.forward`). Where torch_impl/ has no
such definition, the torch side shows what it has instead, found in this order:

1. an import of that name: torch_impl/optim.py re-exports torch.optim.SGD, Adam, AdamW
   and Optimizer, so the manual class `SGD` faces the line `from torch.optim import SGD,
   Adam, AdamW, Optimizer`, and
   torch_impl/layers.py re-exports nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Conv2d,
   nn.MaxPool2d, nn.Flatten, nn.BatchNorm2d and nn.AdaptiveAvgPool2d; or a module's
   attribute given that name, as
   torch_impl/autograd.py's `no_grad = torch.no_grad`;
2. a comment naming it inside the twin class, `# name:` or `# name():`, or several
   names separated by commas or slashes before the colon; it runs on over the comment
   lines below it, up to the next such comment: the manual `Chain.backward` faces
   `# backward: written by autograd ...` in torch_impl/model.py, and `Chain.train` and
   `Chain.eval` both face `# named_parameters(), named_buffers(), train(), eval(): ...`;
3. for a method of a class that torch_impl/ imports from torch (`SGD.step`,
   `Linear.forward`), a note naming torch's own method, which is not in this repository;
4. otherwise a note that there is no counterpart.

An item only torch_impl/ has, a definition or such a comment in a class both files
have, gets its own section, just before the pair of the torch item that follows it.
On the left, the method the manual class inherits under that name from a base class
of manual/ (`class SoftmaxRegression(Linear)` runs Linear.forward and Linear.backward,
shown from manual/layers.py, beside torch's SoftmaxRegression.forward and its
`# backward:` comment; `class CNN(Chain)` runs Chain.backward, beside the `# backward:`
comment of torch's CNN); else a note that there is no counterpart.

NOTES, below, adds a sentence by hand where the automatic match says too little:
the manual helpers target_distribution and check_arguments have no twin because
F.cross_entropy does that work inside its C++ kernel; torch's own SGD and
CosineAnnealingLR methods are described; and so are the nn.Module methods of the
layers, where rule 3 would name a method that does not exist (nn.Linear has no
backward: autograd runs the backward of the operations its forward recorded;
nn.MaxPool2d has no windows: its C++ kernel walks the windows itself) or would not
say that parameters(), train(), ... are inherited from nn.Module. In autograd.py and
functions.py, where torch_impl/ has only what Python reaches (backward, no_grad, Variable,
forward, cross_entropy), the notes name what torch runs in C++ instead: the engine
(torch/csrc/autograd/engine.cpp), its nodes (torch/csrc/autograd/generated/Functions.cpp,
from tools/autograd/derivatives.yaml), SavedVariable and the recording kernels
(VariableType). The pairing "cross_entropy_grad (left) against loss.backward() (right)"
needs no exception: it holds by name, since torch_impl.functional.cross_entropy_grad is
the function that calls loss.backward().

The formula above each pair comes from the manual docstring (the torch one where
manual/ has none): its first paragraph, then its first displayed formula (an
indented block, as SGD's update rule or the derivation of cross_entropy_grad)
inside the sentence that introduces it: from that sentence's start, and on to its
end when it goes on after the block. A class is shown with its docstring and
__init__; its other methods follow one by one. __init__.py files give only the
two packages' docstrings, at the top of the columns.

Output is deterministic: files in a fixed order (the ORDER below, then any others
sorted by name), items in source order, no timestamps; Pygments is pinned in
requirements.txt because its markup is part of the page.
"""

import argparse
import ast
import dataclasses
import html
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import PythonLexer

REPO_ROOT = Path(__file__).resolve().parents[1]
OUTPUT = Path("docs") / "side_by_side.html"
SIDES = ("manual", "torch_impl")
ORDER = ("functional", "layers", "model", "optim", "lr_scheduler", "train")  # others, sorted
STYLE = "friendly"
CSS_CLASS = "code"

# "file stem.qualified name" of a manual item -> what to say on the torch side.
NOTES = {
    "functional.target_distribution":
        "No twin: F.cross_entropy builds the target distribution q itself, inside its "
        "C++ kernel, from the label_smoothing it is given.",
    "functional.check_arguments":
        "No twin: F.cross_entropy checks reduction and label_smoothing itself; the manual "
        "code raises the same errors with the same messages.",
    "layers.Linear.forward":
        "torch.nn.Linear.forward() (torch/nn/modules/linear.py) returns F.linear(x, weight, "
        "bias), which for a 2-D x runs the same addmm(bias, x, weight.T) (x @ weight.T with no "
        "bias); autograd records it, and saves x, for backward.",
    "layers.Linear.backward":
        "nn.Linear has no backward method: in loss.backward(), autograd runs the backward of "
        "what forward recorded, AddmmBackward0 (MmBackward0 with no bias): g W for x, g^T x for "
        "the weight (through TBackward0, its .T), sum_n g_n for the bias. AccumulateGrad then "
        "adds each into .grad, which zero_grad() left as None.",
    "layers.Linear.named_parameters":
        "nn.Module.named_parameters(), inherited by nn.Linear: (\"weight\", W), then "
        "(\"bias\", b), in the order __init__ registered them; a generator, not a list.",
    "layers.Linear.parameters":
        "nn.Module.parameters(), inherited: the tensors of named_parameters(), without their "
        "names; a generator, not a list.",
    "layers.initialized":
        "No twin: nn.Linear and nn.Conv2d draw their own parameters in reset_parameters(), "
        "called by __init__ (torch/nn/modules/linear.py, conv.py): "
        "init.kaiming_uniform_(weight, a=math.sqrt(5)), whose bound is 1/sqrt(fan_in) up to "
        "rounding, then the bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in from "
        "init._calculate_fan_in_and_fan_out(weight).",
    "layers.pair":
        "No twin: nn.Conv2d's __init__ makes the same pairs with _pair "
        "(torch/nn/modules/utils.py, _ntuple(2)): 3 -> (3, 3), a tuple kept as it is.",
    "layers.ReLU.forward":
        "torch.nn.ReLU.forward() returns F.relu(x), that is torch.relu(x); autograd records it "
        "and saves the output y for backward, as the manual method does.",
    "layers.ReLU.backward":
        "nn.ReLU has no backward method: autograd runs ReluBackward0, threshold_backward(g, y, 0): "
        "g where the saved output y > 0, else 0, so at x = 0 the gradient is 0 here too.",
    "layers.ReLU.named_parameters":
        "nn.Module.named_parameters(), inherited: nn.ReLU registers no parameter, so it yields "
        "nothing.",
    "layers.ReLU.parameters":
        "nn.Module.parameters(), inherited: nothing to yield, as here.",
    "layers.BatchNorm1d.count":
        "No such method in nn.BatchNorm1d: its kernel (native_batch_norm) counts a channel's "
        "values itself. nn.SyncBatchNorm's forward gathers every rank's count "
        "(torch/nn/modules/_functions.py, SyncBatchNorm.forward).",
    "layers.BatchNorm1d.total":
        "No such method in nn.BatchNorm1d: the kernel sums over the batch it has. The hook "
        "exists here so that SyncBatchNorm adds its sums up across the ranks, with "
        "BatchNorm1d's formulas written once.",
    "layers.BatchNorm1d.train":
        "nn.Module.train(mode=True), inherited: sets .training on the module and on every "
        "submodule, and returns the module.",
    "layers.BatchNorm1d.eval":
        "nn.Module.eval(), inherited: train(False).",
    "layers.BatchNorm1d.forward":
        "torch.nn.BatchNorm1d.forward() (torch/nn/modules/batchnorm.py, _BatchNorm) adds 1 to "
        "num_batches_tracked in training mode, then calls F.batch_norm: its kernel normalizes "
        "and updates running_mean and running_var (with the unbiased var) in place.",
    "layers.BatchNorm1d.backward":
        "nn.BatchNorm1d has no backward method: autograd runs what F.batch_norm recorded, "
        "NativeBatchNormBackward0 on the CPU (native_batch_norm_backward; on a GPU, cuDNN's "
        "kernel may take its place): the same three gradients, from x and the batch mean and "
        "1/s its forward saved (in eval mode, from running_mean and running_var).",
    "layers.BatchNorm1d.named_parameters":
        "nn.Module.named_parameters(), inherited: (\"weight\", gamma), then (\"bias\", beta), as "
        "nn.BatchNorm1d's __init__ registers them; a generator, not a list.",
    "layers.BatchNorm1d.parameters":
        "nn.Module.parameters(), inherited: gamma and beta, without their names.",
    "layers.BatchNorm1d.named_buffers":
        "nn.Module.named_buffers(), inherited: running_mean, running_var and "
        "num_batches_tracked, which nn.BatchNorm1d's __init__ registers with register_buffer: "
        "saved by state_dict() and moved by .to(), but not given to the optimizer.",
    "layers.Conv2d.forward":
        "torch.nn.Conv2d.forward() (torch/nn/modules/conv.py) returns self._conv_forward(x, "
        "weight, bias), that is F.conv2d(x, weight, bias, stride, padding, dilation, groups) "
        "with the default padding_mode=\"zeros\": the call the manual method makes. Autograd "
        "records it, and saves x and W, for backward. On the CPU, float32 usually runs "
        "oneDNN's kernel (mkldnn_convolution; some small shapes take slow_conv2d instead), "
        "float64 slow_conv2d: im2col, then a matrix product.",
    "layers.Conv2d.backward":
        "nn.Conv2d has no backward method: autograd runs what F.conv2d recorded, "
        "ConvolutionBackward0 (aten convolution_backward): the weight gradient as the input "
        "correlated with g, sum_{n, p, q} g for the bias, and dLoss/dx as a transposed "
        "convolution of g with W, skipped when x needs no gradient. On the CPU, the backend "
        "of the forward does it: usually oneDNN (mkldnn) for float32, slow_conv2d's backward "
        "for float64 (g times the im2col columns of x for W, W^T g folded back with col2im "
        "for x). AccumulateGrad then adds each into .grad.",
    "layers.Conv2d.named_parameters":
        "nn.Module.named_parameters(), inherited by nn.Conv2d: (\"weight\", W), then "
        "(\"bias\", b), in the order _ConvNd's __init__ registered them (with bias=False it "
        "registers bias as None, which is skipped); a generator, not a list.",
    "layers.Conv2d.parameters":
        "nn.Module.parameters(), inherited: W and b, without their names; a generator, not a "
        "list.",
    "layers.MaxPool2d.windows":
        "No method of nn.MaxPool2d: its CPU kernel (cpu_max_pool, "
        "aten/src/ATen/native/cpu/MaxPoolKernel.cpp) takes one output entry at a time and "
        "walks its window row by row; manual/ takes one offset at a time, in every window at "
        "once, and these slices pick it out.",
    "layers.MaxPool2d.forward":
        "torch.nn.MaxPool2d.forward() (torch/nn/modules/pooling.py) returns F.max_pool2d(x, "
        "kernel_size, stride, ...), that is torch.max_pool2d, which on the CPU runs "
        "max_pool2d_with_indices: its kernel walks each window row by row and takes an entry "
        "when val > maxval || isnan(val), so of tied entries the first in row-major order "
        "wins, as here. Autograd saves x and the winners' indices (int64, h W + w in the "
        "input plane) for backward.",
    "layers.MaxPool2d.backward":
        "nn.MaxPool2d has no backward method: autograd runs MaxPool2DWithIndicesBackward0, "
        "max_pool2d_with_indices_backward: into a zero dLoss/dx, each output's g is added at "
        "the index its forward saved, the first maximum of its window; where windows overlap "
        "(stride < kernel_size), an entry that won several gets the sum of their g.",
    "layers.MaxPool2d.named_parameters":
        "nn.Module.named_parameters(), inherited: nn.MaxPool2d registers no parameter, so it "
        "yields nothing.",
    "layers.MaxPool2d.parameters":
        "nn.Module.parameters(), inherited: nothing to yield, as here.",
    "layers.Flatten.forward":
        "torch.nn.Flatten.forward() (torch/nn/modules/flatten.py) returns "
        "input.flatten(self.start_dim, self.end_dim), start_dim=1 and end_dim=-1 by default: "
        "the call the manual method makes, a view of a contiguous x (no copy), a reshaped "
        "copy of any other.",
    "layers.Flatten.backward":
        "nn.Flatten has no backward method: autograd runs the backward of the reshape that "
        "flatten recorded, ViewBackward0 (UnsafeViewBackward0 when it had to copy): "
        "g.reshape to x's shape, (N, C, H, W); no number changes.",
    "layers.Flatten.named_parameters":
        "nn.Module.named_parameters(), inherited: nn.Flatten registers no parameter, so it "
        "yields nothing.",
    "layers.Flatten.parameters":
        "nn.Module.parameters(), inherited: nothing to yield, as here.",
    "layers.batch_dims":
        "No twin: torch's batch-norm CPU kernel (batch_norm_cpu_collect_stats_contiguous_impl, "
        "aten/src/ATen/native/cpu/batch_norm_kernel.cpp) takes any input (N, C, *) as "
        "(N, C, image_size), image_size = numel / (N C), and loops over each channel's N "
        "image_size values itself.",
    "layers.per_channel":
        "No twin: torch's kernel (batch_norm_cpu_transform_input_template, "
        "aten/src/ATen/native/cpu/batch_norm_kernel.cpp) computes each channel's alpha and "
        "beta once, then runs over that channel's values: no broadcasting.",
    "layers.SyncBatchNorm.backward":
        "torch_impl's SyncBatchNorm has no backward method: on the CPU, autograd differentiates "
        "its forward, and the backward of torch.distributed.nn.functional.all_reduce "
        "all-reduces the gradients of the two sums; on CUDA, nn.SyncBatchNorm's Function "
        "(torch/nn/modules/_functions.py, SyncBatchNorm.backward) all-reduces sum_dy and "
        "sum_dy_xmu, the same two sums.",
    "layers.SyncBatchNorm.count":
        "On the CPU, forward all-reduces the count the same way; nn.SyncBatchNorm all-gathers "
        "every rank's count with its mean and invstd (batch_norm_gather_stats_with_counts).",
    "layers.SyncBatchNorm.total":
        "On the CPU, forward's all_reduce_differentiable of the two sums; nn.SyncBatchNorm "
        "combines every rank's mean and invstd by their counts instead (Welford), the same "
        "statistics up to rounding.",
    "layers.SyncBatchNorm.like":
        "No twin: nn.SyncBatchNorm.convert_sync_batchnorm builds a new module and hands it the "
        "same Parameters and buffers.",
    "layers.BatchNorm2d.forward":
        "torch.nn.BatchNorm2d.forward() is _BatchNorm.forward (torch/nn/modules/batchnorm.py), "
        "after _check_input_dim raised the same ValueError for an input that is not 4-D: "
        "F.batch_norm, which on the CPU runs native_batch_norm (batch_norm_cpu, "
        "aten/src/ATen/native/Normalization.cpp) and its kernel "
        "(aten/src/ATen/native/cpu/batch_norm_kernel.cpp): each channel's mean and variance over "
        "its N H W values, summed in float64 (float's accumulate type), then "
        "y = x alpha + (beta - mean alpha), alpha = gamma / sqrt(var + eps), a fused multiply-add: "
        "the arithmetic the manual forward follows, so that the two outputs are bit-identical. "
        "running_var takes the unbiased variance over the N H W values.",
    "layers.BatchNorm2d.backward":
        "nn.BatchNorm2d has no backward method: autograd runs what F.batch_norm recorded, "
        "NativeBatchNormBackward0, as for nn.BatchNorm1d: native_batch_norm_backward "
        "(batch_norm_backward_cpu in aten/src/ATen/native/Normalization.cpp, its kernel in "
        "aten/src/ATen/native/cpu/batch_norm_kernel.cpp), the native_batch_norm entry of "
        "tools/autograd/derivatives.yaml: the same formula, each channel's two sums over its "
        "N H W values, in the kernel's own order.",
    "layers.AdaptiveAvgPool2d.forward":
        "torch.nn.AdaptiveAvgPool2d.forward() (torch/nn/modules/pooling.py) returns "
        "F.adaptive_avg_pool2d(x, output_size); for an output of 1 x 1, aten's "
        "adaptive_avg_pool2d (aten/src/ATen/native/AdaptiveAveragePooling.cpp) computes "
        "input.mean({-1, -2}, keepdim=true), the call the manual method makes.",
    "layers.AdaptiveAvgPool2d.backward":
        "nn.AdaptiveAvgPool2d has no backward method: autograd runs what the mean recorded, "
        "MeanBackward1, the mean.dim entry of tools/autograd/derivatives.yaml: "
        "mean_backward(grad, sizes, dim, numel, keepdim), g expanded over each plane and "
        "divided by H W.",
    "layers.AdaptiveAvgPool2d.named_parameters":
        "nn.Module.named_parameters(), inherited: nn.AdaptiveAvgPool2d registers no parameter, "
        "so it yields nothing.",
    "layers.AdaptiveAvgPool2d.parameters":
        "nn.Module.parameters(), inherited: nothing to yield, as here.",
    "model.Chain.parameters":
        "parameters(), inherited from nn.Module like named_parameters(): the same tensors in "
        "the same order, without their names.",
    "model.BasicBlock":
        "torchvision's BasicBlock (torchvision/models/resnet.py) is the same block, with a "
        "stride for conv1 and an optional downsample for the skip (a 1 x 1 convolution and a "
        "BatchNorm2d, where the block halves the size or changes the width); here the stages "
        "between the blocks do that, so the skip is always x itself. torchvision adds in place, "
        "out += identity, the branch first: its AddBackward0's edges come in the other order.",
    "model.BasicBlock.named_children":
        "nn.Module.named_children(), inherited: (name, module) for conv1, bn1, relu, conv2 and "
        "bn2, in the order __init__ assigned them; a generator, not a list.",
    "model.BasicBlock.named_parameters":
        "nn.Module.named_parameters(), inherited: each submodule's parameters under its name, "
        "\"conv1.weight\", \"bn1.weight\", \"bn1.bias\", ..., in that order; a generator, not "
        "a list.",
    "model.BasicBlock.parameters":
        "nn.Module.parameters(), inherited: the same tensors in the same order, without their "
        "names.",
    "model.BasicBlock.named_buffers":
        "nn.Module.named_buffers(), inherited: bn1's and bn2's running_mean, running_var and "
        "num_batches_tracked, as \"bn1.running_mean\", ...",
    "model.BasicBlock.train":
        "nn.Module.train(mode=True), inherited: sets .training on the block and on every "
        "submodule (only the two BatchNorm2d act on it), and returns the block.",
    "model.ResNet":
        "torchvision's ResNet (torchvision/models/resnet.py) has the same parts at a larger "
        "scale: a 7 x 7 stem with stride 2, BatchNorm2d, ReLU and 3 x 3 max pooling, four "
        "stages of blocks, each stage after the first opening with a strided block whose skip "
        "is downsampled, then AdaptiveAvgPool2d((1, 1)), flatten and one Linear, fc.",
    "optim.Optimizer.zero_grad":
        "torch.optim.Optimizer.zero_grad(), inherited by SGD, Adam and AdamW: with its default "
        "set_to_none=True it sets every p.grad to None, as the manual method does.",
    "optim.Optimizer.gradients":
        "No method of torch.optim.Optimizer: each step() gathers the parameters whose .grad "
        "is not None (_init_group), and the update function negates each gradient itself "
        "when maximize is set.",
    "optim.SGD.step":
        "torch.optim.SGD.step() (torch/optim/sgd.py) applies the same update rule, one "
        "parameter at a time, or all at once with torch._foreach_* kernels on a GPU.",
    "optim.Adam.step":
        "torch.optim.Adam.step() (torch/optim/adam.py) runs _single_tensor_adam on the CPU: "
        "the same operations in the same order (lerp_, mul_ and addcmul_, addcdiv_), so the "
        "results are bit-identical; on a GPU, _multi_tensor_adam does the same with "
        "torch._foreach_* kernels, all parameters at once.",
    "optim.Adam.init_state":
        "Inside torch.optim.Adam._init_group: on a parameter's first step, state['step'] = "
        "tensor(0.) (a tensor, so that CUDA graphs can capture it), and exp_avg, exp_avg_sq "
        "(and max_exp_avg_sq with amsgrad) as torch.zeros_like(p, "
        "memory_format=torch.preserve_format).",
    "optim.Adam.decay":
        "Inside _single_tensor_adam: with weight_decay != 0, grad = grad.add(param, "
        "alpha=weight_decay), or, when decoupled_weight_decay (AdamW), param.mul_(1 - lr * "
        "weight_decay).",
    "optim.Adam.bias_corrections":
        "Inside _single_tensor_adam: bias_correction1 = 1 - beta1 ** step and "
        "bias_correction2 = 1 - beta2 ** step, with step read from the state tensor.",
    "optim.Adam.denominator":
        "Inside _single_tensor_adam: denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt)"
        ".add_(eps), then param.addcdiv_(exp_avg, denom, value=-lr / bias_correction1).",
    "optim.AdamW.decay":
        "torch.optim.AdamW is Adam with decoupled_weight_decay=True: _single_tensor_adam "
        "then runs param.mul_(1 - lr * weight_decay) and leaves the gradient alone.",
    "lr_scheduler.CosineAnnealingLR.step":
        "torch.optim.lr_scheduler.CosineAnnealingLR.step(), torch's own method: it reaches "
        "the same lr_t recursively, from lr_(t-1) times a ratio of two cosines, so the last "
        "bits may differ from the closed form.",
    "lr_scheduler.CosineAnnealingLR.get_last_lr":
        "get_last_lr(), inherited from torch.optim.lr_scheduler.LRScheduler: the lr of each "
        "parameter group after the last step().",
    "train.kept":
        "No twin: torch's retain_grad() keeps dLoss/dlogits in logits.grad, on the tensor "
        "forward returned, so there is nothing to copy back.",
    "autograd.Variable.is_leaf":
        "torch.Tensor.is_leaf, a property in C++ (torch/csrc/autograd/python_variable.cpp): "
        "True when the tensor has no grad_fn, as here, so a tensor that requires no grad is a "
        "leaf too.",
    "autograd.Variable.grad":
        "torch.Tensor.grad: Tensor::grad() (ATen/core/TensorBody.h) returns the tensor's own "
        ".grad, which AccumulateGrad fills for a leaf and retain_grad()'s hook for a non-leaf; "
        "on a non-leaf that did not call retain_grad() it is None, with the same warning.",
    "autograd.Variable._version":
        "torch.Tensor._version: the tensor's version counter (c10/core/TensorImpl.h), shared "
        "with its views and bumped by every in-place operation (increment_version in the "
        "generated ADInplaceOrView kernels); SavedVariable records it when it saves a tensor.",
    "autograd.Variable.shape":
        "torch.Tensor.shape, a torch.Size: a tensor is its own Variable, so nothing is "
        "forwarded.",
    "autograd.Variable.retain_grad":
        "torch.Tensor.retain_grad() (VariableHooks::retain_grad, "
        "torch/csrc/autograd/variable.cpp): a no-op on a leaf; on a non-leaf it adds a "
        "retains_grad hook to its grad_fn, which sets .grad to a contiguous clone of the "
        "gradient that reaches that node, or adds to it on later backward() calls.",
    "autograd.Variable.grad_accumulator":
        "No Python method: impl::grad_accumulator (torch/csrc/autograd/variable.cpp) makes a "
        "leaf's AccumulateGrad when an operation first records an edge to it, and the leaf "
        "keeps only a weak pointer to it (grad_accumulator_), so one node serves while a graph "
        "holds it; from Python, reach it through grad_fn.next_functions.",
    "autograd.Variable.backward":
        "torch.Tensor.backward(gradient, retain_graph, ...) (torch/_tensor.py) calls "
        "torch.autograd.backward(self, gradient, retain_graph, ...), as here.",
    "autograd.edge":
        "impl::gradient_edge (torch/csrc/autograd/variable.cpp), called by collect_next_edges "
        "when an operation is recorded: Edge(grad_fn, output_nr) for a non-leaf, "
        "Edge(grad_accumulator, 0) for a leaf that requires grad, else an invalid edge, which "
        "next_functions shows as (None, 0).",
    "autograd.Node":
        "torch::autograd::Node (torch/csrc/autograd/node.h), the C++ base of every grad_fn: "
        "next_edges_, sequence_nr_, the hooks and apply(). Each entry of "
        "tools/autograd/derivatives.yaml generates a subclass holding its SavedVariables "
        "(AddmmBackward0, ... in torch/csrc/autograd/generated/Functions.h), which Python sees "
        "as a torch.autograd.graph.Node.",
    "autograd.Node.name":
        "grad_fn.name(): Node::name(), which each generated node overrides with its class "
        "name (\"AddmmBackward0\"); AccumulateGrad's is \"torch::autograd::AccumulateGrad\".",
    "autograd.Node._sequence_nr":
        "grad_fn._sequence_nr(): Node::sequence_nr(), taken when the node is built from "
        "at::sequence_number::get_and_increment(), a counter per thread; AccumulateGrad's is "
        "UINT64_MAX.",
    "autograd.Node.__repr__":
        "Python's default repr: a grad_fn prints as <AddmmBackward0 object at 0x...>, "
        "without its sequence number.",
    "autograd.Node.__dir__":
        "No method: each generated node class lists its saved values as attributes, "
        "_saved_<name> and _raw_saved_<name> (the SavedVariable itself), in the PyGetSetDef "
        "table that tools/autograd/gen_autograd_functions.py writes into "
        "torch/csrc/autograd/generated/python_functions.cpp.",
    "autograd.Node.__getattr__":
        "No method: _saved_mat1 and the others are getters generated per node "
        "(THPAddmmBackward0_mat1_getter in torch/csrc/autograd/generated/python_functions.cpp), "
        "each unpacking its SavedVariable, or converting a saved number or list.",
    "autograd.Node.unpack":
        "SavedVariable::unpack (torch/csrc/autograd/saved_variable.cpp): ERR_BACKWARD_TWICE, "
        "the same message, once release_variables() has reset its data; and, when the tensor's "
        "version counter has moved on since it was saved, the same \"modified by an inplace "
        "operation\" error, followed in torch by a hint about anomaly detection.",
    "autograd.Node.__call__":
        "Node::operator() calls apply(), which each node defines in "
        "torch/csrc/autograd/generated/Functions.cpp: it unpacks its SavedVariables and "
        "evaluates, for each input that needs a gradient (task_should_compute_output(i): edge "
        "i is valid; here needs_input_grad), its formula from tools/autograd/derivatives.yaml "
        "(addmm's mat1: mm_mat1_backward(grad, mat2, ...)), leaving the others undefined.",
    "autograd.Node.release":
        "Node::release_variables(), generated per node: AddmmBackward0's resets mat1_ and "
        "mat2_ and keeps alpha and beta. engine.cpp's evaluate_function calls it once the node "
        "has run, unless retain_graph (keep_graph_).",
    "autograd.Node.register_prehook":
        "grad_fn.register_prehook(hook) (torch.autograd.graph.Node): hook(grad_outputs), run by "
        "call_pre_hooks in engine.cpp just before the node; what it returns, if not None, "
        "replaces grad_outputs. It returns a RemovableHandle.",
    "autograd.Node.register_hook":
        "grad_fn.register_hook(hook) (torch.autograd.graph.Node): hook(grad_inputs, "
        "grad_outputs), run by call_post_hooks in engine.cpp after the node; what it returns, "
        "if not None, replaces grad_inputs. It returns a RemovableHandle.",
    "autograd.AccumulateGrad":
        "torch::autograd::AccumulateGrad (torch/csrc/autograd/functions/accumulate_grad.h): "
        "built with sequence_nr UINT64_MAX, so it runs first of the ready nodes; it holds its "
        "leaf, and has one input, dLoss/dleaf, and no edges.",
    "autograd.AccumulateGrad.__call__":
        "AccumulateGrad::apply, then accumulateGrad (accumulate_grad.h): when .grad is "
        "undefined it takes the incoming gradient itself if nothing else holds it and its "
        "strides suit the leaf (no copy), else a clone obeying the gradient layout contract; "
        "otherwise, grad mode being off, variable_grad += new_grad in place.",
    "autograd.is_grad_enabled":
        "torch.is_grad_enabled() reads GradMode::is_enabled() (c10/core/GradMode.h), a flag "
        "per thread; compute_requires_grad, in every generated VariableType kernel, checks it "
        "first and records no node while it is off.",
    "autograd.no_grad":
        "torch.no_grad (torch/autograd/grad_mode.py): __enter__ saves torch.is_grad_enabled() "
        "and calls torch.set_grad_enabled(False), __exit__ restores it; it works on one thread "
        "only, and also as a decorator.",
    "autograd.backward":
        "torch.autograd.backward (torch/autograd/__init__.py) makes the default gradient "
        "(_make_grads: ones for a scalar, else \"grad can be implicitly created only for scalar "
        "outputs\") and calls Engine::execute (torch/csrc/autograd/engine.cpp): "
        "compute_dependencies, then a ReadyQueue that pops the largest sequence_nr first "
        "(CompareNodeTaskTime), until every node has run.",
    "autograd.dependencies":
        "Engine::compute_dependencies (torch/csrc/autograd/engine.cpp): a walk from the root "
        "over next_edges that counts, in the GraphTask's dependencies_, how many edges lead to "
        "each node it reaches.",
    "autograd.run":
        "Engine::evaluate_function and call_function (torch/csrc/autograd/engine.cpp): the "
        "tensor pre-hooks, retain_grad's hooks last of them, then the node's own pre-hooks (so "
        "a retained gradient is the one before any register_prehook hook), the node, "
        "validate_outputs (which sums a gradient to its input's shape: addmm's bias), the post "
        "hooks, and release_variables() unless retain_graph. Each output then goes into the "
        "next node's InputBuffer (input_buffer.cpp, which adds at fan-out), and a node whose "
        "count of dependencies reaches 0 is pushed on the ready queue.",
    "functions.record":
        "No twin: torch records in its generated autograd kernels "
        "(torch/csrc/autograd/generated/VariableType_*.cpp): if compute_requires_grad(inputs) "
        "(false under no_grad), it makes the node, set_next_edges(collect_next_edges(inputs)), "
        "saves what the formulas need as SavedVariables, runs the op, and set_history(result, "
        "grad_fn).",
    "functions.holding":
        "No twin: torch's nodes call their formulas directly, the expression of "
        "tools/autograd/derivatives.yaml inlined in the generated apply(), or a helper of "
        "torch/csrc/autograd/FunctionsManual.cpp (mm_mat1_backward, ...); no nn.Module takes "
        "part in backward.",
    "functions.holder":
        "No twin: torch's formulas read only what the node saved; the formula of an input that "
        "needs no gradient is skipped (task_should_compute_output), and its gradient left "
        "undefined.",
    "functions.layer_kind":
        "No twin: in torch each module's own forward (nn.Module.__call__, then forward) calls "
        "its functional op, which records its nodes.",
    "functions.parameter":
        "No twin: an nn.Parameter is already a leaf with requires_grad=True; the first "
        "operation that uses it gets its AccumulateGrad from impl::grad_accumulator, which "
        "adds into p.grad.",
    "functions.linear":
        "No twin: nn.Linear's F.linear runs aten::linear (aten/src/ATen/native/Linear.cpp), "
        "CompositeImplicitAutograd, so autograd records what it calls: for a 2-D input with a "
        "bias, addmm(bias, input, weight.t()) (TBackward0, AddmmBackward0); without one, "
        "matmul, that is mm (MmBackward0).",
    "functions.t":
        "TBackward0, recorded by weight.t() in aten::linear: derivatives.yaml's t entry, self: "
        "grad.t(); a view, so it saves nothing.",
    "functions.addmm":
        "AddmmBackward0 (torch/csrc/autograd/generated/Functions.h), recorded by aten::linear's "
        "addmm: saves mat1 only if mat2 requires grad and mat2 only if mat1 does (with their "
        "sizes, strides and layouts), and alpha and beta; its edges go to bias, x and W^T, in "
        "argument order.",
    "functions.addmm_backward":
        "AddmmBackward0::apply, from derivatives.yaml: self: maybe_multiply(grad, beta), g "
        "itself, (N, C), which the engine's validate_outputs then sums to the bias's (C,); "
        "mat1: mm_mat1_backward(grad, mat2, ...) = g mat2^T; mat2: mm_mat2_backward(grad, "
        "mat1, ...) = mat1^T g (torch/csrc/autograd/FunctionsManual.cpp).",
    "functions.mm":
        "MmBackward0, recorded by aten::linear without a bias: saves self only if mat2 "
        "requires grad and mat2 only if self does, as derivatives.yaml's mm entry needs.",
    "functions.mm_backward":
        "MmBackward0::apply, from derivatives.yaml: self: mm_mat1_backward(grad, mat2, ...) = "
        "g mat2^T; mat2: mm_mat2_backward(grad, self, ...) = self^T g "
        "(torch/csrc/autograd/FunctionsManual.cpp).",
    "functions.relu":
        "ReluBackward0, recorded by nn.ReLU's torch.relu: derivatives.yaml's relu entry saves "
        "result, the output, and not the input.",
    "functions.relu_backward":
        "ReluBackward0::apply: threshold_backward(grad, result, 0), g where result > 0, else 0.",
    "functions.batch_norm":
        "NativeBatchNormBackward0, recorded by F.batch_norm, which on the CPU runs "
        "native_batch_norm: saves input, weight, running_mean, running_var, result1 and "
        "result2 (the batch mean and 1/sqrt(var + eps)), training and eps; its edges go to "
        "input, weight and bias. The same node for nn.BatchNorm1d and nn.BatchNorm2d.",
    "functions.batch_norm_backward":
        "NativeBatchNormBackward0::apply: native_batch_norm_backward(grad, input, weight, "
        "running_mean, running_var, result1, result2, training, eps, grad_input_mask), one "
        "kernel for the three gradients (batch_norm_backward_cpu in "
        "aten/src/ATen/native/Normalization.cpp).",
    "functions.conv2d":
        "ConvolutionBackward0, recorded by F.conv2d through aten::convolution, whose "
        "derivatives.yaml entry serves every convolution: saves input and weight, the bias's "
        "sizes (not the bias), stride, padding, dilation, transposed, output_padding and "
        "groups.",
    "functions.convolution_backward":
        "ConvolutionBackward0::apply: convolution_backward(grad, input, weight, bias_sizes, "
        "stride, padding, ..., grad_input_mask) (aten/src/ATen/native/Convolution.cpp), which "
        "picks the backend's kernel (oneDNN, slow_conv2d's backward, cuDNN) for the three "
        "gradients.",
    "functions.max_pool2d":
        "MaxPool2DWithIndicesBackward0, recorded by F.max_pool2d, which runs "
        "max_pool2d_with_indices when its input requires grad: saves self and result1, the "
        "winners' int64 indices, an output that is not differentiable.",
    "functions.max_pool2d_backward":
        "MaxPool2DWithIndicesBackward0::apply: max_pool2d_with_indices_backward(grad, self, "
        "kernel_size, stride, padding, dilation, ceil_mode, result1): each g added at its saved "
        "index, summed where windows overlap.",
    "functions.flatten":
        "ViewBackward0, recorded by nn.Flatten's x.flatten(1) (aten::flatten, "
        "CompositeImplicitAutograd: a view of a contiguous x): saves only self_sym_sizes, x's "
        "shape.",
    "functions.view_backward":
        "ViewBackward0::apply: derivatives.yaml's view entry, self: "
        "grad.reshape_symint(self.sym_sizes()).",
    "functions.log_softmax":
        "LogSoftmaxBackward0, recorded by at::log_softmax in F.cross_entropy's "
        "cross_entropy_loss (aten/src/ATen/native/LossNLL.cpp), which runs _log_softmax: saves "
        "result and dim.",
    "functions.log_softmax_backward":
        "LogSoftmaxBackward0::apply: _log_softmax_backward_data(grad, result, dim, ...), "
        "g - exp(result) sum_c g_c, as here.",
    "functions.nll_loss":
        "NllLossBackward0, recorded by nll_loss_nd in cross_entropy_loss, which runs "
        "nll_loss_forward, returning (output, total_weight): saves self, target, weight (None), "
        "reduction (1, the mean), ignore_index and total_weight.",
    "functions.nll_loss_backward":
        "NllLossBackward0::apply: nll_loss_backward(grad, self, target, weight, reduction, "
        "ignore_index, total_weight) (aten/src/ATen/native/LossNLL.cpp): zeros, but -g / "
        "total_weight at each (n, t_n).",
    "functions.sum":
        "SumBackward0 (derivatives.yaml's sum: grad.expand_symint(self.sym_sizes())) or "
        "SumBackward1 (sum.dim_IntList: sum_backward(grad, self.sym_sizes(), dim, keepdim), "
        "which unsqueezes the summed dims before expanding); both save self_sym_sizes, "
        "recorded by cross_entropy_loss_label_smoothing (aten/src/ATen/native/LossNLL.cpp).",
    "functions.neg":
        "NegBackward0 (derivatives.yaml: self: grad.neg()), recorded by "
        "cross_entropy_loss_label_smoothing's -input.sum(class_dim); it saves nothing.",
    "functions.masked_fill_":
        "MaskedFillBackward0, recorded by cross_entropy_loss_label_smoothing's "
        "smooth_loss.masked_fill_(ignore_mask, 0.0): self: grad.masked_fill(mask, 0). In place, "
        "so the generated kernel bumps the version counter and rebase_history makes the new "
        "node the tensor's grad_fn, its edge leading to the old one.",
    "functions.div":
        "DivBackward0 (div.Tensor), recorded by cross_entropy_loss_label_smoothing's "
        "smooth_loss.sum() / true_mask.sum(): self: div_tensor_self_backward(grad, other, ...), "
        "g / other; it saves self only for other's gradient, which an integer count does not "
        "need.",
    "functions.mul":
        "MulBackward1 (mul.Scalar), recorded twice by cross_entropy_loss_label_smoothing's "
        "(1 - label_smoothing) * nllloss + ret * (label_smoothing / n_classes): self: "
        "mul_tensor_backward(grad, other, ...), g other; saves other, the number.",
    "functions.add":
        "AddBackward0 (add.Tensor), the + of that return, and the residual block's x + f "
        "(torch_impl/model.py, BasicBlock.forward): saves alpha; its edges lead to self's node "
        "and other's, in that order.",
    "functions.add_backward":
        "AddBackward0::apply, from the add.Tensor entry of tools/autograd/derivatives.yaml: "
        "self: grad; other: maybe_multiply(grad, alpha), g again with alpha = 1 (each through "
        "handle_r_to_c, which does nothing to a real tensor).",
    "functions.mean":
        "MeanBackward1 (mean.dim), recorded by nn.AdaptiveAvgPool2d((1, 1)), whose aten "
        "adaptive_avg_pool2d computes input.mean({-1, -2}, keepdim=true) "
        "(aten/src/ATen/native/AdaptiveAveragePooling.cpp): saves dim, keepdim, self_sym_numel "
        "and self_sym_sizes, no tensor.",
    "functions.mean_backward":
        "MeanBackward1::apply: derivatives.yaml's mean.dim entry, mean_backward(grad, "
        "self.sym_sizes(), dim, self.sym_numel(), keepdim) "
        "(torch/csrc/autograd/FunctionsManual.cpp): sum_backward's expand over the averaged "
        "dims, divided by how many values each mean took.",
    "functions.basic_block":
        "No twin: torch_impl's BasicBlock.forward (torch_impl/model.py) runs its modules, and "
        "autograd records each operation as it runs: conv1's ConvolutionBackward0, "
        "NativeBatchNormBackward0, ReluBackward0, ..., bn2's, then AddBackward0 for x + f, "
        "whose edges lead to x's node and to bn2's, and ReluBackward0. x's node then has two "
        "edges into it, from the add and from conv1: the engine "
        "(torch/csrc/autograd/engine.cpp) adds what each delivers in the node's InputBuffer "
        "(torch/csrc/autograd/input_buffer.cpp) and runs it once both have.",
    "functions.formula_of":
        "No twin: it serves the tutor, which names the file and line of a node's formula; "
        "torch's formulas are the entries of tools/autograd/derivatives.yaml, generated into "
        "torch/csrc/autograd/generated/Functions.cpp.",
    "parallel.DistributedSampler.set_epoch":
        "torch.utils.data.DistributedSampler.set_epoch (torch/utils/data/distributed.py): the "
        "same, the epoch added to the seed of the next permutation.",
    "parallel.DistributedSampler.__len__":
        "DistributedSampler.__len__: num_samples, computed the same way in __init__.",
    "parallel.DistributedSampler.__iter__":
        "DistributedSampler.__iter__: the same randperm from a generator seeded with seed + "
        "epoch, padded with its first indices (or cut, with drop_last), then "
        "indices[rank:total_size:num_replicas].",
    "parallel.DistributedDataParallel.parameters":
        "nn.Module.parameters(), inherited by DDP: the wrapped module's, under the prefix "
        "module.",
    "parallel.DistributedDataParallel.buffers":
        "nn.Module.buffers(), inherited by DDP: the wrapped module's buffers.",
    "parallel.DistributedDataParallel.pre_forward":
        "DistributedDataParallel._pre_forward (torch/nn/parallel/distributed.py): "
        "reducer._rebuild_buckets() once, after the first iteration, in the order the "
        "gradients became ready (Reducer::rebuild_buckets, reducer.cpp); "
        "_check_and_sync_module_buffers(), a broadcast from rank 0; "
        "reducer.prepare_for_backward().",
    "parallel.DistributedDataParallel.prepare_buckets":
        "Reducer::initialize_buckets and initialize_bucket_views (reducer.cpp): one flat "
        "tensor per bucket, each gradient a view of it at its offset; prepare_for_backward "
        "resets each bucket's count of pending gradients.",
    "parallel.DistributedDataParallel.ready":
        "Reducer::autograd_hook, the hook DDP registers on each parameter's AccumulateGrad "
        "(reducer.cpp), which calls mark_variable_ready: records the order (rebuilt_params_) "
        "and, at the first one, queues finalize_backward on the engine (queue_callback), which "
        "runs it once backward is done; here, the last gradient's hook runs it.",
    "parallel.DistributedDataParallel.copy_into_bucket":
        "Reducer::mark_variable_ready_dense (reducer.cpp): at::mul_out(bucket_view, grad, "
        "1 / div_factor), 'divides while copying into the bucket view'; then "
        "mark_bucket_ready launches the bucket's all-reduce once its pending count is 0 "
        "(all_reduce_bucket: process_group->allreduce, a future).",
    "parallel.DistributedDataParallel.finalize_backward":
        "Reducer::finalize_backward (reducer.cpp), run by the engine once backward is done: "
        "waits on each bucket's future and copies the bucket views into the .grads "
        "(copy_bucket_to_grad). A parameter that got no gradient is found at the next "
        "forward, as here: 'Expected to have finished reduction in the prior iteration'.",
    "parallel.DistributedDataParallel.wait_for_buckets":
        "Reducer::finalize_bucket_dense (reducer.cpp): the future's wait, then grad.copy_"
        "(bucket_view) for each parameter of the bucket.",
    "parallel.DistributedDataParallel.view":
        "Reducer::initialize_bucket_views (reducer.cpp): bucket_views_in, "
        "flat.narrow(0, offset, numel).view(shape).",
    "parallel.DistributedDataParallel.all_reduced":
        "No twin: what DDP computes in backward, as one call, for the checker to feed torch's "
        "own gradients (lockstep/ranks.py).",
    "parallel.compute_bucket_assignment_by_size":
        "torch.distributed._compute_bucket_assignment_by_size, "
        "compute_bucket_assignment_by_size in reducer.cpp: the same loop, per dtype and "
        "device; DDP's __init__ puts every parameter in one bucket at first (sys.maxsize) and "
        "the rebuild cuts at 1 MiB, then 25 MiB.",
    "parallel.verify_param_shape_across_processes":
        "torch.distributed.utils._verify_param_shape_across_processes, called by DDP's "
        "__init__: each rank's parameter count and shapes gathered and compared in C++.",
    "parallel.sync_module_states":
        "torch.distributed.utils._sync_module_states, called by DDP's __init__: the "
        "parameters and buffers broadcast from rank 0 in coalesced chunks (250 MB).",
    "functions.sync_batch_norm_backward":
        "No twin: nn.SyncBatchNorm's Function (torch/nn/modules/_functions.py) is a Python "
        "autograd.Function, whose node torch names SyncBatchNormBackward.",
}


@dataclass
class Item:
    """One function, class or method of a file: where it is and what it says."""

    qualname: str
    kind: str  # "function", "class", "method", "import" or "comment"
    start: int  # first line shown, 1-based
    end: int  # last line shown
    docstring: str | None = None
    imported_from: str | None = None  # for an import: the module it comes from ("torch.nn")
    imported_name: str | None = None  # for an import: the name in that module
    bases: tuple[str, ...] = ()  # for a class: its base classes, as written


@dataclass
class Module:
    """One source file, parsed."""

    path: str  # relative to the repository root, with forward slashes
    lines: list[str]
    docstring: str | None
    items: dict[str, Item] = field(default_factory=dict)  # qualname -> item, source order


def parse_module(root: Path, path: str) -> Module:
    """Every function, class (docstring and __init__) and method of a file, and its imports."""
    source = (root / path).read_text(encoding="utf-8")
    tree = ast.parse(source)
    module = Module(path, source.splitlines(), ast.get_docstring(tree))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            module.items[node.name] = Item(node.name, "function", first_line(node),
                                           node.end_lineno, ast.get_docstring(node))
        elif isinstance(node, ast.ClassDef):
            add_class(module, node)
        elif isinstance(node, ast.ImportFrom):
            folders = path.split("/")[:-1]  # from .layers, in manual/model.py: manual.layers
            package = folders[:len(folders) + 1 - node.level] if node.level else []
            origin = ".".join(package + ([node.module] if node.module else []))
            for alias in node.names:
                name = alias.asname or alias.name
                module.items.setdefault(name, Item(name, "import", node.lineno, node.end_lineno,
                                                   imported_from=origin, imported_name=alias.name))
        elif reexport(node):  # no_grad = torch.no_grad: a re-export, as an import is
            name = node.targets[0].id
            origin, _, imported = ast.unparse(node.value).rpartition(".")
            module.items.setdefault(name, Item(name, "import", node.lineno, node.end_lineno,
                                               imported_from=origin, imported_name=imported))
    return module


def reexport(node: ast.AST) -> bool:
    """Whether a statement gives a name to an attribute of a module: `no_grad = torch.no_grad`."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Attribute)):
        return False
    value = node.value
    while isinstance(value, ast.Attribute):
        value = value.value
    return isinstance(value, ast.Name)


def first_line(node: ast.AST) -> int:
    """The first line of a definition, its decorators included."""
    return min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])


def add_class(module: Module, node: ast.ClassDef) -> None:
    """The class (its header, docstring and __init__) as one item, then each other method.

    A method's lines run on over the plain statements after it (as `__call__ = forward`),
    up to the next method.
    """
    body = node.body
    methods = [i for i, child in enumerate(body)
               if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)]
    head_end = body[0].end_lineno if ast.get_docstring(node) else node.lineno
    if methods and body[methods[0]].name == "__init__":
        head_end = body[methods[0]].end_lineno
        methods = methods[1:]
    module.items[node.name] = Item(node.name, "class", first_line(node), head_end,
                                   ast.get_docstring(node),
                                   bases=tuple(ast.unparse(base) for base in node.bases))
    for position, index in enumerate(methods):
        method = body[index]
        following = body[index + 1:methods[position + 1] if position + 1 < len(methods) else None]
        end = max([method.end_lineno] + [child.end_lineno for child in following])
        qualname = f"{node.name}.{method.name}"
        module.items[qualname] = Item(qualname, "method", first_line(method), end,
                                      ast.get_docstring(method))


# "# backward: ...", "# parameters(): ..." or "# train() / eval(): ...": one or more names,
# separated by commas or slashes, then a colon; the comment lines below it belong to it
COMMENT_NAME = r"[A-Za-z_]\w*(?:\(\))?"
COMMENT_ENTRY = re.compile(rf"#\s*({COMMENT_NAME}(?:\s*[,/]\s*{COMMENT_NAME})*)\s*:")


def comment_entries(module: Module, class_name: str) -> dict[str, Item]:
    """The comments inside a class that name its methods (`# name:` and its sequel), by name;
    a comment naming several methods is the entry of each."""
    owner = module.items.get(class_name)
    if owner is None or owner.kind != "class":
        return {}
    class_end = owner.start  # the class body runs on to the next unindented line
    while class_end < len(module.lines) and not module.lines[class_end][:1].strip():
        class_end += 1
    entries = {}
    for start in range(owner.start, class_end):
        match = COMMENT_ENTRY.match(module.lines[start].strip())
        if not match:
            continue
        end = start + 1
        while (end < class_end and module.lines[end].strip().startswith("#")
               and not COMMENT_ENTRY.match(module.lines[end].strip())):
            end += 1
        for name in re.findall(r"\w+", match.group(1)):
            qualname = f"{class_name}.{name}"
            entries.setdefault(name, Item(qualname, "comment", start + 1, end))
    return entries


def comment_item(module: Module, qualname: str) -> Item | None:
    """The comment inside the twin class that names the method, if any."""
    class_name, _, method = qualname.rpartition(".")
    return comment_entries(module, class_name).get(method)


def inherited(root: Path, module: Module, qualname: str) -> tuple[Module, Item] | None:
    """Where the method `Class.name`, not defined in the class, comes from: the same method
    of a base class defined in the file or imported from the same package (manual/), or
    of one of its bases in turn; None if no base in this repository defines it."""
    class_name, _, method = qualname.rpartition(".")
    owner = module.items.get(class_name)
    if owner is None or owner.kind != "class":
        return None
    package = module.path.split("/")[0]
    for base in owner.bases:
        base_module, entry = module, module.items.get(base)
        if entry is not None and entry.kind == "import":
            path = (entry.imported_from or "").replace(".", "/") + ".py"
            if path.split("/")[0] != package or not (root / path).is_file():
                continue
            base_module = parse_module(root, path)
            base = entry.imported_name or base
            entry = base_module.items.get(base)
        if entry is None or entry.kind != "class":
            continue
        item = base_module.items.get(f"{base}.{method}")
        if item is not None and item.kind == "method":
            return base_module, item
        found = inherited(root, base_module, f"{base}.{method}")
        if found is not None:
            return found
    return None


@dataclass
class Side:
    """What one column shows: a code item, and/or a note."""

    module: Module
    item: Item | None
    note: str | None = None


@dataclass
class Concept:
    """One row of the page: a manual item and its torch twin, under a formula."""

    key: str  # "stem.qualname", the anchor
    qualname: str
    formula: str | None
    manual: Side
    torch: Side


def twin(manual: Module, torch: Module, stem: str, qualname: str) -> Side:
    """What torch_impl/ shows for the manual item `qualname` (see the module docstring)."""
    note = NOTES.get(f"{stem}.{qualname}")
    item = torch.items.get(qualname)
    if item is not None and item.kind != "import":
        return Side(torch, item, note)
    if item is not None:
        return Side(torch, item, note or f"torch_impl/ uses {item.imported_from}."
                                         f"{item.imported_name} itself, re-exported under the "
                                         "same name.")
    item = comment_item(torch, qualname) if "." in qualname else None
    if item is not None:
        return Side(torch, item, note)
    owner = torch.items.get(qualname.rpartition(".")[0])
    if owner is not None and owner.kind == "import":
        return Side(torch, None, note or f"{owner.imported_from}.{qualname}: torch's own "
                                         "method, not in this repository.")
    return Side(torch, None, note or f"No counterpart in {torch.path}.")


SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z]|\s*$)")  # ". " before a capital, or at the end


def formula(docstring: str | None) -> str | None:
    """The docstring's first paragraph, then its first displayed (indented) block, if any,
    within the sentence that introduces it: from that sentence's start (the beginning of its
    paragraph at the earliest) to its end, when it goes on after the block."""
    if not docstring:
        return None
    lines = docstring.strip().splitlines()
    summary = next((i for i, line in enumerate(lines) if not line.strip()), len(lines))
    shown = lines[:summary]
    block = next((i for i, line in enumerate(lines)
                  if i > summary and line[:1].isspace() and line.strip()), None)
    if block is None:
        return "\n".join(shown)
    end = block
    while end < len(lines) and lines[end][:1].isspace() and lines[end].strip():
        end += 1
    lead = []  # the introducing sentence, back to its start
    for line in reversed(lines[summary + 1:block]):
        if not line.strip() or line[:1].isspace():
            break
        ends = list(SENTENCE_END.finditer(line.rstrip()))
        if ends and (lead or ends[-1].end() < len(line.rstrip())):
            lead[:0] = [line[ends[-1].end():].lstrip()] if line[ends[-1].end():].strip() else []
            break
        lead.insert(0, line)
    tail = []  # the rest of the sentence, after the block
    for line in lines[end:]:
        if not line[:1].islower():
            break
        stop = SENTENCE_END.search(line.rstrip())
        tail.append(line[:stop.end()] if stop else line)
        if stop:
            break
    return "\n".join([*shown, "", *lead, *lines[block:end], *tail])


def stems(root: Path) -> list[str]:
    """File stems present in both manual/ and torch_impl/, in ORDER, then the rest sorted."""
    names = [{path.stem for path in (root / side).glob("*.py")} for side in SIDES]
    both = (names[0] & names[1]) - {"__init__"}
    return [stem for stem in ORDER if stem in both] + sorted(both - set(ORDER))


def counterpart(root: Path, manual: Module, qualname: str) -> Side:
    """What manual/ shows for an item only torch_impl/ has: the method the manual class
    inherits under that name, if any, else a note."""
    found = inherited(root, manual, qualname) if "." in qualname else None
    if found is None:
        return Side(manual, None, f"No counterpart in {manual.path}.")
    module, item = found
    class_name, _, method = qualname.rpartition(".")
    owner = item.qualname.rpartition(".")[0]
    return Side(module, dataclasses.replace(item, qualname=qualname),  # its own line anchors
                f"Inherited from {owner} ({module.path}): {class_name} has no {method} of "
                "its own.")


def concepts(root: Path, stem: str) -> tuple[Module, Module, list[Concept]]:
    """Both files of one stem, parsed, and their pairs in source order; an item only
    torch_impl/ has comes just before the pair of the torch item that follows it."""
    manual, torch = (parse_module(root, f"{side}/{stem}.py") for side in SIDES)
    pairs = []
    for qualname, item in manual.items.items():
        if item.kind == "import":
            continue
        side = twin(manual, torch, stem, qualname)
        docstring = item.docstring or (side.item.docstring if side.item else None)
        pairs.append(Concept(f"{stem}.{qualname}", qualname, formula(docstring),
                             Side(manual, item), side))
    # torch_impl/'s definitions, and its comment entries in the classes both files have,
    # in source order: those with no manual item of the same name get a pair of their own
    torch_items = [item for item in torch.items.values() if item.kind != "import"]
    for name, item in torch.items.items():
        if item.kind == "class" and manual.items.get(name, item).kind == "class":
            torch_items += [entry for method, entry in comment_entries(torch, name).items()
                            if f"{name}.{method}" not in torch.items]
    torch_items.sort(key=lambda item: item.start)
    paired = {pair.qualname for pair in pairs}
    for position, item in enumerate(torch_items):
        if item.qualname in paired:
            continue
        side = counterpart(root, manual, item.qualname)
        docstring = (side.item.docstring if side.item else None) or item.docstring
        concept = Concept(f"{stem}.{item.qualname}", item.qualname, formula(docstring),
                          side, Side(torch, item))
        following = next((f"{stem}.{later.qualname}" for later in torch_items[position + 1:]
                          if later.qualname in paired), None)
        keys = [pair.key for pair in pairs]
        pairs.insert(keys.index(following) if following else len(pairs), concept)
    return manual, torch, pairs


# ---- HTML ---------------------------------------------------------------------------------

PAGE_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --paper: #ffffff;
        --ground: #f6f8fa; --manual: #0969da; --torch: #bc4c00; --formula: #fff8e6; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--ground); color: var(--ink);
       font: 15px/1.5 -apple-system, "Segoe UI", "Noto Sans", Helvetica, Arial, sans-serif; }
main { max-width: 1760px; margin: 0 auto; padding: 0 24px 48px; }
code, pre, .formula, .where { font-family: ui-monospace, "SFMono-Regular", "DejaVu Sans Mono",
       Menlo, Consolas, "Liberation Mono", monospace; }
a { color: var(--manual); text-decoration: none; }
a:hover { text-decoration: underline; }
header.page { padding: 28px 0 8px; }
h1 { font-size: 28px; margin: 0 0 6px; }
h1 code { font-size: 25px; }
.lead { color: var(--muted); margin: 0 0 16px; max-width: 1100px; }
.columns { display: grid; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr); gap: 16px; }
.heads { position: sticky; top: 0; z-index: 2; background: var(--ground);
         padding: 10px 0; border-bottom: 1px solid var(--line); }
.head { border-radius: 6px; padding: 8px 14px; background: var(--paper);
        border: 1px solid var(--line); border-top: 4px solid; }
.head b { font-size: 16px; }
.head span { color: var(--muted); font-size: 13.5px; display: block; }
.manual-side { border-top-color: var(--manual); }
.torch-side { border-top-color: var(--torch); }
nav.toc { margin: 18px 0 8px; font-size: 14px; }
nav.toc div { margin: 2px 0; display: flex; }  /* a long row wraps beside its file name */
nav.toc b { flex: none; min-width: 150px; }
nav.toc a { margin-right: 10px; font-family: ui-monospace, "DejaVu Sans Mono", monospace;
            font-size: 13px; }
section.file { margin-top: 30px; }
h2 { font-size: 21px; margin: 0 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h2 .pair { font-weight: normal; color: var(--muted); font-size: 15px; margin-left: 10px; }
.moduledoc { color: var(--muted); font-size: 13.5px; white-space: pre-wrap; margin: 0 0 14px;
             padding: 0 4px; }
article.concept { background: var(--paper); border: 1px solid var(--line); border-radius: 8px;
                  padding: 14px 16px 16px; margin: 0 0 18px; }
h3 { font-size: 17px; margin: 0 0 8px; }
h3 a.anchor { color: var(--muted); font-weight: normal; margin-left: 6px; }
.formula { background: var(--formula); border-left: 4px solid #d4a72c; border-radius: 4px;
           padding: 8px 12px; margin: 0 0 12px; font-size: 13.5px; white-space: pre-wrap; }
.where { font-size: 12.5px; color: var(--muted); margin: 0 0 4px; display: flex; gap: 8px; }
.where .tag { font-weight: bold; }
.manual-col .tag { color: var(--manual); }
.torch-col .tag { color: var(--torch); }
.note { border-left: 4px solid var(--line); background: #f6f8fa; color: #3d444d;
        padding: 8px 12px; border-radius: 4px; font-size: 14px; margin: 0 0 8px; }
.code { background: #f8f9fb; border: 1px solid #e4e8ec; border-radius: 6px; }
.manual-col .code { border-top: 3px solid var(--manual); }
.torch-col .code { border-top: 3px solid var(--torch); }
.code pre { margin: 0; padding: 10px 12px 10px 6px; font-size: 12.5px; line-height: 1.45;
            white-space: pre-wrap; overflow-wrap: anywhere; }
/* one block per source line; a long line wraps with a hanging indent past the line number */
.code pre > span[id] { display: block; padding-left: 9ch; text-indent: -9ch; }
.code span.linenos { display: inline-block; width: 5ch; padding: 0 2ch 0 0; text-indent: 0;
                     text-align: right; color: #8c959f; user-select: none; }
footer { color: var(--muted); font-size: 13px; margin-top: 36px; text-align: center; }
"""


def code_block(module: Module, item: Item, prefix: str) -> str:
    """The item's lines, dedented and highlighted, numbered as in the file."""
    text = textwrap.dedent("\n".join(module.lines[item.start - 1:item.end])) + "\n"
    formatter = HtmlFormatter(cssclass=CSS_CLASS, linenos="inline", linenostart=item.start,
                              linespans=f"{prefix}-{item.qualname}", style=STYLE)
    return highlight(text, PythonLexer(), formatter)


def column(side: Side, css: str, tag: str) -> str:
    """One column: where the code lives, the code, and the note."""
    parts = [f'<div class="{css}">']
    path = html.escape(side.module.path)
    if side.item is not None:
        lines = (f"line {side.item.start}" if side.item.start == side.item.end
                 else f"lines {side.item.start}–{side.item.end}")
        parts.append(f'<div class="where"><span class="tag">{tag}</span>'
                     f'<a href="../{path}">{path}</a><span>{lines}</span></div>')
    else:
        parts.append(f'<div class="where"><span class="tag">{tag}</span>'
                     f'<a href="../{path}">{path}</a></div>')
    if side.note:
        parts.append(f'<div class="note">{html.escape(side.note)}</div>')
    if side.item is not None:
        parts.append(code_block(side.module, side.item, side.module.path.replace("/", "-")))
    parts.append("</div>")
    return "\n".join(parts)


def concept_html(concept: Concept) -> str:
    anchor = html.escape(concept.key)
    parts = [f'<article class="concept" id="{anchor}">',
             f'<h3><code>{html.escape(concept.qualname)}</code>'
             f'<a class="anchor" href="#{anchor}">#</a></h3>']
    if concept.formula:
        parts.append(f'<div class="formula">{html.escape(concept.formula)}</div>')
    parts += ['<div class="columns">', column(concept.manual, "manual-col", "manual"),
              column(concept.torch, "torch-col", "torch"), "</div>", "</article>"]
    return "\n".join(parts)


def build_page(root: Path = REPO_ROOT) -> str:
    """The whole page, as a string."""
    packages = [parse_module(root, f"{side}/__init__.py") for side in SIDES]
    files = [(stem, *concepts(root, stem)) for stem in stems(root)]
    styles = HtmlFormatter(style=STYLE).get_style_defs(f".{CSS_CLASS}")
    toc = "\n".join(
        f'<div><b><a href="#{stem}">{stem}.py</a></b><span>'
        + " ".join(f'<a href="#{html.escape(c.key)}">{html.escape(c.qualname)}</a>' for c in pairs)
        + "</span></div>" for stem, _, _, pairs in files)
    heads = "".join(
        f'<div class="head {css}"><b><code>{side}/</code></b>'
        f'<span>{html.escape(package.docstring or "")}</span></div>'
        for side, css, package in zip(SIDES, ("manual-side", "torch-side"), packages, strict=True))
    body = []
    for stem, manual, torch, pairs in files:
        body += [f'<section class="file" id="{stem}">',
                 f'<h2><code>{stem}.py</code><span class="pair">'
                 f'<a href="../{manual.path}">{manual.path}</a> ↔ '
                 f'<a href="../{torch.path}">{torch.path}</a></span></h2>',
                 '<div class="columns">',
                 *(f'<div class="moduledoc">{html.escape(module.docstring or "")}</div>'
                   for module in (manual, torch)),
                 "</div>", *(concept_html(concept) for concept in pairs), "</section>"]
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>manual/ and torch_impl/, side by side</title>",
        f"<style>\n/* Pygments, style {STYLE!r} */\n{styles}\n/* the page */{PAGE_CSS}</style>",
        "</head>",
        "<body>",
        "<main>",
        '<header class="page">',
        "<h1>What does <code>loss.backward()</code> compute? Read it side by side</h1>",
        '<p class="lead">The same MNIST classifiers, softmax regression, a small MLP, a '
        "small CNN and a small ResNet, written twice. Left, <code>manual/</code>: plain tensor "
        "operations with every gradient derived by hand. Right, <code>torch_impl/</code>: "
        "<code>nn.Linear</code>, <code>nn.BatchNorm1d</code>, <code>nn.Conv2d</code>, "
        "<code>nn.MaxPool2d</code>, <code>nn.BatchNorm2d</code>, "
        "<code>nn.AdaptiveAvgPool2d</code>, <code>F.cross_entropy</code>, autograd, "
        "<code>torch.optim.SGD</code>, <code>Adam</code> and <code>AdamW</code>. Each pair "
        "has the same name in the same file, under the formula from its docstring. "
        "Generated from the source by "
        "<code>docs/build_side_by_side.py</code> (<code>make docs</code>).</p>",
        '<p class="lead">It shows the body of every function of <code>manual/</code>, the fourteen '
        "exercises' included: it is the answer key. To write the exercises yourself, start with "
        '<a href="try_it_yourself.md">Try it yourself</a>, and come back here to compare.</p>',
        '<nav class="toc">', toc, "</nav>",
        "</header>",
        f'<div class="heads columns">{heads}</div>',
        *body,
        "<footer>Generated from the source by <code>docs/build_side_by_side.py</code>; "
        "run <code>make docs</code> after changing either package.</footer>",
        "</main>",
        "</body>",
        "</html>",
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the committed page differs")
    args = parser.parse_args(argv)
    page, path = build_page(), REPO_ROOT / OUTPUT
    if args.check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != page:
            print(f"{OUTPUT} is out of date: run `make docs`", file=sys.stderr)
            return 1
        print(f"{OUTPUT} is up to date")
        return 0
    path.write_bytes(page.encode("utf-8"))  # "\n" line endings on every platform
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
