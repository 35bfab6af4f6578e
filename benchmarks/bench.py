"""Seconds per epoch of four MNIST training pipelines, against the machine's own limits.

    python benchmarks/bench.py                  # about 7-9 minutes on 2 CPU cores
    python benchmarks/bench.py --device cuda    # the same on a GPU
    python benchmarks/bench.py --variants resnet --no-recipe   # one variant's rows alone

MNIST is found as everywhere in the project: --data-root, else $MNIST_ROOT, else ./data.

Pipelines, each timed at batch sizes 32, 100, 1000 and the whole training set:
  baseline    the course-material way: torchvision's MNIST with transforms.ToTensor()
              through a shuffling DataLoader into nn.Linear + nn.CrossEntropyLoss + SGD
  torch_impl  the project's torch twin on common/data.py's in-memory batches
  manual      the hand-written twin on the same batches
  lockstep    compare.py's lock-step run of both, checking every step (the cost of checking)
All train on the same 55,000 images with plain SGD, lr 0.5, in float32. Then, at batch
100 only, the same three project pipelines for six variants (VARIANT_FLAGS):
  mlp torch_impl, mlp manual, mlp lockstep    --model mlp (128 hidden units), SGD lr 0.1
  mlp-bn ...                                  the same with BatchNorm1d
  adam ...                                    softmax regression with Adam, lr 1e-3
  mlp-adam ...                                the MLP with Adam, lr 1e-3
  cnn ...                                     --model cnn (16 and 32 channels), SGD lr 0.05,
                                              momentum 0.9: about 7 s an epoch for one model
  resnet ...                                  --model resnet (24 and 48 channels), SGD lr
                                              0.05, momentum 0.9, label smoothing 0.1; its
                                              manual side always runs through the engine
and for the MLP and the CNN, manual's gradients through its engine (ENGINE_PIPELINES):
  mlp manual-engine, mlp lockstep-engine      manual through manual/autograd.py, alone and
  cnn manual-engine, cnn lockstep-engine      in lock step (compare.py --engine)
--pipelines picks pipelines by name, --variants every pipeline of the variants named.

Each (pipeline, batch size) runs in a process of its own, which reports its peak
resident memory: a warm-up of 100 steps, then --epochs timed epochs (more for a fast
pipeline, up to 15, until 2 s have been timed), of which the median is reported. The
pipelines of one batch size take their epochs in turn (baseline, torch_impl, manual,
lockstep, baseline, ...), one process running at a time: the speed of a shared machine
drifts by 10-50 % over minutes, and so it drifts for all of them alike. The machine's
ceilings are measured in the same run: a large float32 matmul (GFLOP/s) and a large
tensor copy (GB/s, bytes read + written). They give every epoch the same floor: its
floating-point operations at the matmul rate or its compulsory memory traffic at the
copy rate, whichever takes longer (see epoch_work). Finally the 92.6 % recipe (README)
is trained by each implementation alone, and by compare.py.

Writes table.md and results.json (every epoch's seconds) to --out.
"""

import argparse
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import platform
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import MNIST
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root
import compare
from common.data import (
    NUM_CLASSES,
    NUM_PIXELS,
    DataError,
    batches,
    load_splits,
    resolve_root,
)
from lockstep import flags
from lockstep.epoch import train_epoch_lockstep
from lockstep.flags import ArgumentParser
from lockstep.learner import make_learners
from lockstep.report import prepare_folder

