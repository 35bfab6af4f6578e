"""compare.py across processes: one rank of a torch.distributed run, and the checks across ranks.

    python compare.py --world-size 2 ...                 # W processes on this machine, gloo
    torchrun --nnodes N --nproc-per-node M compare.py ...  # the same code, N machines (NCCL
                                                           # on GPUs, gloo on CPUs)

Each rank builds its models from its own seed (seed + rank, as a script that seeds nothing
gets different ones), wraps each in its package's DistributedDataParallel, which makes them
rank 0's, and trains on its shard of every batch (DistributedSampler, B / W examples). The
lock step runs on every rank between manual and torch, as in one process, on the all-reduced
gradients. Across the ranks, every step:
    all-reduce     manual's bucketed all-reduce (manual/parallel.py), fed this rank's own
                   torch gradients, must give DDP's all-reduced gradients to the bit; a
                   tutorial's per-parameter all-reduce, sum then / W, is measured beside it
    identical      every rank's parameters the same after the update: checksums of their
                   bits, gathered to rank 0 (and before step 1: DDP's broadcast)
    one process    rank 0 holds DDP's gradients against one process's on the whole batch
                   (its shards, rank by rank): equal up to rounding, the order of the sums,
                   unless BatchNorm normalizes each shard with its own statistics
Rank 0 prints and writes report.json; the other ranks print only their errors.
"""

import functools
import gc
import math
import os
import sys
from datetime import timedelta

import torch
import torch.distributed as dist

import torch_impl
from lockstep import limits
from lockstep.checks import exceeds, levels, named_stats
from lockstep.epoch import Mismatch
from lockstep.kinds import make
from lockstep.learner import Learner
from lockstep.reference import float64_references, torch_rounding

TIMEOUT = timedelta(seconds=120)  # a collective that waits longer fails: no run hangs


class SetUpError(Exception):
    """The process group could not be set up; the message is one line for the user."""


