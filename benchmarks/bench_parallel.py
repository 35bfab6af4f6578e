"""Data parallelism on this machine: the CNN on 2 ranks with a thread each, against one process.

    python benchmarks/bench_parallel.py               # about 1-2 minutes on 2 CPU cores
    python benchmarks/bench_parallel.py --model mlp   # another model (softmax, mlp, cnn)

MNIST is found as everywhere in the project: --data-root, else $MNIST_ROOT, else ./data.

Each row trains the model (--model, default cnn: 16 and 32 channels) with SGD at a batch of
100 for --steps timed steps, after a warm-up of 20, in processes of its own:
    one process, 2 threads        torch_impl on the whole batch
    one process, 1 thread         the same
    2 ranks, 1 thread each        torch_impl in DistributedDataParallel (gloo), 50 images a rank
    2 ranks, no all-reduce        the same inside DDP's no_sync(): what the step costs
                                  without its all-reduce, whose share of the step is the rest
    2 ranks, manual               manual/parallel.py's DistributedDataParallel, 1 thread each
Scaling efficiency: the images a second of 2 ranks over twice those of one process on one
thread (1.0: each rank as fast as a process alone). Also printed: the bytes each rank sends
per step in gloo's ring all-reduce, 2 (W - 1) / W of the gradients' bytes.

Writes parallel.md and parallel.json to --out.
"""

import argparse
import json
import os
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project, from anywhere

import manual
import torch_impl
from common.data import NUM_CLASSES, NUM_PIXELS, load_splits, resolve_root
from lockstep.launch import free_port
from lockstep.learner import Learner

BATCH = 100
WARM_UP = 20
MODELS = {"softmax": {}, "mlp": {"hidden": 128}, "cnn": {"channels": (16, 32)}}
ROWS = [  # (row, ranks, threads a process, package, all-reduce)
    ("one process, 2 threads", 1, 2, "torch_impl", True),
    ("one process, 1 thread", 1, 1, "torch_impl", True),
    ("2 ranks, 1 thread each", 2, 1, "torch_impl", True),
    ("2 ranks, no all-reduce (no_sync)", 2, 1, "torch_impl", False),
    ("2 ranks, manual", 2, 1, "manual", True),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="cnn")
    parser.add_argument("--steps", type=int, default=200, help="timed steps a row (200)")
    parser.add_argument("--data-root", help="folder holding MNIST/raw/")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be positive, got {args.steps}")
    return args


def rank_steps(rank: int, job: dict, results) -> None:
    """One rank (or the one process): warm up, then time job["steps"] steps; put the
    seconds of each step in results (rank 0's)."""
    torch.set_num_threads(job["threads"])
    ranks = job["ranks"]
    if ranks > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{job['port']}",
                                rank=rank, world_size=ranks, timeout=timedelta(seconds=60))
    try:
        package = {"manual": manual, "torch_impl": torch_impl}[job["package"]]
        torch.manual_seed(0)
        learner = Learner(package, NUM_PIXELS, NUM_CLASSES, {"lr": 0.05, "momentum": 0.9},
                          parallel=ranks > 1, engine=ranks > 1, **MODELS[job["model"]])
        data = load_splits(resolve_root(job["data_root"]))
        order = torch.randperm(len(data.train_x), generator=torch.Generator().manual_seed(0))
        local = BATCH // ranks
        seconds = []
        for step in range(WARM_UP + job["steps"]):
            start = (step * BATCH) % (len(order) - BATCH) + rank * local
            rows = order[start:start + local]
            began = time.perf_counter()
            if job["all_reduce"]:
                learner.gradients(data.train_x[rows], data.train_y[rows])
            else:
                with learner.trained.no_sync():
                    learner.gradients(data.train_x[rows], data.train_y[rows])
            learner.step()
            if step >= WARM_UP:
                seconds.append(time.perf_counter() - began)
        if rank == 0:
            results.put(seconds)
            results.put(sum(param.numel() * param.element_size() for param in learner.params))
    finally:
        if ranks > 1:
            dist.barrier()  # none tears its connections down while another uses them
            dist.destroy_process_group()


def time_row(job: dict) -> tuple[float, int]:
    """(the median seconds of a step, the gradients' bytes) of one row, in new processes."""
    context = mp.get_context("spawn")
    results = context.Queue()
    job = job | {"port": free_port()}
    processes = [context.Process(target=rank_steps, args=(rank, job, results))
                 for rank in range(job["ranks"])]
    for process in processes:
        process.start()
    try:
        seconds = results.get(timeout=600)
        grad_bytes = results.get(timeout=60)
    finally:
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.kill()
    return statistics.median(seconds), grad_bytes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.pop("OMP_NUM_THREADS", None)  # each row sets its own threads
    rows, grad_bytes = [], 0
    for name, ranks, threads, package, all_reduce in ROWS:
        step, grad_bytes = time_row({"model": args.model, "steps": args.steps, "ranks": ranks,
                                     "threads": threads, "package": package,
                                     "all_reduce": all_reduce, "data_root": args.data_root})
        rows.append({"row": name, "ranks": ranks, "step_ms": step * 1e3,
                     "images_per_s": BATCH / step})
        print(f"{name:34} {step * 1e3:7.2f} ms a step, {BATCH / step:8.0f} images/s",
              flush=True)
    by = {row["row"]: row for row in rows}
    one = by["one process, 1 thread"]["images_per_s"]
    two = by["2 ranks, 1 thread each"]
    efficiency = two["images_per_s"] / (2 * one)
    share = 1 - by["2 ranks, no all-reduce (no_sync)"]["step_ms"] / two["step_ms"]
    ring = 2 * (2 - 1) / 2 * grad_bytes
    lines = [f"# Data parallelism, --model {args.model}, batch {BATCH}, {os.cpu_count()} cores",
             "", "| row | ms a step | images / s |", "|---|--:|--:|"]
    lines += [f"| {row['row']} | {row['step_ms']:.2f} | {row['images_per_s']:,.0f} |"
              for row in rows]
    lines += ["", f"- scaling efficiency of 2 ranks: {efficiency:.2f}",
              f"- the all-reduce's share of a 2-rank step: {share:.0%}",
              f"- gradients {grad_bytes / 1024:.1f} KiB; a rank sends and receives "
              f"{ring / 1024:.1f} KiB a step in gloo's ring (2 (W - 1) / W of them)"]
    print("\n".join(lines[5 + len(rows):]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "parallel.md").write_text("\n".join(lines) + "\n")
    (args.out / "parallel.json").write_text(json.dumps(
        {"rows": rows, "efficiency": efficiency, "all_reduce_share": share,
         "gradient_bytes": grad_bytes}, indent=1))
    print(f"wrote {args.out}/parallel.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