PIPELINES = ("baseline", "torch_impl", "manual", "lockstep")
BATCH_SIZES = ("32", "100", "1000", "full")
# Variants of the project's pipelines, timed at batch 100 only: their compare.py flags, and the
# target for their manual / torch_impl ratio.
# (Each flag that a model's own defaults would set is given: a constant lr, as timed before.)
CONSTANT = ["--lr-schedule", "constant", "--label-smoothing", "0"]
VARIANT_FLAGS = {"mlp": ["--model", "mlp", "--lr", "0.1", "--momentum", "0", *CONSTANT],
                 "mlp-bn": ["--model", "mlp", "--batchnorm", "--lr", "0.1", "--momentum", "0",
                            *CONSTANT],
                 "adam": ["--optimizer", "adam", "--lr", "1e-3"],
                 "mlp-adam": ["--model", "mlp", "--optimizer", "adam", "--lr", "1e-3", *CONSTANT],
                 "cnn": ["--model", "cnn", "--lr", "0.05", "--momentum", "0.9", *CONSTANT],
                 # its defaults (channels 24 and 48, label smoothing), but a constant lr:
                 # --lr-schedule cosine needs the run's length, and costs a scalar a step
                 "resnet": ["--model", "resnet", "--channels", "24", "48", "--lr", "0.05",
                            "--momentum", "0.9", "--lr-schedule", "constant",
                            "--label-smoothing", "0.1"]}
VARIANT_GOALS = {"mlp": 0.9, "mlp-bn": 0.9, "adam": 1.1, "mlp-adam": 1.1, "cnn": 1.1,
                 "resnet": 1.0}
# manual's gradients through its engine (manual/autograd.py: the recorded graph, walked), alone
# and in lock step: compare.py --engine. For these variants, with the target for their
# manual-engine / torch_impl ratio. (The ResNet's manual side always runs through the engine:
# its "resnet manual" is the engine, and it has no chain to set it against.)
ENGINE = "-engine"
ENGINE_PIPELINES = ("manual" + ENGINE, "lockstep" + ENGINE)
ENGINE_GOALS = {"mlp": 1.0, "cnn": 1.0}
VARIANT_PIPELINES = tuple(f"{variant} {pipeline}" for variant in VARIANT_FLAGS
                          for pipeline in PIPELINES[1:]
                          + (ENGINE_PIPELINES if variant in ENGINE_GOALS else ()))
VARIANT_BATCH_SIZE = "100"
LR = 0.5  # compare.py's default
# Each timed job runs in a process of its own, forked from a server that imported torch once
# (this CUDA build takes ~6 s to import) and ran nothing, so no thread pool is forked half-used.
CHILDREN = multiprocessing.get_context("forkserver")
CHILDREN.set_forkserver_preload(["torch", "torchvision", "compare"])
TRAIN_SIZE, VAL_SIZE, SEED = 55_000, 5_000, 0  # load_splits' defaults
MIN_TIMED_SECONDS, MAX_TIMED_EPOCHS = 2.0, 15  # fast pipelines: more epochs, a steadier median
WARMUP_STEPS = 100  # batches trained before the timed epochs (all of them at batch size "full")
# The README's recipe: compare.py flags reaching 92.6 % test accuracy for both in < 10 s.
RECIPE = "--batch-size 1000 --epochs 20 --lr 1.0 --momentum 0.9 --lr-schedule cosine"


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def batch_size(text: str) -> str:
    return text if text == "full" else str(positive(text))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data-root", help="folder holding MNIST/raw/ "
                        "(default: $MNIST_ROOT, else ./data; downloaded when missing)")
    parser.add_argument("--epochs", type=positive, default=3,
                        help="timed epochs at least, after the warm-up")
    parser.add_argument("--batch-sizes", nargs="+", type=batch_size, default=BATCH_SIZES,
                        help="positive numbers, or 'full' for the whole training set")
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--pipelines", nargs="+", choices=PIPELINES + VARIANT_PIPELINES,
                        default=PIPELINES + VARIANT_PIPELINES, metavar="PIPELINE",
                        help="the variants' (mlp, adam, cnn, resnet, ...) run at batch 100 "
                             "only; one of: "
                             + ", ".join(map(repr, PIPELINES + VARIANT_PIPELINES)))
    chosen.add_argument("--variants", nargs="+", choices=tuple(VARIANT_FLAGS), metavar="VARIANT",
                        help="in place of --pipelines: every pipeline of these variants, and "
                             "nothing else; of: " + ", ".join(VARIANT_FLAGS))
    parser.add_argument("--threads", type=positive, default=os.cpu_count(),
                        help="torch.set_num_threads (default: every core)")
    parser.add_argument("--no-recipe", action="store_true", help="skip the 92.6 %% recipe runs")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    if args.variants:
        args.pipelines = [pipeline for pipeline in VARIANT_PIPELINES
                          if pipeline.rpartition(" ")[0] in args.variants]
    return args


