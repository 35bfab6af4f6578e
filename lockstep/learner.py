"""The Learner: one implementation's model and optimizer, behind the interface the lock step
uses. Each package supplies only its model (forward / backward), optimizer (update) and
train.forward_backward; the training loop is the same for both.

A package here is `manual` or `torch_impl` (or an exercise folder imported as manual): each
has model.SoftmaxRegression, model.MLP, model.CNN, optim.SGD, optim.Adam, optim.AdamW,
lr_scheduler.CosineAnnealingLR and train.forward_backward with the same signatures. The rest
of the checker reaches the two packages only through this module.
"""

import argparse
import math
from collections.abc import Iterable
from types import ModuleType

import torch

import manual
import torch_impl
from common.data import NUM_CLASSES, NUM_PIXELS
from lockstep.flags import OPTIMIZERS, OPTIONS

IMAGES_AT_ONCE = 1000  # Learner.logits of the CNN: 180 MB of hidden outputs a side, not 1.8 GB


class Learner:
    """One implementation's model and optimizer, trained by the shared loop."""

    def __init__(self, package: ModuleType, in_features: int, num_classes: int,
                 optimizer_options: dict, label_smoothing: float = 0.0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 anneal_steps: int | None = None, hidden: int | None = None,
                 batchnorm: bool = False, optimizer: str = "SGD",
                 channels: tuple[int, ...] | None = None, engine: bool = False,
                 resnet: bool = False, parallel: bool = False, sync_batchnorm: bool = False):
        """optimizer: the name of the package's optimizer class ("SGD", "Adam", "AdamW"),
        built with optimizer_options.
        anneal_steps: cosine-anneal the learning rate to 0 over that many optimizer
        steps (lr_scheduler.CosineAnnealingLR); None keeps it constant.
        hidden: None for softmax regression, else the MLP's hidden units (with BatchNorm1d
        if batchnorm).
        channels: None, or a CNN with these channels, on square images of in_features
        pixels, one channel: each flat row of x becomes an image (1, H, W) before the model
        sees it (as_input).
        engine: compute the gradients through the package's engine
        (train.forward_backward_engine: the recorded graph, walked by autograd.backward), not
        the model's own backward.
        resnet: with channels, a ResNet (its stages' widths) in place of the CNN; it always
        trains through the engine (a residual block is not a chain).
        parallel: this process is one rank of a torch.distributed run: the model is wrapped
        in the package's parallel.DistributedDataParallel (its parameters and buffers
        broadcast from rank 0 here, its gradients all-reduced in each backward), and trained
        through the engine, whose hooks hand the gradients over.
        sync_batchnorm: with parallel, every BatchNorm made the package's
        layers.SyncBatchNorm (statistics over all ranks' examples)."""
        engine = engine or resnet or parallel
        self.name = package.__name__
        self.package = package
        self.settings = dict(in_features=in_features, num_classes=num_classes,  # for twin()
                             optimizer_options=optimizer_options, label_smoothing=label_smoothing,
                             device=device, hidden=hidden, batchnorm=batchnorm, optimizer=optimizer,
                             channels=channels, engine=engine, resnet=resnet, parallel=parallel,
                             sync_batchnorm=sync_batchnorm)
        kinds = dict(device=device, dtype=dtype)
        self.image_shape = None  # (1, H, W) for the CNN: what a flat row of x becomes
        if channels is not None:
            side = math.isqrt(in_features)
            if side * side != in_features:
                raise ValueError(f"a CNN needs square images, not {in_features} pixels")
            self.image_shape = (1, side, side)
            self.model = (package.model.ResNet(1, tuple(channels), num_classes, **kinds)
                          if resnet else
                          package.model.CNN(1, tuple(channels), num_classes, image_size=side,
                                            **kinds))
        elif hidden is None:
            self.model = package.model.SoftmaxRegression(in_features, num_classes, **kinds)
        else:
            self.model = package.model.MLP(in_features, hidden, num_classes, batchnorm, **kinds)
        if sync_batchnorm:
            self.model = package.layers.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.trained = (package.parallel.DistributedDataParallel(self.model) if parallel else
                        self.model)  # what forward_backward runs
        self.optimizer = getattr(package.optim, optimizer)(self.model.parameters(),
                                                           **optimizer_options)
        self.scheduler = (None if anneal_steps is None else
                          package.lr_scheduler.CosineAnnealingLR(self.optimizer, anneal_steps))
        self.label_smoothing = label_smoothing
        self.forward_backward = (package.train.forward_backward_engine if engine else
                                 package.train.forward_backward)
        self.params = list(self.model.parameters())  # updated in place: the same tensors always
        self.loss = self.last_logits = None  # of the last gradients(), with dLoss/dlogits in .grad

    def parameters(self) -> list[torch.Tensor]:
        """The model's parameters, in nn's order (softmax regression: [weight, bias])."""
        return self.params

    def named_parameters(self) -> list[tuple[str, torch.Tensor]]:
        """The parameters by name: "weight", "bias" (softmax regression), "layers.0.weight", ..."""
        return list(self.model.named_parameters())

    def named_loss(self) -> list[tuple[str, torch.Tensor]]:
        """[("loss", the loss of the last gradients())]: the lock step compares it too."""
        return [("loss", self.loss)]

    def named_gradients(self) -> list[tuple[str, torch.Tensor]]:
        """What the lock step compares after backward, by name, in the order backward computes
        it: dLoss/dlogits ("logits"), then from the top layer down each layer's parameter
        gradients ("layers.2.weight", "layers.2.bias") and dLoss/d(the layer's input), which
        is the output of the hidden layer below ("hidden.relu"). Softmax regression:
        "logits", "weight", "bias"."""
        hidden, params = self.named_hidden_outputs(), self.named_parameters()
        named = [("logits", getattr(self.last_logits, "grad", None))]
        for index in reversed(range(len(hidden) + 1)):  # hidden[i] is the output of layer i
            named += [(name, param.grad) for name, param in params
                      if layer_index(name) == index]
            if index:
                name, output = hidden[index - 1]
                named.append((name, getattr(output, "grad", None)))
        return named

    def named_hidden_outputs(self) -> list[tuple[str, torch.Tensor]]:
        """Each hidden layer's output of the last forward, by its layer: "hidden.linear",
        "hidden.batchnorm1d", "hidden.relu" (none for softmax regression). Where a kind of
        layer comes more than once, as in the CNN, every name ends in its layer's index
        (layers.3 -> "hidden.conv2d.3"): hidden_names."""
        outputs = list(getattr(self.model, "hidden_outputs", []))  # the logits are not one
        names = hidden_names(self.model)
        outputs += [None] * (len(names) - len(outputs))  # a forward that failed midway
        return list(zip(names, outputs, strict=True))

    def named_buffers(self) -> list[tuple[str, torch.Tensor]]:
        """The floating-point buffers (BatchNorm1d's running_mean, running_var), by name."""
        buffers = getattr(self.model, "named_buffers", list)()
        return [(name, buffer) for name, buffer in buffers if buffer.is_floating_point()]

    def named_optimizer_state(self) -> list[tuple[str, torch.Tensor]]:
        """The optimizer's state tensors, by parameter and torch's key, keys sorted:
        "weight.momentum_buffer" (SGD with momentum); "weight.exp_avg", "weight.exp_avg_sq",
        "weight.max_exp_avg_sq" (Adam, AdamW; the last with amsgrad). The step count is
        not a tensor on the manual side and is not listed."""
        named = []
        for name, param in self.named_parameters():
            state = self.optimizer.state.get(param, {})
            named += [(f"{name}.{key}", state[key]) for key in sorted(state) if key != "step"]
        return named

    @torch.no_grad()
    def copy_state_from(self, source: "Learner") -> None:
        """Take over `source`'s parameters, running statistics and optimizer state (momentum
        buffers, Adam's moments), in place, so that both learners take their next step from
        the same state. The step counts agree by construction: both step together."""
        for mine, theirs in zip(self.params, source.params, strict=True):
            mine.copy_(theirs)
            for key, value in source.optimizer.state.get(theirs, {}).items():
                own = self.optimizer.state.get(mine, {}).get(key)
                if isinstance(own, torch.Tensor):
                    own.copy_(value)
        for (_, mine), (_, theirs) in zip(self.named_buffers(), source.named_buffers(),
                                          strict=True):
            mine.copy_(theirs)

    @torch.no_grad()
    def copy_gradients_from(self, source: "Learner") -> None:
        """Take over `source`'s parameter gradients, in place (shapes already checked), so
        that both optimizers take their next step from the same state and gradients."""
        for mine, theirs in zip(self.params, source.params, strict=True):
            mine.grad.copy_(theirs.grad)

    def gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Zero the old gradients, fill each parameter's .grad for this batch; return the loss.
        The loss and the logits (with dLoss/dlogits in .grad) stay in self.loss and
        self.last_logits until the next call."""
        self.optimizer.zero_grad()
        self.loss, self.last_logits = self.forward_backward(
            self.trained, self.as_input(x), y, self.label_smoothing)
        return self.loss

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        """The flat rows x (N, D) as the model takes them: as they are, or for the CNN as
        images (N, 1, H, W), a view of the same memory (row by row, as MNIST stores them)."""
        return x if self.image_shape is None else x.view(len(x), *self.image_shape)

    @torch.no_grad()
    def twin(self, dtype: torch.dtype | None = None, synchronized: bool = False) -> "Learner":
        """A new Learner of the same package and configuration, in `dtype` (default: this
        one's), holding a copy of this one's parameters, gradients, running statistics and
        optimizer state. It has no learning-rate schedule: its optimizer keeps this one's
        current learning rate, and no DistributedDataParallel: it computes this process's
        gradients alone, its BatchNorm on this process's batch, unless synchronized keeps this
        one's SyncBatchNorm (every rank must then run the twin alike). Built without touching
        torch's random streams (the parameters are copied anyway)."""
        options = self.settings["optimizer_options"] | {"lr": self.lr()}
        device = self.params[0].device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            twin = Learner(self.package, **self.settings | {"optimizer_options": options,
                                                            "parallel": False,
                                                            "sync_batchnorm": synchronized and
                                                            self.settings["sync_batchnorm"]},
                           dtype=dtype or self.params[0].dtype)
        for mine, theirs in zip(twin.params, self.params, strict=True):
            mine.copy_(theirs)
            mine.grad = None if theirs.grad is None else theirs.grad.to(mine.dtype, copy=True)
            state = self.optimizer.state.get(theirs, {})
            twin.optimizer.state[mine] = {key: copied(value, mine.dtype)
                                          for key, value in state.items()}
        for (_, mine), (_, theirs) in zip(twin.named_buffers(), self.named_buffers(),
                                          strict=True):
            mine.copy_(theirs)
        return twin

    def lr(self) -> float:
        """The learning rate of the next step: the schedule's, else the optimizer's own."""
        if self.scheduler is None:
            return self.settings["optimizer_options"]["lr"]
        return self.scheduler.get_last_lr()[0]

    def step(self) -> None:
        """Update the parameters with their gradients, then the learning rate if scheduled."""
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def train_epoch(self, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> float:
        """One pass over the batches: gradients, then an update. Returns the mean loss."""
        total, steps = 0.0, 0
        for x, y in batches:
            total += self.gradients(x, y)
            self.step()
            steps += 1
        return float(total) / steps

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) -> logits (N, C) in eval mode (BatchNorm: the running statistics),
        recording nothing for backward; the model returns to training mode after. The CNN
        takes IMAGES_AT_ONCE images at a time: it keeps every hidden output of its forward,
        about 180 KB an image a side."""
        self.model.eval()
        step = max(len(x), 1) if self.image_shape is None else IMAGES_AT_ONCE
        chunks = [x[start:start + step] for start in range(0, len(x), step)] or [x]
        try:
            return torch.cat([self.model(self.as_input(chunk)) for chunk in chunks])
        finally:
            self.model.train()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, D) -> predicted classes (N,), the largest logit of each row."""
        return self.logits(x).argmax(dim=-1)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """(the mean cross-entropy loss, the share classified correctly) of the N examples,
        from one forward pass in eval mode; the loss by the package's own cross_entropy."""
        logits = self.logits(x)
        loss = self.package.functional.cross_entropy(logits, y)
        return float(loss), (logits.argmax(dim=-1) == y).double().mean().item()

    def accuracy(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """Share of the N examples classified correctly, in [0, 1]."""
        return (self.predict(x) == y).double().mean().item()


def hidden_names(model) -> list[str]:
    """The names of a model's hidden outputs, one per layer but the last, by its layer:
    "hidden.linear", "hidden.relu", ...; each ends in its layer's index where a kind of layer
    comes more than once ("hidden.conv2d.3"). None for softmax regression (no layers)."""
    kinds = [type(layer).__name__.lower() for layer in getattr(model, "layers", [])[:-1]]
    indexed = len(set(kinds)) < len(kinds)
    return [f"hidden.{kind}" + (f".{index}" if indexed else "")
            for index, kind in enumerate(kinds)]


def hidden_kind(name: str) -> str | None:
    """The kind of layer a hidden output's name says it comes from: "hidden.relu" and
    "hidden.relu.4" -> "relu"; None for a name that is no hidden output's ("logits")."""
    parts = name.split(".")
    return parts[1] if parts[0] == "hidden" and len(parts) > 1 else None


def layer_index(name: str) -> int:
    """The index of the layer a parameter belongs to: "layers.2.bias" -> 2; 0 for softmax
    regression's "weight", "bias" (its only layer)."""
    parts = name.split(".")
    return int(parts[1]) if parts[0] == "layers" else 0


def copied(value, dtype: torch.dtype):
    """A copy of one optimizer-state entry: a tensor of a parameter's shape in `dtype`; a
    0-dim tensor (torch's step count) or a Python number as it is."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype, copy=True) if value.dim() else value.clone()
    return value


def make_learners(args: argparse.Namespace, device: str, dtype: torch.dtype,
                  steps_per_epoch: int | None = None,
                  manual_package: ModuleType | None = None,
                  rank: int | None = None) -> list[Learner]:
    """The manual and the torch learner, each built right after torch.manual_seed(seed).
    rank: this process's in a distributed run (None: one process): each learner built after
    torch.manual_seed(seed + rank), and wrapped in DistributedDataParallel (parallel).

    --lr-schedule cosine anneals over epochs * steps_per_epoch steps, so it needs the latter.
    manual_package: an exercise folder (practice.loader.load) in place of manual, or None.
    """
    options = {option: getattr(args, option) for option in OPTIONS[args.optimizer]}
    anneal_steps = None
    if args.lr_schedule == "cosine":
        if steps_per_epoch is None:
            raise ValueError("--lr-schedule cosine: make_learners needs steps_per_epoch")
        anneal_steps = args.epochs * steps_per_epoch
    learners = []
    for package in (manual_package or manual, torch_impl):
        torch.manual_seed(args.seed + (rank or 0))
        learners.append(Learner(package, NUM_PIXELS, NUM_CLASSES, options,
                                args.label_smoothing, device, dtype, anneal_steps,
                                args.hidden, args.batchnorm, OPTIMIZERS[args.optimizer],
                                args.channels, getattr(args, "engine", False),
                                args.model == "resnet", rank is not None,
                                getattr(args, "sync_batchnorm", False)))
    return learners
