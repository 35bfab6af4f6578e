"""Data parallelism by hand: what DistributedDataParallel computes, on torch.distributed's
collectives (broadcast, all_reduce, all_gather_object). Twin of torch_impl/parallel.py
(torch.nn.parallel.DistributedDataParallel and torch.utils.data.DistributedSampler).

W processes, the ranks 0 .. W-1, each hold a copy of the model, and each trains on its own
shard of every batch: b = B / W of the batch's B examples.

Why the average of the shards' gradients is the whole batch's gradient. The batch's loss is
the mean of its examples' losses l_n, so it is the mean of the shards' mean losses L_r:
    L = (1/B) sum_{n=1..B} l_n = (1/W) sum_{r=0..W-1} L_r,    L_r = (1/b) sum_{n in shard r} l_n
and a derivative is linear:
    dL/dp = (1/W) sum_r dL_r/dp
Rank r computes dL_r/dp from its shard alone; an all-reduce SUM of dL_r/dp / W leaves dL/dp
on every rank. Every rank then takes the same optimizer step from the same parameters, and
the copies stay identical without ever being sent again.

Where that breaks: BatchNorm. Its output for one example depends on the whole batch's mean
and variance, so l_n is not a function of example n alone, and L is not a sum over the
shards of terms that each see one shard: rank r normalizes with its own b examples'
statistics, one process with all B examples'. SyncBatchNorm (manual/layers.py) all-reduces
the per-channel sums, so that every rank normalizes with the whole batch's statistics.

What DistributedDataParallel does, in order:
    construction: check that every rank has the same parameter shapes, and broadcast the
        parameters and buffers from rank 0, so that all ranks start from one model
    forward: broadcast the buffers from rank 0 (BatchNorm's running statistics are rank 0's)
    backward: once a parameter's gradient is complete (a hook after its AccumulateGrad),
        copy it into its bucket, multiplied by 1/W; once all of a bucket's gradients are in,
        start an all-reduce SUM of the bucket (asynchronous: backward goes on meanwhile);
        once every gradient is in, wait for them and copy each bucket back into the .grads
        (torch's DDP does that in a callback the engine runs at the end of backward)
    buckets: the first iteration, every parameter in one bucket, in the model's order; from
        the second on, rebuilt in the order the gradients arrived, each bucket closed once
        it holds at least 1 MiB (the first) or 25 MiB (the others)

Rounding: the all-reduce adds the W values of an entry in an order set by where the entry
sits in the buffer (gloo's ring splits the buffer into W pieces), and sum_r (g_r / W) is not
(sum_r g_r) / W when W is not a power of 2. So DDP's result, to the bit, needs its buckets,
its order and its multiplication before the sum.
"""

import functools
import itertools
import math

import torch
import torch.distributed as dist

from manual import autograd

FIRST_BUCKET_BYTES = 1024 * 1024  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES
BUCKET_BYTES = 25 * 1024 * 1024  # DistributedDataParallel(bucket_cap_mb=25)