# -- the machine's ceilings and the epoch's floor ------------------------------------------

def sync(device: str) -> None:
    """Wait for the GPU's queued work (the CPU's is done when the call returns)."""
    if device == "cuda":
        torch.cuda.synchronize()


def best_seconds(work, device: str, repeats: int) -> float:
    """The fastest of `repeats` timed calls of work(), after one untimed call."""
    work()
    seconds = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        work()
        sync(device)
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def ceilings(device: str) -> dict:
    """The best float32 matmul rate (GFLOP/s) and tensor copy rate (GB/s) seen.

    Also the rate of the full-batch epoch's own product, (55,000 x 784) by (784 x 10):
    not a ceiling, but what the BLAS library makes of that tall, thin shape.
    """
    n, copy_bytes = (8192, 2**30) if device == "cuda" else (2048, 2**28)
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    source = torch.ones(copy_bytes // 4, device=device)
    target = torch.zeros_like(source)  # both touched once: no page faults in the timing
    images = torch.rand(TRAIN_SIZE, NUM_PIXELS, device=device)
    weight = torch.rand(NUM_CLASSES, NUM_PIXELS, device=device)
    matmul = best_seconds(lambda: a @ b, device, repeats=10)
    copy = best_seconds(lambda: target.copy_(source), device, repeats=10)
    thin = best_seconds(lambda: images @ weight.T, device, repeats=10)
    return {"matmul_gflops": 2 * n**3 / matmul / 1e9, "matmul_size": n,
            "copy_gbps": 2 * copy_bytes / copy / 1e9, "copy_bytes": copy_bytes,
            "epoch_matmul_gflops": 2 * images.numel() * NUM_CLASSES / thin / 1e9}


def epoch_work(n: int = TRAIN_SIZE, d: int = NUM_PIXELS, c: int = NUM_CLASSES) -> dict:
    """What one epoch cannot avoid, whatever the batch size.

    flops: the two matmuls, logits = x W^T and dLoss/dW = g^T x, 2 n d c each (the
    softmax's O(n c) adds under 1 %). bytes: each image read once (n d float32) and
    each label (n int64); the weights are 31 KB and stay in cache.
    """
    return {"flops": 4 * n * d * c, "bytes": 4 * n * d + 8 * n}


def floor_seconds(work: dict, ceiling: dict) -> float:
    """The roofline: compute-bound or memory-bound, whichever is slower."""
    return max(work["flops"] / (ceiling["matmul_gflops"] * 1e9),
               work["bytes"] / (ceiling["copy_gbps"] * 1e9))


# -- the pipelines, one epoch each --------------------------------------------------------

def baseline_epoch(root: Path, batch_size: int, device: str):
    """The conventional loop: a DataLoader turning PIL images into tensors, one by one."""
    order = torch.randperm(TRAIN_SIZE + VAL_SIZE, generator=torch.Generator().manual_seed(SEED))
    dataset = MNIST(root, train=True, transform=transforms.ToTensor())
    # the 55,000 images load_splits trains on, so that an epoch has the same size everywhere
    loader = DataLoader(Subset(dataset, order[VAL_SIZE:].tolist()), batch_size=batch_size,
                        shuffle=True)
    model = nn.Linear(NUM_PIXELS, NUM_CLASSES).to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)

    def epoch(_: int, steps: int | None = None) -> float:
        running_loss = 0.0
        for images, labels in itertools.islice(loader, steps):
            images, labels = images.view(-1, NUM_PIXELS).to(device), labels.to(device)
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        return running_loss / len(loader)
    return epoch


