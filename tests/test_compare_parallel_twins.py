"""The classic mistakes of data parallelism by hand, each a broken twin of manual/ (a copy with
one edit, trained as compare.py --manual DIR --world-size N), each caught, each named by the
tutor across ranks (lockstep/ranks.py). Their healthy runs are tests/test_compare_parallel.py's.
"""

import shutil

import pytest

from tests.processes import ROOT
from tests.test_compare_parallel import MLP, run_ranks

# A twin: (file in manual/, [(text, what it becomes)]), each text found exactly once.
ADD_UP = """        summed = sums.clone()
        dist.all_reduce(summed)
        return summed"""
LAUNCH = """        if self.pending[number] == 0:
            self.handles[number] = dist.all_reduce(self.flats[number], async_op=True)"""
TWINS = {
    "not dividing by W": ("parallel.py", [(
        "torch.mul(grad, 1.0 / self.world_size, out=self.view(index))",
        "torch.mul(grad, 1.0, out=self.view(index))")]),
    "an all-reduce before backward has finished": ("parallel.py", [(
        LAUNCH, LAUNCH.replace("== 0", "== len(self.buckets[number]) - 1")
        + "\n            self.handles[number].wait()")]),
    "a parameter left out": ("parallel.py", [
        ("self.buckets = [list(range(len(self.params)))]",
         "self.buckets = [list(range(1, len(self.params)))]")]),
    "no broadcast": ("parallel.py", [("        sync_module_states(self.params + self.buffers())\n",
                                      "")]),
    "BatchNorm without synchronization": ("layers.py", [
        (ADD_UP, "        return sums"),
        ("        dist.all_reduce(n)\n        return int(n)", "        return int(n)")]),
    "a rank that dies": ("parallel.py", [(
        "        number = self.place[index][0]\n",
        "        number = self.place[index][0]\n"
        "        if dist.get_rank() == 1 and self.rebuilt:\n"
        "            import os\n            os._exit(3)\n")]),
    "a sampler of its own": ("parallel.py", [(
        "        return iter(indices[self.rank:self.total_size:self.num_replicas])",
        "        return iter(indices[self.rank * self.num_samples:][:self.num_samples])")]),
}

# What each twin's run ends with: its exit status, its command line's flags, and what the
# learner reads.
CAUGHT = {
    "not dividing by W": (1, ["--world-size", "2"], [
        "diagnosis: rank 0: step 1, weight.grad differs first (all-reduce): manual's gradients "
        "are 2 times DDP's, every one: the all-reduce summed the 2 ranks' gradients without "
        "dividing by the world size",
        "give DDP's all-reduced gradients to the bit at 0 of 3 steps"]),
    "an all-reduce before backward has finished": (1, ["--world-size", "3", "--batch-size",
                                                       "120", *MLP], [
        "diagnosis: rank 0: step 1, layers.0.weight.grad differs first (all-reduce): "
        "layers.0.weight, layers.0.bias, layers.2.weight hold rank 0's own gradient times 1/W",
        "The all-reduce ran before backward had finished"]),
    "a parameter left out": (1, ["--world-size", "2"], [
        "diagnosis: rank 0: step 1, weight.grad differs first (all-reduce): weight holds rank "
        "0's own gradient, not the average over the 2 ranks: left out of the all-reduce"]),
    "no broadcast": (1, ["--world-size", "2"], [
        "MISMATCH (float32) before training: step 1, weight differs first (broadcast): rank "
        "1's manual parameters are not rank 0's before the first step"]),
    "BatchNorm without synchronization": (1, ["--world-size", "2", *MLP, "--batchnorm",
                                              "--sync-batchnorm"], [
        "diagnosis: rank 0: step 1, hidden.syncbatchnorm, the hidden layer's output in the "
        "forward pass, differs first (statistics): manual's SyncBatchNorm output differs from "
        "torch's already in forward"]),
    "a rank that dies": (1, ["--world-size", "2"], [
        "error: rank 0 lost the other ranks: ", "rank 1: ended with exit status 3"]),
    "a sampler of its own": (1, ["--world-size", "2"], [
        "MISMATCH (float32) in epoch 1, step 0, DistributedSampler differs first (shard): "
        "manual's DistributedSampler deals rank 0 other rows than torch's in epoch 1"]),
}


def broken_twin(folder, name: str):
    """A copy of manual/ in folder, with the twin's edits."""
    shutil.copytree(ROOT / "manual", folder, ignore=shutil.ignore_patterns("__pycache__"))
    file, edits = TWINS[name]
    text = (folder / file).read_text()
    for before, after in edits:
        assert text.count(before) == 1, (name, before)
        text = text.replace(before, after)
    (folder / file).write_text(text)
    return folder


@pytest.mark.twin
@pytest.mark.parametrize("name", list(TWINS))
def test_each_classic_mistake_is_caught_and_named(mnist_root, tmp_path, name):
    """The twin's run ends as CAUGHT says, in its own words, with no traceback."""
    status, flags, told = CAUGHT[name]
    folder = broken_twin(tmp_path / "twin", name)
    code, out, err, _ = run_ranks(mnist_root, tmp_path, "--manual", str(folder), *flags)
    assert code == status, out + err
    for words in told:
        assert words in out + err, out + err
    assert "Traceback" not in out + err
