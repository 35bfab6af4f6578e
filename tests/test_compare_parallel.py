"""compare.py --world-size N across real processes, on gloo: DDP held to the bit, the parameters
the same on every rank, one process on the whole batch with and without BatchNorm, torchrun,
and the failures that must end in one line. Each run is a few hundred images, one epoch, and
every process started has a timeout. The tutor's broken twins are in
tests/test_compare_parallel_twins.py."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from lockstep import flags
from lockstep.launch import die_with_parent, environment, free_port
from tests.processes import ROOT

QUICK = ("--subset", "300", "--epochs", "1", "--no-plots")
MLP = ("--model", "mlp", "--hidden", "16")
TIMEOUT = 180  # seconds for one run of a few ranks; a run that takes longer has hung


def run_ranks(mnist_root, tmp_path, *args, command=("compare.py",), env=None):
    """(exit status, stdout, stderr, report.json or None) of compare.py (or `command`) with
    args; the run and every process it started are killed if it takes more than TIMEOUT."""
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, *command, "--data-root", str(mnist_root),
                                "--out", str(out), *QUICK, *args], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=os.environ | (env or {}), start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    report = out / "report.json"
    return (process.returncode, stdout, stderr,
            json.loads(report.read_text()) if report.is_file() else None)


def test_two_ranks_match_ddp_to_the_bit_and_say_their_world_size(mnist_root, tmp_path):
    """Softmax regression on 2 ranks: MATCH; manual's buckets give DDP's gradients to the
    bit at every step, the per-parameter all-reduce too (W = 2), the parameters are the same
    on both ranks, one process on the whole batch agrees within rounding; one report."""
    status, out, err, report = run_ranks(mnist_root, tmp_path, "--world-size", "2")
    assert status == 0, out + err
    assert "world size 2 (gloo)" in out and "MATCH (float32)" in out and err == ""
    parallel = report["parallel"]
    assert parallel["steps"] == 3 and parallel["all_reduce_identical_steps"] == 3  # 150 rows, 50s
    assert parallel["per_parameter_max_abs_diff"] == 0 and parallel["ranks_apart"] == []
    assert parallel["one_process_within_rounding"] and report["match"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_three_ranks_in_float64_bit_identical_where_per_parameter_is_not(mnist_root,
                                                                          tmp_path):
    """An MLP on 3 ranks in float64: DDP's bucketed all-reduce reproduced to the bit, the
    per-parameter one apart from it (the sums in another order, / 3 after them), one process
    within 1e-10."""
    status, out, err, report = run_ranks(mnist_root, tmp_path, "--world-size", "3",
                                         "--batch-size", "120", "--dtype", "float64", *MLP)
    assert status == 0, out + err
    parallel = report["parallel"]
    assert parallel["all_reduce_identical_steps"] == parallel["steps"] == 3
    assert 0 < parallel["per_parameter_max_abs_diff"] < 1e-12
    assert parallel["one_process_max_rel_diff"] <= 1e-10
    assert "up to" in out and "apart from DDP's" in out


@pytest.mark.parametrize("synced", [False, True])
def test_batchnorm_is_one_process_only_when_synchronized(mnist_root, tmp_path, synced):
    """An MLP with BatchNorm on 2 ranks: each rank normalizes with its own shard's statistics,
    beyond rounding of one process, and the tutor says why (not a mismatch: DDP itself does
    it); with --sync-batchnorm (manual's by hand, torch's through autograd), within it."""
    status, out, err, report = run_ranks(mnist_root, tmp_path, "--world-size", "2", *MLP,
                                         "--batchnorm", *(["--sync-batchnorm"] if synced else []))
    assert status == 0 and report["match"], out + err
    assert report["parallel"]["one_process_within_rounding"] is synced
    assert ("each rank's BatchNorm normalizes with its own shard's statistics" in out) is not synced


def test_torchrun_runs_the_same_command(mnist_root, tmp_path):
    """torchrun starts the ranks (its environment), compare.py joins them: the same run."""
    status, out, err, report = run_ranks(mnist_root, tmp_path, command=(
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "compare.py"))
    assert status == 0, out + err
    assert "world size 2 (gloo)" in out and report["parallel"]["steps"] == 3


def test_a_port_in_use_is_one_line_within_seconds(mnist_root, tmp_path):
    """MASTER_PORT taken by another program: one line naming it, exit 2, no folder, no hang;
    the twin of the first test, whose launcher found a free port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        status, _, err, report = run_ranks(mnist_root, tmp_path, "--world-size", "2",
                                           env={"MASTER_PORT": str(port)})
    assert status == 2 and time.monotonic() - start < 60
    assert err.strip().splitlines() == [
        f"error: rank 0 cannot join the run at 127.0.0.1:{port}: the port is in use"]
    assert report is None and not (tmp_path / "run").exists()