def project_epoch(pipeline: str, root: Path, batch_size: int, device: str):
    """torch_impl, manual or both in lock step, on the project's in-memory batches;
    softmax regression with SGD, or a variant: "mlp manual", "mlp-adam lockstep", ...;
    "manual-engine" and "lockstep-engine": the same with compare.py --engine."""
    data = load_splits(root, device=device)
    variant, _, pipeline = pipeline.rpartition(" ")
    engine = ["--engine"] if pipeline.endswith(ENGINE) else []
    pipeline = pipeline.removesuffix(ENGINE)
    args = flags.parse_args(["--batch-size", str(batch_size), "--lr", str(LR),
                               "--device", device, *VARIANT_FLAGS.get(variant, []), *engine])
    learners = make_learners(args, device, torch.float32)

    def epoch_batches(epoch: int, steps: int | None):
        return itertools.islice(batches(data.train_x, data.train_y, batch_size, SEED, epoch), steps)

    if pipeline == "lockstep":  # the float64 reference of step 1: in the warm-up, epoch 0
        steps_per_epoch = -(-len(data.train_x) // batch_size)
        return lambda epoch, steps=None: train_epoch_lockstep(
            learners, epoch_batches(epoch, steps), tqdm(disable=True),
            first_step=epoch * steps_per_epoch + 1)
    learner = learners[0] if pipeline == "manual" else learners[1]
    return lambda epoch, steps=None: learner.train_epoch(epoch_batches(epoch, steps))


def pipeline_child(job: dict, connection) -> None:
    """A process of its own for one pipeline at one batch size (see time_batch_size).

    Builds the pipeline and trains WARMUP_STEPS untimed (first-call costs: thread pool,
    allocator, kernel choice), says "ready", then times one epoch each time it is sent
    an epoch number and answers the seconds; sent None, it answers its peak memory.
    """
    torch.set_num_threads(job["threads"])
    root, device = Path(job["root"]), job["device"]
    batch_size = TRAIN_SIZE if job["batch"] == "full" else int(job["batch"])
    rss_at_start = peak_rss_mib()
    if job["pipeline"] == "baseline":
        run_epoch = baseline_epoch(root, batch_size, device)
    else:
        run_epoch = project_epoch(job["pipeline"], root, batch_size, device)
    run_epoch(0, WARMUP_STEPS)
    connection.send("ready")
    while (epoch := connection.recv()) is not None:
        sync(device)
        start = time.perf_counter()
        run_epoch(epoch)
        sync(device)
        connection.send(time.perf_counter() - start)
    memory = {"rss_at_start_mib": rss_at_start, "peak_rss_mib": peak_rss_mib()}
    if device == "cuda":
        memory["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    connection.send(memory)


def time_batch_size(job: dict, pipelines: list[str], batch: str) -> list[dict]:
    """Every pipeline at one batch size, each in a process of its own (its own peak
    memory), their epochs taken in turn, in the order of `pipelines`, then again.
    A machine whose speed drifts (a shared one does, by 10-50 % over minutes) then slows
    every pipeline alike, and the ratios between them hold. Only one process runs at a
    time. Each pipeline gets job["epochs"] timed epochs, or more up to MIN_TIMED_SECONDS.
    """
    children = {}
    for pipeline in pipelines:
        connection, child_end = CHILDREN.Pipe()
        process = CHILDREN.Process(target=pipeline_child,
                                   args=(job | {"pipeline": pipeline, "batch": batch}, child_end))
        process.start()
        children[pipeline] = (process, connection)
    for pipeline, (_, connection) in children.items():
        receive(connection, pipeline, batch)  # "ready": every warm-up is over before timing

    def wants_more(seconds: list[float]) -> bool:
        return len(seconds) < job["epochs"] or (sum(seconds) < MIN_TIMED_SECONDS
                                                and len(seconds) < MAX_TIMED_EPOCHS)

    seconds = {pipeline: [] for pipeline in pipelines}
    while any(wants_more(times) for times in seconds.values()):
        for pipeline, (_, connection) in children.items():
            if wants_more(seconds[pipeline]):
                connection.send(1 + len(seconds[pipeline]))
                seconds[pipeline].append(receive(connection, pipeline, batch))
    results = []
    for pipeline, (process, connection) in children.items():
        connection.send(None)
        memory = receive(connection, pipeline, batch)
        process.join()
        results.append({"pipeline": pipeline, "batch": batch, "epoch_seconds": seconds[pipeline],
                        "median_seconds": statistics.median(seconds[pipeline])} | memory)
    return results


def receive(connection, pipeline: str, batch: str):
    """The child's next answer; a child that died (its traceback is above) stops the run."""
    try:
        return connection.recv()
    except EOFError:
        raise RuntimeError(f"{pipeline} at batch size {batch} failed") from None


def time_recipe(job: dict) -> dict:
    """The README recipe, trained by one implementation alone or by compare.py."""
    root, device = Path(job["root"]), job["device"]
    argv = [*shlex.split(RECIPE), "--device", device, "--data-root", str(root)]
    if job["pipeline"] == "recipe compare.py":  # on as many threads as the other recipe jobs
        os.environ.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
        # a real file, not io.StringIO: compare.main reconfigures sys.stdout (line buffering)
        with (tempfile.TemporaryDirectory() as out, open(os.devnull, "w") as quiet,
              contextlib.redirect_stdout(quiet)):
            start = time.perf_counter()
            status = compare.main([*argv, "--quiet", "--no-plots", "--out", out])
            seconds = time.perf_counter() - start
            report = json.loads((Path(out) / "report.json").read_text())
        return {"wall_seconds": seconds, "training_seconds": report["seconds"],
                "match": status == 0, "test_accuracy": [report[name]["test_accuracy"]
                                                        for name in ("manual", "torch")]}
    args = flags.parse_args(argv)
    data = load_splits(root, seed=args.seed, device=device)
    steps_per_epoch = math.ceil(len(data.train_x) / args.batch_size)
    learner = make_learners(args, device, torch.float32, steps_per_epoch)[
        0 if job["pipeline"] == "recipe manual" else 1]
    sync(device)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        learner.train_epoch(batches(data.train_x, data.train_y, args.batch_size, args.seed,
                                    epoch))
    sync(device)
    return {"training_seconds": time.perf_counter() - start,
            "test_accuracy": learner.accuracy(data.test_x, data.test_y)}


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB.

    Linux: VmHWM, the high-water mark of this program alone; getrusage's ru_maxrss
    would also count the parent's memory, inherited at fork and kept across exec.
    """
    with contextlib.suppress(OSError):
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS


def recipe_child(job: dict, connection) -> None:
    """A process of its own for one recipe run: sends back its result."""
    torch.set_num_threads(job["threads"])
    connection.send(job | time_recipe(job) | {"peak_rss_mib": peak_rss_mib()})


def time_recipe_alone(job: dict) -> dict:
    """One recipe run, in a process of its own (see CHILDREN)."""
    connection, child_end = CHILDREN.Pipe()
    process = CHILDREN.Process(target=recipe_child, args=(job, child_end))
    process.start()
    result = receive(connection, job["pipeline"], "of the recipe")
    process.join()
    return result


# -- the report ----------------------------------------------------------------------------

def machine(device: str, threads: int) -> str:
    """One line: CPU (or GPU), cores, threads used, library versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        models = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")]
        cpu = models[0] if models else cpu
    line = (f"{cpu}, {os.cpu_count()} cores, torch.set_num_threads({threads}); "
            f"Python {platform.python_version()}, torch {torch.__version__}, {platform.system()}")
    if device == "cuda":
        line = f"{torch.cuda.get_device_name()} (host: {line})"
    return line


def table(results: list[dict], ceiling: dict, floor: float) -> str:
    """The markdown table of every (pipeline, batch size), then the ceilings."""
    baseline = {r["batch"]: r["median_seconds"] for r in results if r["pipeline"] == "baseline"}
    lines = ["| pipeline | batch | s / epoch (median) | samples / s | × floor | "
             "× faster than baseline | peak RSS (MiB) |", "|---|---|--:|--:|--:|--:|--:|"]
    for r in results:
        seconds, softmax = r["median_seconds"], r["pipeline"] in PIPELINES
        speedup = (f"{baseline[r['batch']] / seconds:.1f}"
                   if softmax and r["batch"] in baseline else "–")
        versus_floor = f"{seconds / floor:.1f}" if softmax else "–"  # the floor is softmax's
        lines.append(f"| {r['pipeline']} | {r['batch']} | {seconds:.4f} | "
                     f"{TRAIN_SIZE / seconds:,.0f} | {versus_floor} | {speedup} | "
                     f"{r['peak_rss_mib']:.0f} |")
    work = epoch_work()
    lines += ["", f"Ceilings: float32 matmul {ceiling['matmul_gflops']:.1f} GFLOP/s "
              f"({ceiling['matmul_size']}² × {ceiling['matmul_size']}²), tensor copy "
              f"{ceiling['copy_gbps']:.1f} GB/s ({ceiling['copy_bytes'] / 2**20:.0f} MiB, "
              "read + write). "
              f"One epoch: {work['flops'] / 1e9:.2f} GFLOP and {work['bytes'] / 1e6:.0f} MB "
              f"moved at least, so a floor of {floor * 1e3:.1f} ms "
              f"({work['flops'] / (ceiling['matmul_gflops'] * 1e6):.1f} ms of compute, "
              f"{work['bytes'] / (ceiling['copy_gbps'] * 1e6):.1f} ms of memory traffic). "
              f"The epoch's own product, {TRAIN_SIZE:,} × {NUM_PIXELS} by {NUM_PIXELS} × "
              f"{NUM_CLASSES}, runs at {ceiling['epoch_matmul_gflops']:.1f} GFLOP/s: the "
              "forward and backward products of a full-batch step take "
              f"{work['flops'] / (ceiling['epoch_matmul_gflops'] * 1e6):.1f} ms at that rate."]
    return "\n".join(lines)


def targets(results: list[dict], floor: float, recipe: list[dict]) -> str:
    """The speed targets, each with the measured ratio; the retired ones (docs/speed.md says
    why) with their ratio only."""
    seconds = {(r["pipeline"], r["batch"]): r["median_seconds"] for r in results}
    rows = []

    def add(name: str, key_a, key_b, goal: str, passed=None, retired=False) -> None:
        if key_a in seconds and (key_b is None or key_b in seconds):
            ratio = seconds[key_a] / (floor if key_b is None else seconds[key_b])
            if retired:
                goal, verdict = f"({goal})", "retired (docs/speed.md)"
            else:
                verdict = "met" if passed(ratio) else "MISSED"
            rows.append(f"| {name} | {ratio:.2f} | {goal} | {verdict} |")

    add("baseline / manual, batch 100", ("baseline", "100"), ("manual", "100"), "≥ 30",
        retired=True)
    add("manual / torch_impl, batch 100", ("manual", "100"), ("torch_impl", "100"), "≤ 0.85",
        lambda r: r <= 0.85)
    add("manual full batch / floor", ("manual", "full"), None, "≤ 3", retired=True)
    add("torch_impl full batch / floor", ("torch_impl", "full"), None, "≤ 3", retired=True)
    add("lockstep / manual, batch 100", ("lockstep", "100"), ("manual", "100"), "≤ 2.5",
        retired=True)
    for variant, goal in VARIANT_GOALS.items():
        add(f"{variant} manual / {variant} torch_impl, batch 100", (f"{variant} manual", "100"),
            (f"{variant} torch_impl", "100"), f"≤ {goal}", lambda r, goal=goal: r <= goal)
    for variant, goal in ENGINE_GOALS.items():
        add(f"{variant} manual-engine / {variant} torch_impl, batch 100",
            (f"{variant} manual-engine", "100"), (f"{variant} torch_impl", "100"), f"≤ {goal}",
            lambda r, goal=goal: r <= goal)
    if all((name, "100") in seconds for name in ("lockstep", "manual", "torch_impl")):
        both = seconds[("manual", "100")] + seconds[("torch_impl", "100")]
        rows.append(f"| (lockstep / (manual + torch_impl), batch 100: the checks' own cost) | "
                    f"{seconds[('lockstep', '100')] / both:.2f} | – | |")
    for variant in ENGINE_GOALS:  # the engine's own cost: what the chain does not pay
        for engine, chain in zip(ENGINE_PIPELINES, PIPELINES[2:], strict=True):
            if all((f"{variant} {name}", "100") in seconds for name in (engine, chain)):
                ratio = seconds[(f"{variant} {engine}", "100")] / seconds[(f"{variant} {chain}",
                                                                           "100")]
                rows.append(f"| ({variant} {engine} / {variant} {chain}, batch 100) | "
                            f"{ratio:.2f} | – | |")
    for r in recipe:
        accuracy = r["test_accuracy"]
        accuracies = accuracy if isinstance(accuracy, list) else [accuracy]
        passed = min(accuracies) >= 0.926 and r["training_seconds"] < 10
        shown = " / ".join(f"{a:.2%}" for a in accuracies)
        rows.append(f"| {r['pipeline']}: test accuracy, training s | {shown}, "
                    f"{r['training_seconds']:.1f} s"
                    + (f" ({r['wall_seconds']:.1f} s wall)" if "wall_seconds" in r else "")
                    + f" | ≥ 92.6 %, < 10 s | {'met' if passed else 'MISSED'} |")
    return "\n".join(["| target | measured | goal | |", "|---|--:|--:|---|", *rows])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: no CUDA device is available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    root = resolve_root(args.data_root)
    try:
        prepare_folder(args.out)
        load_splits(root)  # fails early, and downloads once, if the data is missing
    except (DataError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    ceiling = ceilings(args.device)
    floor = floor_seconds(epoch_work(), ceiling)
    job = {"root": str(root), "device": args.device, "threads": args.threads,
           "epochs": args.epochs}
    softmax = [p for p in args.pipelines if p in PIPELINES]
    variants = [p for p in args.pipelines if p in VARIANT_PIPELINES]
    rounds = [(softmax, batch) for batch in args.batch_sizes] + [(variants, VARIANT_BATCH_SIZE)]
    results = []
    for pipelines, batch in rounds:
        if not pipelines:
            continue
        results += time_batch_size(job, pipelines, batch)
        for r in results[-len(pipelines):]:
            print(f"{r['pipeline']:>19} batch {batch:>5}: {r['median_seconds']:.4f} s/epoch "
                  f"({', '.join(f'{s:.3f}' for s in r['epoch_seconds'])})", file=sys.stderr)
    results.sort(key=lambda r: args.pipelines.index(r["pipeline"]))  # the table: by pipeline
    recipe = [] if args.no_recipe else [time_recipe_alone(job | {"pipeline": f"recipe {name}"})
                                        for name in ("manual", "torch_impl", "compare.py")]
    command = "python " + " ".join(shlex.quote(a) for a in [
        "benchmarks/bench.py", *(sys.argv[1:] if argv is None else argv)])
    text = "\n\n".join([f"`{command}` on {machine(args.device, args.threads)}",
                        table(results, ceiling, floor), targets(results, floor, recipe),
                        f"Whole run: {time.perf_counter() - start:.0f} s."])
    print(text)
    (args.out / "table.md").write_text(text + "\n")
    raw = {"command": command, "machine": machine(args.device, args.threads),
           "ceilings": ceiling, "epoch_work": epoch_work(), "floor_seconds": floor,
           "results": results, "recipe": {"flags": RECIPE, "runs": recipe}}
    (args.out / "results.json").write_text(json.dumps(raw, indent=2) + "\n")
    print(f"wrote {args.out}/table.md and results.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
