"""Data parallelism: torch.nn.parallel.DistributedDataParallel and
torch.utils.data.DistributedSampler themselves.

Twin of manual/parallel.py, which writes out what they do:
    DistributedSampler: rank r of W takes indices[r::W] of one permutation per epoch (seed +
        epoch), padded with its first indices to a multiple of W
    DistributedDataParallel(model): at construction, the shapes checked on every rank and the
        parameters and buffers broadcast from rank 0; in forward, the buffers broadcast from
        rank 0; in backward, each gradient copied into its bucket times 1/W as soon as it is
        complete, one all-reduce SUM per bucket, and the sums copied back into the .grads:
            p.grad = sum_r (dL_r/dp / W) = dL/dp of the whole batch, on every rank
"""

from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler

__all__ = ["DistributedDataParallel", "DistributedSampler"]