class DistributedSampler:
    """The indices of one rank's shard of a data set, epoch by epoch:
    torch.utils.data.DistributedSampler(dataset, num_replicas, rank, shuffle, seed, drop_last).

    Each epoch, on every rank alike: a permutation of 0 .. len(dataset)-1 from a generator
    seeded with seed + epoch (set_epoch), made a multiple of num_replicas long by repeating
    its first indices (or, with drop_last, by dropping its last ones); then rank r takes every
    num_replicas-th index from the r-th: indices[r::num_replicas]. Each rank gets
    len(self) = ceil(len(dataset) / num_replicas) indices (drop_last: rounded down)."""

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.length, self.num_replicas, self.rank = len(dataset), num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        if drop_last and self.length % num_replicas:
            self.num_samples = math.ceil((self.length - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(self.length / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.length, generator=generator).tolist()
        else:
            indices = list(range(self.length))
        if self.drop_last:
            indices = indices[:self.total_size]
        else:  # pad with the first indices, as many times over as it takes
            padding = self.total_size - len(indices)
            indices += (indices * math.ceil(padding / len(indices)))[:padding]
        return iter(indices[self.rank:self.total_size:self.num_replicas])


class DistributedDataParallel:
    """module, trained by every rank on its shard as one model on the whole batch (see the
    module's docstring). The forward records through the engine (manual/functions.py), whose
    hooks (manual/autograd.py) hand over each gradient as backward completes it."""

    def __init__(self, module, broadcast_buffers: bool = True):
        self.module, self.broadcast_buffers = module, broadcast_buffers
        self.world_size = dist.get_world_size()
        self.params = module.parameters()
        verify_param_shape_across_processes(self.params)
        sync_module_states(self.params + self.buffers())
        self.buckets = [list(range(len(self.params)))]  # the first iteration: one bucket
        self.rebuilt, self.arrived, self.flats = False, [], None
        self.place, self.done = {}, set()  # where each gradient goes; those handed over
        for index, param in enumerate(self.params):
            autograd.register_post_accumulate_grad_hook(
                param, functools.partial(self.ready, index))

    def parameters(self) -> list[torch.Tensor]:
        return self.params

    def buffers(self) -> list[torch.Tensor]:
        """The module's buffers (BatchNorm's running statistics); softmax regression has none."""
        return [buffer for _, buffer in getattr(self.module, "named_buffers", list)()]

    def pre_forward(self) -> None:
        """DDP's work before each forward: rebuild the buckets once, from the order the
        first backward's gradients arrived in; broadcast the buffers from rank 0; get the
        buckets ready for this backward's gradients. Raises if the last backward left a
        parameter of a bucket without a gradient: its bucket was never all-reduced."""
        if self.done != set(self.place):
            names = [name for name, _ in self.module.named_parameters()]
            raise RuntimeError("Expected to have finished reduction in the prior iteration "
                               "before starting a new one: no gradient reached " +
                               ", ".join(names[index] for index in set(self.place) - self.done))
        if not self.rebuilt and self.arrived:
            self.buckets = compute_bucket_assignment_by_size(self.params, self.arrived)
            self.rebuilt, self.flats = True, None
        if self.broadcast_buffers:
            for buffer in self.buffers():
                dist.broadcast(buffer, src=0)
        self.prepare_buckets()
        self.done = set()

    def prepare_buckets(self) -> None:
        """Each bucket's flat buffer and where each gradient goes in it (made once per
        layout), and its count of gradients still to come."""
        if self.flats is None:
            self.flats = [self.params[0].new_zeros(sum(self.params[i].numel() for i in bucket))
                          for bucket in self.buckets]
            self.place = {}
            for number, bucket in enumerate(self.buckets):
                sizes = [self.params[i].numel() for i in bucket]
                offsets = itertools.accumulate(sizes[:-1], initial=0)  # laid end to end
                self.place |= {i: (number, start)
                               for i, start in zip(bucket, offsets, strict=True)}
        self.pending = [len(bucket) for bucket in self.buckets]
        self.handles = [None] * len(self.buckets)

    def ready(self, index: int, param: torch.Tensor) -> None:
        """The hook after AccumulateGrad: param (the index-th) has its gradient for this
        backward. Noted (the first iteration's order rebuilds the buckets), then into its
        bucket; after the last gradient, finalize_backward. A parameter in no bucket keeps its
        own gradient (DDP leaves out those that need none)."""
        if index not in self.place:
            return
        if not self.rebuilt:
            self.arrived.append(index)
        self.done.add(index)
        self.copy_into_bucket(index, param.grad)
        if self.done == set(self.place):
            self.finalize_backward()

    def copy_into_bucket(self, index: int, grad: torch.Tensor) -> None:
        """The all-reduce step: grad / W into the index-th parameter's place in its bucket,
        multiplied while copied (one pass over grad); once the bucket's last gradient is in,
        start its all-reduce SUM, asynchronously: backward goes on meanwhile.
            bucket[place] = grad * (1 / W);   all_reduce(bucket) -> sum_r grad_r / W"""
        number = self.place[index][0]
        torch.mul(grad, 1.0 / self.world_size, out=self.view(index))
        self.pending[number] -= 1
        if self.pending[number] == 0:
            self.handles[number] = dist.all_reduce(self.flats[number], async_op=True)

    def finalize_backward(self) -> None:
        """Once every gradient is in: wait for every bucket's all-reduce, and copy the sums
        into the .grads."""
        for index, grad in enumerate(self.wait_for_buckets()):
            if grad is not None:
                self.params[index].grad = grad

    def wait_for_buckets(self) -> list[torch.Tensor | None]:
        """Each parameter's all-reduced gradient, a copy out of its bucket, once the
        bucket's all-reduce has finished (None for a parameter in no bucket)."""
        for handle in self.handles:
            handle.wait()
        self.handles = [None] * len(self.buckets)  # done: none outlives its all-reduce
        return [self.view(index).clone() if index in self.place else None
                for index in range(len(self.params))]

    def view(self, index: int) -> torch.Tensor:
        """The index-th parameter's place in its bucket's flat buffer, shaped as the parameter."""
        number, start = self.place[index]
        param = self.params[index]
        return self.flats[number][start:start + param.numel()].view_as(param)

    def all_reduced(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """What backward's hooks compute, for these gradients (one per parameter) arriving
        in the buckets' order: copy_into_bucket each, then wait_for_buckets. lockstep/ranks.py
        feeds it torch's own gradients, to hold it against DDP's to the bit."""
        self.prepare_buckets()
        for index in itertools.chain(*self.buckets):
            self.copy_into_bucket(index, grads[index])
        return self.wait_for_buckets()


def compute_bucket_assignment_by_size(params: list[torch.Tensor], order: list[int],
                                      limits: tuple[int, ...] = (FIRST_BUCKET_BYTES,
                                                                 BUCKET_BYTES)) -> list[list[int]]:
    """The parameters' indices, in `order`, cut into buckets: torch.distributed's function of
    that name. A bucket closes as soon as it holds limits[k] bytes or more (k: the bucket's
    number; the last limit for all after), so the parameter that crosses a limit is still in."""
    buckets, bucket, size = [], [], 0
    for index in order:
        bucket.append(index)
        size += params[index].numel() * params[index].element_size()
        if size >= limits[min(len(buckets), len(limits) - 1)]:
            buckets.append(bucket)
            bucket, size = [], 0
    return [*buckets, bucket] if bucket else buckets


def verify_param_shape_across_processes(params: list[torch.Tensor]) -> None:
    """Raise ValueError unless every rank's parameters have this rank's shapes, in order."""
    shapes = [tuple(param.shape) for param in params]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, shapes)
    for rank, theirs in enumerate(gathered):
        if theirs != shapes:
            raise ValueError(f"DistributedDataParallel: rank {rank}'s parameters have shapes "
                             f"{theirs}, rank {dist.get_rank()}'s {shapes}")


def sync_module_states(tensors: list[torch.Tensor]) -> None:
    """Every rank's tensors (parameters, buffers) made rank 0's, in place: broadcasts."""
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor, src=0)
