"""The all-reduce step of data parallelism, DistributedDataParallel.copy_into_bucket
(manual/parallel.py), in one process: the other ranks are simulated by an all-reduce that adds
their share of each bucket, sum_r g_r / W, to this rank's. A check of the exercise of that
name (python -m pytest --manual DIR); the runs across real processes are
tests/test_compare_parallel.py's."""

import pytest
import torch

from manual import parallel

WORLD_SIZE = 3
SHAPES = [(3, 4), (5,), (2, 2)]
BUCKETS = [[2, 0], [1]]  # in the order the gradients arrive: parameter 2 first


class Finished:
    """What an all-reduce with async_op=True returns, already done: wait() returns."""

    def wait(self) -> None:
        pass


def reduced(ddp, grads: list[torch.Tensor], others: list[list[torch.Tensor]], monkeypatch):
    """(each parameter's gradient after copy_into_bucket of grads, bucket by bucket, and
    wait_for_buckets; the number of all-reduces started). The all-reduce adds the other
    ranks' share of the bucket, their gradients times 1/W in the bucket's layout, and
    refuses a bucket that still holds NaN, the value of a place not yet filled."""
    started = []

    def all_reduce(flat: torch.Tensor, async_op: bool = False):
        number = next(i for i, bucket in enumerate(ddp.flats) if bucket is flat)
        assert not flat.isnan().any(), (
            f"the all-reduce of bucket {number} started before every gradient of it was in")
        share = sum(torch.cat([grad[i].reshape(-1) * (1.0 / WORLD_SIZE)
                               for i in BUCKETS[number]]) for grad in others)
        flat += share
        started.append(number)
        return Finished() if async_op else None

    monkeypatch.setattr(parallel.dist, "all_reduce", all_reduce)
    for flat in ddp.flats:
        flat.fill_(float("nan"))
    for index in [index for bucket in BUCKETS for index in bucket]:
        ddp.copy_into_bucket(index, grads[index])
    return ddp.wait_for_buckets(), started


def buckets_of(params: list[torch.Tensor]):
    """A DistributedDataParallel of 3 ranks holding these parameters in BUCKETS, ready for a
    backward, made without a process group (its __init__ broadcasts)."""
    ddp = parallel.DistributedDataParallel.__new__(parallel.DistributedDataParallel)
    ddp.params, ddp.buckets, ddp.world_size, ddp.flats = params, BUCKETS, WORLD_SIZE, None
    ddp.prepare_buckets()
    return ddp


def assert_average(result: list[torch.Tensor], grads: list[torch.Tensor],
                   others: list[list[torch.Tensor]]) -> None:
    """Each result is sum_r g_r / W to the bit, this rank's g first, each times 1/W."""
    for index, grad in enumerate(grads):
        expected = grad * (1.0 / WORLD_SIZE) + sum(other[index] * (1.0 / WORLD_SIZE)
                                                   for other in others)
        assert torch.equal(result[index], expected), f"parameter {index}: not DDP's average"


def gradients(dtype: torch.dtype = torch.float32):
    """(zeros for the parameters, this rank's gradients, the other ranks' gradients)."""
    torch.manual_seed(0)
    grads, *others = [[torch.randn(shape, dtype=dtype) for shape in SHAPES]
                      for _ in range(WORLD_SIZE)]
    return [torch.zeros(shape, dtype=dtype) for shape in SHAPES], grads, others


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_each_gradient_goes_into_its_bucket_times_1_over_w_and_is_all_reduced_once_full(
        dtype, monkeypatch):
    """DDP's average, to the bit: sum_r g_r / W, each g_r multiplied by 1/W before the sum,
    each bucket all-reduced once, after its last gradient."""
    params, grads, others = gradients(dtype)
    result, started = reduced(buckets_of(params), grads, others, monkeypatch)
    assert started == [0, 1]
    assert_average(result, grads, others)


class NotDivided(parallel.DistributedDataParallel):
    """A twin: this rank's gradient copied as it is, not times 1/W."""

    def copy_into_bucket(self, index, grad):
        super().copy_into_bucket(index, grad * self.world_size)


class TooEarly(parallel.DistributedDataParallel):
    """A twin: a bucket all-reduced on its first gradient, before the others are in."""

    def copy_into_bucket(self, index, grad):
        number = self.place[index][0]
        if self.pending[number] == len(self.buckets[number]):
            self.handles[number] = parallel.dist.all_reduce(self.flats[number], async_op=True)
        torch.mul(grad, 1.0 / self.world_size, out=self.view(index))
        self.pending[number] -= 1


@pytest.mark.twin
@pytest.mark.parametrize("twin", [NotDivided, TooEarly])
def test_the_checks_catch_a_missing_1_over_w_and_an_early_all_reduce(twin, monkeypatch):
    params, grads, others = gradients()
    ddp = buckets_of(params)
    ddp.__class__ = twin
    with pytest.raises(AssertionError, match=r"not DDP's average|before every gradient"):
        result, _ = reduced(ddp, grads, others, monkeypatch)
        assert_average(result, grads, others)