@pytest.mark.parametrize("argv, problem", [
    (["--world-size", "3"], "--batch-size 100 cannot be split into 3 equal shards"),
    (["--world-size", "0"], "--world-size must be positive, got 0"),
    (["--world-size", "2", "--graph"], "--graph applies to one process only"),
    (["--world-size", "2", "--sync-batchnorm"], "--sync-batchnorm applies to --world-size 2 or"),
    (["--model", "mlp", "--batchnorm", "--sync-batchnorm"], "--sync-batchnorm applies to"),
])
def test_impossible_world_sizes_are_refused_before_any_process_starts(capsys, argv, problem):
    """Bad usage: one line, exit status 2, before a rank is started."""
    with pytest.raises(SystemExit) as stopped:
        flags.parse_args(argv)
    assert stopped.value.code == 2 and problem in capsys.readouterr().err


def test_torchruns_world_size_and_the_flag_must_agree(capsys, monkeypatch):
    """Under torchrun, --world-size, if given, must be the number of ranks it started."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert flags.parse_args(["--batch-size", "100"]).world_size == 4
    with pytest.raises(SystemExit):
        flags.parse_args(["--world-size", "2"])
    assert "--world-size 2, but 4 ranks were started" in capsys.readouterr().err


# Three layers of 512 x 512 weights (1 MiB each): DDP rebuilds its buckets as two, cut after
# the first 1 MiB. Each rank trains manual's and torch's copies of it, each in its package's
# DistributedDataParallel, and feeds torch's own gradients to manual's buckets.
BUCKETS = """
import json, sys, torch, torch.distributed as dist
import manual, torch_impl
from lockstep.ranks import ddp_buckets
dist.init_process_group("gloo")
rank, sizes = dist.get_rank(), [(784, 512), (512, 512), (512, 512), (512, 10)]
models = []
for package in (manual, torch_impl):
    torch.manual_seed(0)
    layers = []
    for fan_in, fan_out in sizes:
        layers += [package.layers.Linear(fan_in, fan_out), package.layers.ReLU()]
    model = package.model.Chain(layers[:-1])
    models.append((model, package.parallel.DistributedDataParallel(model), package))
own = {}
for index, param in enumerate(models[1][0].parameters()):
    param.register_hook(lambda grad, index=index: own.__setitem__(index, grad.clone()))
identical = []
for step in range(3):
    generator = torch.Generator().manual_seed(10 * step + rank)
    x, y = torch.rand(8, 784, generator=generator), torch.randint(10, (8,), generator=generator)
    for model, ddp, package in models:
        for param in model.parameters():
            param.grad = None
        package.train.forward_backward_engine(ddp, x, y)
    params = list(models[1][0].parameters())
    mine = models[0][1].all_reduced([own[index] for index in range(len(params))])
    identical.append(all(torch.equal(a, p.grad) for a, p in zip(mine, params)))
if rank == 0:
    print(json.dumps({"identical": identical, "buckets": models[0][1].buckets,
                      "ddp": ddp_buckets(models[1][1])}))
dist.barrier()  # none tears its connections down while another uses them (lockstep.ranks.leave)
dist.destroy_process_group()
"""


@pytest.mark.parametrize("world_size", [2, 3])
def test_rebuilt_buckets_are_ddps_and_bit_identical_beyond_one_bucket(world_size):
    """A model whose gradients fill two buckets: manual's rebuilt buckets are DDP's (its
    logging data), and at every step they give DDP's all-reduced gradients to the bit."""
    port = str(free_port())
    ranks = [subprocess.Popen([sys.executable, "-c", BUCKETS], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=environment(rank, world_size, port),
                              preexec_fn=die_with_parent)
             for rank in range(world_size)]
    try:
        printed = [process.communicate(timeout=TIMEOUT) for process in ranks]
    finally:
        for process in ranks:
            process.kill()
    assert all(process.returncode == 0 for process in ranks), printed[0][1][-2000:]
    found = json.loads(printed[0][0])
    assert found["buckets"] == found["ddp"] == [[7, 6, 5, 4], [3, 2, 1, 0]]
    assert found["identical"] == [True, True, True]