def launched() -> bool:
    """Whether this process is one rank of a run (torchrun, or compare.py --world-size): the
    environment names its rank and the world size."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def per_machine() -> int:
    """The ranks on this machine (torchrun's LOCAL_WORLD_SIZE; 1 for one process)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if launched() else 1


def init_process_group(device: str) -> None:
    """Join the run the environment describes (MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE):
    gloo on the CPU, NCCL on CUDA (a GPU per rank: LOCAL_RANK's), each collective failing
    after TIMEOUT. A port in use, a peer that never comes, or fewer GPUs than ranks on the
    machine raises SetUpError."""
    if device == "cuda":
        gpus = torch.cuda.device_count()
        if gpus < per_machine():
            raise SetUpError(f"{per_machine()} ranks on this machine need a GPU each for NCCL; "
                             f"it has {gpus} (--device cpu runs them on gloo)")
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    try:
        dist.init_process_group("nccl" if device == "cuda" else "gloo", timeout=TIMEOUT)
    except (RuntimeError, ValueError) as error:  # DistNetworkError, DistStoreError among them
        address = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        reason = "the port is in use" if "EADDRINUSE" in str(error) else first_line(error)
        raise SetUpError(f"rank {os.environ['RANK']} cannot join the run at {address}: "
                         f"{reason}") from None


def first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def first() -> bool:
    """Whether this process speaks for the run: one process, or rank 0 of W (known from the
    environment, before the process group is joined)."""
    return not launched() or os.environ["RANK"] == "0"


def lost(error: BaseException) -> str | None:
    """The line for a collective that failed (a rank that stopped, or one that timed out), or
    None for an error that is not one. gloo's and NCCL's errors are DistErrors or
    RuntimeErrors that name them."""
    told = str(error)
    if not (dist.is_initialized() and (isinstance(error, dist.DistError) or any(
            word in told.lower() for word in ("gloo", "nccl", "connection")))):
        return None
    reason = first_line(error).split("] ", 1)[-1].split(". ", 1)[0]  # past gloo's file:line
    return f"rank {dist.get_rank()} lost the other ranks: {reason}"


def leave() -> None:
    """Leave the process group, if this process joined one: first wait for every rank to get
    here (rank 0 writes the report meanwhile), so that no rank tears its connections down
    while another still uses them. Where a rank has gone, there is nothing to wait for."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except Exception:  # a rank that died: its error is told already
            pass
        gc.collect()  # the learners' DDPs (held in cycles by the checks' hooks) go first
        dist.destroy_process_group()


def end(status: int) -> None:
    """A rank ends here, its output flushed, without Python's teardown at exit: torch's and
    gloo's threads, torn down then, abort a process now and then ("terminate called without
    an active exception", 1 run in 8 under load), which would turn its exit status into a
    failure. One process returns, and exits as usual."""
    if launched():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)


def shards(manual, length: int, seed: int, epoch: int) -> list[torch.Tensor]:
    """Every rank's row indices for one epoch, as torch's DistributedSampler deals them: W
    lists, rank by rank (the same lists on every rank), and the manual package's
    DistributedSampler held to it."""
    world_size = dist.get_world_size()
    dealt = []
    for package in (torch_impl, manual):
        samplers = [package.parallel.DistributedSampler(range(length), world_size, rank,
                                                         seed=seed) for rank in range(world_size)]
        for sampler in samplers:
            sampler.set_epoch(epoch)
        dealt.append([list(sampler) for sampler in samplers])
    if dealt[0] != dealt[1]:
        wrong = next(rank for rank in range(world_size) if dealt[0][rank] != dealt[1][rank])
        raise Mismatch(make(0, "DistributedSampler", "shard", (
            f"manual's DistributedSampler deals rank {wrong} other rows than torch's in epoch "
            f"{epoch}: rank r takes every W-th row of the padded permutation from the r-th, "
            "indices[r::W], not a block of them")))
    return [torch.tensor(rows) for rows in dealt[0]]


def shard_batches(x: torch.Tensor, y: torch.Tensor, rows: list[torch.Tensor],
                  batch_size: int):
    """Yield (this rank's batch, the whole batch), each an (x, y) pair: the whole batch is
    every rank's batch of that step, rank by rank, what one process would train on."""
    local = batch_size // len(rows)
    rank = dist.get_rank()
    for start in range(0, len(rows[0]), local):
        picked = [shard[start:start + local].to(x.device) for shard in rows]
        everyone = torch.cat(picked)
        yield ((x.index_select(0, picked[rank]), y.index_select(0, picked[rank])),
               (x.index_select(0, everyone), y.index_select(0, everyone)))


def checksums(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(tensors, 2) int64: two sums of each tensor's bits (plain, and weighted by position),
    equal for tensors equal to the bit and, in practice, different otherwise."""
    sums = []
    for tensor in tensors:
        bits = tensor.detach().reshape(-1).view(BITS[tensor.element_size()]).long()
        weights = torch.arange(1, len(bits) + 1, device=bits.device)
        sums.append(torch.stack([bits.sum(), (bits * weights).sum()]))
    return torch.stack(sums)


BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}  # an integer type of each float's size
APART = ("manual parameters", "torch parameters", "manual all-reduced gradients")


def per_parameter(grads: list[torch.Tensor]) -> list[torch.Tensor]:
    """The all-reduce a tutorial writes: each gradient summed over the ranks on its own, then
    divided by W. Beside DDP's, for the size of the difference."""
    summed = [grad.clone() for grad in grads]
    for grad in summed:
        dist.all_reduce(grad)
    return [grad / dist.get_world_size() for grad in summed]


class Ranks:
    """The checks across ranks of one run, step by step (see the module's docstring). The
    lock step (lockstep.epoch) calls after_gradients, after_update and, at a step over the
    limit, tutor; compare.py calls start, set_epoch and finish."""

    def __init__(self, learners: list[Learner], batch_norm: bool, sync_batch_norm: bool = False):
        self.learners, self.batch_norm, self.synced = learners, batch_norm, sync_batch_norm
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.dtype = learners[0].params[0].dtype
        self.limit = limits.limit(self.dtype)
        self.own = {which: {} for which in ("manual", "torch")}  # this rank's own gradients
        for which, learner in zip(self.own, learners, strict=True):
            for index, param in enumerate(learner.params):
                keep = functools.partial(self.keep, self.own[which], index)
                if which == "torch":  # before AccumulateGrad, which DDP hooks after
                    param.register_hook(keep)
                else:  # ahead of DDP's hook, whose last call replaces every .grad
                    learner.package.autograd.register_post_accumulate_grad_hook(
                        param, lambda p, keep=keep: keep(p.grad), prepend=True)
        self.whole = None  # rank 0: one process, trained on the whole batch (one_process)
        if self.rank == 0:
            self.whole = learners[1].twin()
        self.steps = []  # per step: [bucketed vs DDP, per-parameter vs DDP] max abs diffs
        self.whole_stats = []  # rank 0, per step: (parameters, 3) against one process
        self.held_to_float64 = 0  # rank 0: steps of those held to one process in float64
        self.apart = []  # (step, rank, what, parameter): where a rank's were not rank 0's
        self.gradient_sums = None  # manual's all-reduced gradients' checksums, this step
        self.batches = None

    lost = staticmethod(lost)

    @staticmethod
    def keep(store: dict, index: int, grad: torch.Tensor) -> None:
        store[index] = grad.detach().clone()

    def start(self) -> dict | None:
        """Before step 1: every rank's parameters must be rank 0's (DDP's broadcast), for both
        learners. The diagnosis, on every rank alike, where some rank's are not; else None."""
        self.after_update(0)
        if self.apart:
            _, rank, which, index = self.apart[0]
            name = self.learners[0].named_parameters()[index][0]
            return make(1, name, "broadcast", (
                f"rank {rank}'s {which} are not rank 0's before the first step: "
                "DistributedDataParallel broadcasts the parameters and buffers from rank 0 "
                "when it is built (each rank built its model from its own seed, seed + "
                "rank), so that every rank trains the same model"))
        return None

    def epoch_batches(self, data, batch_size: int, seed: int, epoch: int):
        """This rank's batches of one epoch, for the lock step (shard_batches); the whole
        batch of each step is kept for the check against one process."""
        rows = shards(self.learners[0].package, len(data.train_x), seed, epoch)
        for mine, everyone in shard_batches(data.train_x, data.train_y, rows, batch_size):
            self.batches = everyone
            yield mine

    def rounding(self, step: int, learners: list[Learner], x: torch.Tensor, y: torch.Tensor,
                 stats: torch.Tensor, over: bool, limit: float):
        """reference.torch_rounding for a rank, in float32: where any rank's loss or gradients
        went over the limit, every rank computes its step in float64 (a twin, on its shard)
        and all-reduces the parameters' gradients (sum / W), the exact math of the whole
        batch; each rank over the limit then holds manual to it (held stats and what was
        found, or None). Every rank calls it every step: one all-reduce of a flag."""
        if self.dtype != torch.float32:
            return None
        flag = torch.tensor([float(over)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if not flag.item():
            return None
        references = float64_references(learners, x, y, False, synchronized=self.synced)
        for name, _ in learners[0].named_parameters():
            exact = references[name][1]  # the same tensor for both sides
            dist.all_reduce(exact)
            exact /= self.world_size
        return over and torch_rounding(step, learners, x, y, stats, limit, references)

    def mean_over_ranks(self, values: list[float]) -> list[float]:
        """The mean over the ranks of each rank's values (an epoch's mean training losses,
        each over its shard: their mean is the whole batches' mean, the shards being equal)."""
        summed = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(summed)
        return (summed / self.world_size).tolist()

    def after_gradients(self, step: int) -> None:
        """Both learners have their all-reduced gradients: hold manual's reducer, fed torch's
        own gradients, and the per-parameter variant against DDP's; rank 0 also against one
        process on the whole batch."""
        torch_learner = self.learners[1]
        self.gradient_sums = checksums([param.grad for param in self.learners[0].params])
        own = [self.own["torch"][index] for index in range(len(torch_learner.params))]
        ddp = [param.grad for param in torch_learner.params]
        bucketed = self.learners[0].trained.all_reduced(own)
        tutorial = per_parameter(own)
        self.steps.append(torch.stack([
            torch.stack([(a - b).abs().max() if a is not None else b.new_tensor(math.inf)
                         for a, b in zip(result, ddp, strict=True)]).max()
            for result in (bucketed, tutorial)]))
        if self.whole is not None:
            self.whole_stats.append(self.one_process(torch_learner))

    def one_process(self, torch_learner: Learner) -> torch.Tensor:
        """(parameters, 3): named_stats of DDP's gradients against one process's on the whole
        batch. In float32, a step over the limit is held to one process in float64 instead,
        as the lock step holds manual (lockstep.reference): float32 rounding in one process
        alone can exceed it (a convolution's weight gradient under BatchNorm2d)."""
        self.whole.copy_state_from(torch_learner)
        self.whole.gradients(*self.batches)
        ddp = [(name, param.grad) for name, param in torch_learner.named_parameters()]
        stats = named_stats(ddp, [(name, param.grad)
                                  for name, param in self.whole.named_parameters()])
        if self.dtype == torch.float32 and exceeds(stats, self.limit):
            exact = self.whole.twin(torch.float64)
            exact.gradients(*(tensor.double() if tensor.is_floating_point() else tensor
                              for tensor in self.batches))
            held = named_stats([(name, grad.double()) for name, grad in ddp],
                               [(name, param.grad) for name, param in exact.named_parameters()])
            if not exceeds(held, self.limit):
                self.held_to_float64 += 1
                return held.float()
        return stats

    def after_update(self, step: int) -> None:
        """Gather each rank's checksums of both learners' parameters and of manual's
        all-reduced gradients of the step (the lock step then gave manual torch's, so this is
        where manual's own show), and note the ranks whose are not rank 0's (every rank
        notes the same)."""
        params = [checksums(learner.params) for learner in self.learners]
        mine = torch.stack([*params, self.gradient_sums if step else params[0]])
        gathered = [torch.empty_like(mine) for _ in range(self.world_size)]
        dist.all_gather(gathered, mine)  # (3, parameters, 2) from each rank
        for rank, theirs in enumerate(gathered):
            for which, same in zip(APART, (theirs == gathered[0]).all(dim=2), strict=True):
                if not same.all():
                    self.apart.append((step, rank, which, int((~same).nonzero()[0])))

    def tutor(self, step: int, learners: list[Learner], x, y, limit: float,
              independent: bool) -> dict:
        """Why manual's all-reduced gradients are not DDP's, parameter by parameter: each is
        the average (as it should be), W times it, this rank's own gradient, or its own
        times 1/W; otherwise the difference starts before the all-reduce."""
        W = self.world_size
        if self.synced:  # SyncBatchNorm's forward: the whole batch's statistics, or its own?
            pairs = zip(*(learner.named_hidden_outputs() for learner in learners), strict=True)
            for (name, mine), (_, theirs) in pairs:
                if "batchnorm" in name and not close(mine, theirs, limit):
                    return make(step, name, "statistics", (
                        f"manual's SyncBatchNorm output differs from torch's already in forward, "
                        f"on rank {self.rank}: it normalizes with other statistics than the "
                        f"whole batch's. Are its per-channel sums added up across the {W} "
                        "ranks (an all-reduce SUM) and divided by n, the values a channel has "
                        "on all ranks together? A rank alone has only its own shard's"))
        names = [name for name, _ in learners[0].named_parameters()]
        kinds = {}
        for index, (name, mine, ddp) in enumerate(zip(
                names, (p.grad for p in learners[0].params),
                (p.grad for p in learners[1].params), strict=True)):
            own = self.own["torch"][index]
            kinds[name] = next((kind for kind, target in (
                ("average", ddp), ("times W", W * ddp), ("own", own), ("own / W", own / W))
                if close(mine, target, limit)), "other")
        return make(step, *tutored(kinds, self.rank, W, self.own_differs(limit)))

    def own_differs(self, limit: float) -> list[str]:
        """The parameters whose gradient manual computed on this rank before the all-reduce
        differs from torch's own: a mismatch that starts in backward, not in the reduce."""
        names = [name for name, _ in self.learners[0].named_parameters()]
        return [name for index, name in enumerate(names)
                if not close(self.own["manual"][index], self.own["torch"][index], limit)]

    def finish(self, summary: dict) -> dict | None:
        """Gather every rank's verdict and findings to rank 0, which gets its summary with
        the checks across ranks added ("parallel": their lines, numbers and verdict), the
        run's verdict and the first diagnosis of any rank; the other ranks get None."""
        found = {"steps": torch.stack(self.steps).double().cpu().tolist(),
                 "match": summary["match"], "diagnosis": summary["diagnosis"]}
        gathered = [None] * self.world_size
        dist.all_gather_object(gathered, found)
        if self.rank != 0:
            return None
        results = cross_rank_results(gathered, self.apart, self.whole_stats, self.world_size,
                                     self.limit, self.dtype, self.batch_norm, self.synced,
                                     [name for name, _ in self.learners[0].named_parameters()],
                                     self.held_to_float64)
        buckets = self.learners[0].trained.buckets, ddp_buckets(self.learners[1].trained)
        results["lines"].insert(1, bucket_line(*buckets, self.learners[0].params,
                                               self.learners[0].trained.rebuilt))
        summary["parallel"] = results["result"] | {"lines": results["lines"],
                                                   "buckets": buckets[0],
                                                   "ddp_buckets": buckets[1]}
        summary["match"] = (results["match"] and buckets[0] == buckets[1]
                            and all(each["match"] for each in gathered))
        told = [(rank, each["diagnosis"]) for rank, each in enumerate(gathered)
                if each["diagnosis"]]
        if not summary["match"] and told:
            rank, first = min(told, key=lambda pair: pair[1]["step"])
            summary["diagnosis"] = first | {"message": f"rank {rank}: {first['message']}"}
        return summary


def ddp_buckets(ddp) -> list[list[int]]:
    """torch's DDP's buckets now, each a list of parameter indices, from its logging data
    (DistributedDataParallel._get_ddp_logging_data): the rebuilt ones once rebuilt, else the
    first iteration's single bucket."""
    data = ddp._get_ddp_logging_data()
    if not data.get("has_rebuilt_buckets"):
        return [list(range(len(list(ddp.parameters()))))]
    return [[int(index) for index in bucket.split()]
            for bucket in data["rebuilt_per_bucket_param_indices"].split(",")]


def bucket_line(mine: list[list[int]], ddps: list[list[int]], params: list,
                rebuilt: bool) -> str:
    """What the run says of manual's buckets against DDP's."""
    sizes = ", ".join(f"{sum(params[i].numel() * params[i].element_size() for i in bucket):,} B"
                      for bucket in mine)
    how = ("rebuilt in the order the gradients arrived" if rebuilt else
           "the first iteration's, in the model's order")
    if mine == ddps:
        return (f"  buckets: manual's are DDP's: {len(mine)} bucket{'s' * (len(mine) != 1)}, "
                f"{how} ({sizes})")
    return f"  buckets: manual's {mine} are not DDP's {ddps}"


def close(a: torch.Tensor, b: torch.Tensor, limit: float) -> bool:
    return (a - b).abs().max().item() <= limit * b.abs().max().item()


def tutored(kinds: dict[str, str], rank: int, W: int, differs: list[str]) -> tuple:
    """(tensor, kind, sentence) for make: what the classification of each parameter's
    gradient (Ranks.tutor) says went wrong."""
    by_kind = {}
    for name, kind in kinds.items():
        by_kind.setdefault(kind, []).append(name)
    first = next(name for name, kind in kinds.items() if kind != "average")
    if differs:
        return (f"{differs[0]}.grad", "backward", (
            f"on rank {rank}, manual's own gradient of {', '.join(differs)} already differs "
            "from torch's before the all-reduce: the mismatch starts in backward (run "
            "without --world-size to find where)"))
    if set(by_kind) == {"times W"}:
        return (f"{first}.grad", "all-reduce", (
            f"manual's gradients are {W} times DDP's, every one: the all-reduce summed the "
            f"{W} ranks' gradients without dividing by the world size (DDP multiplies each "
            "gradient by 1/W as it copies it into its bucket)"))
    if "own / W" in by_kind:
        late = ", ".join(by_kind["own / W"])
        return (f"{by_kind['own / W'][0]}.grad", "all-reduce", (
            f"{late} hold{'s' if ',' not in late else ''} rank {rank}'s own gradient times "
            "1/W, not the average over the ranks: it reached its bucket after the bucket's "
            "all-reduce had started. The all-reduce ran before backward had finished (DDP "
            "starts a bucket's only once every gradient in it has arrived)"))
    if "own" in by_kind:
        left = ", ".join(by_kind["own"])
        return (f"{by_kind['own'][0]}.grad", "all-reduce", (
            f"{left} hold{'s' if ',' not in left else ''} rank {rank}'s own gradient, not "
            f"the average over the {W} ranks: left out of the all-reduce (every parameter "
            "must be in a bucket)"))
    return (f"{first}.grad", "all-reduce", (
        f"manual's all-reduced gradient of {first} is neither DDP's average nor a simple "
        f"mistake's (W times it, or rank {rank}'s own), while manual's own gradients before "
        "the all-reduce agree with torch's"))


def cross_rank_results(gathered: list[dict], apart: list, whole_stats: list, W: int,
                       limit: float, dtype: torch.dtype, batch_norm: bool,
                       sync_batch_norm: bool, names: list[str], held: int = 0) -> dict:
    """Rank 0's summary of the checks across ranks: the lines compare.py prints, whether
    they all hold ("match"), and the numbers report.json keeps."""
    steps = torch.tensor([found["steps"] for found in gathered], dtype=torch.float64)
    bucketed, tutorial = steps[..., 0], steps[..., 1]  # (ranks, steps): an epoch has a step
    identical, count = int((bucketed == 0).all(dim=0).sum()), steps.shape[1]
    lines = [f"world size {W} ({dist.get_backend()})"]
    lines.append(f"  all-reduce: manual's buckets, fed torch's own gradients, give DDP's "
                 f"all-reduced gradients to the bit at {identical} of {count} steps on all "
                 f"{W} ranks")
    per_param = tutorial.max().item()
    lines.append(f"  per-parameter all-reduce, sum then / {W}: "
                 + ("bit-identical too (W = 2: a + b = b + a, and / 2 is exact)"
                    if per_param == 0 else
                    f"up to {per_param:.1e} apart from DDP's (the sums in another order, "
                    f"and / {W} after the sum)"))
    first_apart = next((entry for entry in apart if entry[0]), None)
    lines.append("  identical on every rank after every step: both learners' parameters and "
                 "manual's all-reduced gradients" if first_apart is None
                 else f"  rank {first_apart[1]}'s {first_apart[2]} are not rank 0's at step "
                      f"{first_apart[0]}")
    result = {"world_size": W, "steps": count, "all_reduce_identical_steps": identical,
              "per_parameter_max_abs_diff": per_param,
              "ranks_apart": [list(entry) for entry in apart]}
    match = identical == count and not apart
    if whole_stats:
        stats = levels(torch.stack(whole_stats), dtype)
        worst = stats[..., 1].max(dim=0).values  # per parameter, the worst step
        name = names[int(worst.argmax())]
        within = not exceeds(torch.stack(whole_stats).reshape(-1, 3), limit)
        result["one_process_max_rel_diff"] = worst.max().item()
        result["one_process_max_abs_diff"] = stats[..., 0].max().item()
        result["one_process_within_rounding"] = within
        line = (f"  against one process on the whole batch: gradients max rel diff "
                f"{worst.max().item():.1e} ({name})")
        result["one_process_steps_held_to_float64"] = held
        if within:
            lines.append(line + f" <= {limit:g}: within rounding (the sums in another order)"
                         + (f"; {held} step{'s' * (held != 1)} held to one process in "
                            "float64, where float32 rounding alone went over" if held else ""))
        elif batch_norm and not sync_batch_norm:
            lines.append(line + f" > {limit:g}: not within rounding, as expected: each rank's "
                         f"BatchNorm normalizes with its own shard's statistics, one process "
                         f"with the whole batch's (--sync-batchnorm shares them)")
        else:
            lines.append(line + f" > {limit:g}: NOT within rounding")
            match = False
    result["match"] = match
    return {"lines": lines, "match": match, "result": result}
