"""manual/parallel.py's pieces in one process, against torch's own: DistributedSampler's shards,
DDP's bucket assignment, the order the engine hands over the gradients in (which DDP's rebuilt
buckets follow) and the engine's post-accumulate hooks. The runs across processes are
tests/test_compare_parallel.py's."""

import itertools

import pytest
import torch
import torch.distributed as dist

import manual
import torch_impl
from manual import autograd, functions
from manual.autograd import Variable
from manual.parallel import DistributedSampler, compute_bucket_assignment_by_size


@pytest.mark.parametrize("length, world_size", [(10, 3), (11, 4), (7, 2), (2, 3), (1, 4)])
@pytest.mark.parametrize("shuffle, drop_last", [(True, False), (True, True), (False, False),
                                                (False, True)])
def test_the_sampler_deals_every_rank_the_rows_torch_deals(length, world_size, shuffle,
                                                           drop_last):
    """Every rank, every epoch (seed + epoch), padded or dropped: torch's indices exactly."""
    for rank, epoch in itertools.product(range(world_size), (0, 3)):
        ours, theirs = (cls(range(length), world_size, rank, shuffle=shuffle, seed=5,
                            drop_last=drop_last)
                        for cls in (DistributedSampler, torch_impl.parallel.DistributedSampler))
        ours.set_epoch(epoch)
        theirs.set_epoch(epoch)
        assert (list(ours), len(ours)) == (list(theirs), len(theirs))


@pytest.mark.twin
def test_a_sampler_that_pads_with_the_last_rows_is_told_apart():
    """The twin: padding with the last indices, not the first, deals rank 3 other rows."""

    class PadsAtTheEnd(DistributedSampler):
        def __iter__(self):
            order = torch.randperm(self.length,
                                   generator=torch.Generator().manual_seed(self.seed)).tolist()
            order += order[-(self.total_size - len(order)):]
            return iter(order[self.rank:self.total_size:self.num_replicas])

    args = (range(10), 4, 3)  # rows 10 and 11 are padding: rank 2 takes one, rank 3 the other
    assert list(PadsAtTheEnd(*args)) != list(torch_impl.parallel.DistributedSampler(*args))


def sizes_to_params(sizes: list[int]) -> list[torch.Tensor]:
    return [torch.empty(size) for size in sizes]


LIMITS = (dist._DEFAULT_FIRST_BUCKET_BYTES, 25 * 1024 * 1024)


@pytest.mark.parametrize("sizes", [[10, 300_000, 5, 7_000_000, 1, 262_144, 262_144, 3],
                                   [1_000_000] * 9, [7850]])
def test_buckets_are_cut_where_torchs_are(sizes):
    """compute_bucket_assignment_by_size against torch's, in a shuffled order (a rebuild,
    in the order the gradients arrived) and in the model's: 1 MiB, then 25 MiB."""
    params = sizes_to_params(sizes)
    for order in (list(range(len(sizes))), torch.randperm(len(sizes)).tolist()):
        arrived = [params[index] for index in order]  # as the Reducer's rebuild passes them
        theirs, _ = dist._compute_bucket_assignment_by_size(arrived, list(LIMITS),
                                                            [False] * len(params), order)
        assert compute_bucket_assignment_by_size(params, order) == theirs


@pytest.mark.twin
def test_buckets_cut_at_25_mib_from_the_first_are_told_apart():
    """The twin: no small first bucket, so 300,000 floats (1.2 MB) share one with the next."""
    params = sizes_to_params([300_000, 300_000, 5])
    theirs, _ = dist._compute_bucket_assignment_by_size(params, list(LIMITS), [False] * 3,
                                                        [0, 1, 2])
    assert compute_bucket_assignment_by_size(params, [0, 1, 2], LIMITS[1:]) != theirs


def arrival_orders(model_name: str, **options) -> tuple[list[int], list[int]]:
    """(manual's engine, torch's autograd): the parameters' indices in the order their
    gradients were stored, in one backward of the same model and batch."""
    orders = []
    for package in (manual, torch_impl):
        torch.manual_seed(0)
        model = getattr(package.model, model_name)(**options, dtype=torch.float64)
        order = []
        for index, param in enumerate(model.parameters()):
            package.autograd.register_post_accumulate_grad_hook(
                param, lambda _, index=index, order=order: order.append(index))
        x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
        x = x.flatten(1) if model_name in ("SoftmaxRegression", "MLP") else x
        y = torch.tensor([0, 1, 2, 3])
        package.train.forward_backward_engine(model, x, y)
        orders.append(order)
    return orders[0], orders[1]


@pytest.mark.parametrize("model_name, options", [
    ("SoftmaxRegression", dict(in_features=784, num_classes=10)),
    ("MLP", dict(in_features=784, hidden=8, num_classes=10, batchnorm=True)),
    ("CNN", dict(in_channels=1, channels=(2, 3), num_classes=10)),
    ("ResNet", dict(in_channels=1, channels=(2, 3), num_classes=10)),
])
def test_the_engine_hands_over_the_gradients_in_torchs_order(model_name, options):
    """The order DDP rebuilds its buckets in: manual's engine stores each gradient when
    torch's does (a Linear's bias before its weight, a convolution's weight before its
    bias). It is not the model's order, which the first iteration's single bucket takes."""
    ours, theirs = arrival_orders(model_name, **options)
    assert ours == theirs
    assert ours != list(range(len(ours)))
    if len(ours) > 2:  # nor the reverse of it: a layer's weight and bias in either order
        assert ours != list(reversed(range(len(ours))))


def test_hooks_run_after_accumulate_grad_has_stored_the_gradient():
    """A post-accumulate hook sees its leaf's .grad as stored, in every backward (the second
    adds into it: 3 + 3)."""
    weight = torch.tensor([[2.0]])
    seen = []
    autograd.register_post_accumulate_grad_hook(weight, lambda leaf: seen.append(leaf.grad.item()))
    for _ in range(2):
        product = functions.mm(Variable(torch.tensor([[3.0]])), Variable(weight, True))
        autograd.backward(functions.sum(product))
    assert seen == [3.0, 6.0]
