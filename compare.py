"""Train the manual and the torch implementation side by side and prove they match.

Both start from the same parameters and see the same batches. On every step
the two gradients are compared; then both optimizers step on torch's gradients,
and the two parameter sets, running statistics and optimizer states are compared;
before the next step the manual learner takes over torch's state, so that every
step is checked from the same starting point (--independent: never, and see
float32 trajectories drift apart). At the end, their test accuracies and
predictions are compared. Prints a verdict, writes report.json and plots, and
exits 0 on MATCH, 1 on MISMATCH or a diverging run, 2 on bad usage or bad data, 130 on Ctrl-C.

    python compare.py                      # defaults: softmax regression, 5 epochs, lr 0.5
    python compare.py --model cnn          # each model has its own defaults (--help)
    python compare.py --dtype float64      # gradients must agree to 1e-10
    python compare.py --model mlp --batchnorm --lr 0.1    # a hidden layer, normalized
    python compare.py --model mlp --optimizer adam --lr 1e-3   # Adam, its state compared too
    python compare.py --model mlp --engine # manual's gradients through its engine, by hand
    python compare.py --model mlp --graph  # step 1's graph, manual's beside torch's
    python compare.py --manual exercises   # your own code (python -m practice) as manual
    python compare.py --world-size 2       # 2 processes, DistributedDataParallel by hand
    torchrun --standalone --nproc-per-node 2 compare.py   # the same, started by torchrun

This file only conducts: the flags, one epoch of the lock step, the checks, the tutor, the
report and the plots are modules of lockstep/ named for what they do (a distributed run's:
lockstep/launch.py starts the ranks, lockstep/ranks.py checks across them); the exercises are
practice/'s; the data is common/data.py's.
"""

import argparse
import math
import os
import sys
import time
from pathlib import Path
from types import ModuleType

import torch
import torch.distributed as dist
from tqdm import tqdm

from common.data import NUM_CLASSES, DataError, Splits, batches, load_splits, resolve_root
from lockstep import alone, flags, graph, launch, limits, ranks, report, threads
from lockstep.epoch import Diverged, Mismatch, train_epoch_lockstep
from lockstep.learner import make_learners
from practice import exercises, loader
from practice.exercises import ExerciseError


def main(argv: list[str] | None = None) -> int:
    sys.stdout.reconfigure(line_buffering=True)  # piped too, each line as it comes
    args = flags.parse_args(argv, description=__doc__.splitlines()[0])
    if args.world_size > 1 and not ranks.launched():  # start the ranks, each this same command
        return launch.start(sys.argv[1:] if argv is None else argv, args.world_size)
    made: list[Path] = []  # the folders this run made, for report.discard
    try:
        with threads.for_model(args.model, args.engine):
            return run(args, made)
    except KeyboardInterrupt:  # what was printed and written stays; an empty folder goes
        report.discard(made)
        print("stopped by Ctrl-C", file=sys.stderr)
        return 130
    except Exception as error:  # a rank that died, a collective that timed out: one line
        line = ranks.lost(error)
        if not line:
            raise
        print(f"error: {line}", file=sys.stderr)
        return 1
    finally:
        ranks.leave()


def run(args: argparse.Namespace, made: list[Path]) -> int:
    """main's work: the data, the learners, the lock step; made gets the folders it makes."""
    device = args.device
    if device == "auto":  # W ranks on a machine take a GPU each, or none
        device = "cuda" if torch.cuda.device_count() >= ranks.per_machine() else "cpu"
    dtype = getattr(torch, args.dtype)
    out = args.out or report.new_folder(Path("runs"))
    try:
        package = loader.load(args.manual) if args.manual else None  # None: manual/
        first = args.manual and loader.first_not_written(  # the grader's "Next:" too
            args.manual, exercises.needed(args.model, args.batchnorm, args.optimizer,
                                          args.engine or args.graph, args.world_size > 1))
        if first:  # of W ranks, rank 0 says it
            if ranks.first():
                print(loader.not_written_line(args.manual, first), file=sys.stderr)
            return 1
        data = load_splits(resolve_root(args.data_root), seed=args.seed, subset=args.subset,
                           standardize=args.standardize, dtype=dtype, device=device)
        problem = flags.data_problem(args, len(data.train_x))
        if problem:
            raise DataError(problem)
        if args.graph:  # step 1's two graphs and their verdict: no run, no folder
            return graph_of_step_one(args, package, data, device, dtype)
        if ranks.launched():  # one rank of W: the others print nothing but their errors
            ranks.init_process_group(device)
        if ranks.first():
            made += report.prepare_folder(out, args.overwrite)  # last: no folder if it cannot start
        else:
            sys.stdout = open(os.devnull, "w")  # for the rest of the process
    except (ExerciseError, DataError, OSError, ranks.SetUpError) as error:
        if ranks.first() or isinstance(error, ranks.SetUpError):
            print(f"error: {error}", file=sys.stderr)  # every rank has the others: rank 0's
        return 2
    try:
        return train_and_compare(args, package, data, device, dtype, out)
    except Exception as error:  # a learner's code, --manual DIR, can raise anything
        if ranks.lost(error):
            raise  # main says it
        line = args.manual and loader.explained(error, args.manual, anywhere=True)
        if not line:
            raise
        print(line if loader.unfinished(error) else f"error: {line}", file=sys.stderr)
        report.discard(made)  # nothing was written into it
        return 1


def graph_of_step_one(args: argparse.Namespace, package: ModuleType | None, data: Splits,
                      device: str, dtype: torch.dtype) -> int:
    """Print both graphs of step 1 side by side, and their verdict (lockstep.graph). The exit
    status: 0 on GRAPH MATCH, 1 on GRAPH MISMATCH."""
    learners = make_learners(args, device, dtype, math.ceil(len(data.train_x) / args.batch_size),
                             package)
    x, y = next(batches(data.train_x, data.train_y, args.batch_size, args.seed, 1))
    match, lines = graph.report(learners, x, y, limits.limit(dtype))
    print("\n".join(lines))
    return 0 if match else 1


def train_and_compare(args: argparse.Namespace, package: ModuleType | None, data: Splits,
                      device: str, dtype: torch.dtype, out: Path) -> int:
    """Train both learners in lock step, epoch by epoch; then the verdict, report and plots.
    The exit status: 0 on MATCH, 1 on MISMATCH or a diverging run."""
    start = time.perf_counter()
    rank = dist.get_rank() if ranks.launched() else None  # None: one process
    out = None if rank else out  # of W ranks, rank 0 alone writes the report
    shard = math.ceil(len(data.train_x) / args.world_size)  # each rank's rows (all, for one)
    steps_per_epoch = math.ceil(shard / (args.batch_size // args.world_size))
    learners = make_learners(args, device, dtype, steps_per_epoch, package, rank)
    across = rank is not None and ranks.Ranks(learners, args.batchnorm or args.model == "resnet",
                                              args.sync_batchnorm)
    unsynced = across and across.start()  # DDP's broadcast: every rank starts from rank 0's
    if unsynced:
        print(f"MISMATCH ({args.dtype}) before training: {unsynced['message']}")
        return 1
    pairs = zip(*(learner.parameters() for learner in learners), strict=True)
    assert all(torch.equal(m, t) for m, t in pairs), "both must start from identical parameters"
    initial = [learner.evaluate(data.val_x, data.val_y)[0] for learner in learners]
    print(f"initial validation loss: manual {initial[0]:.4f}, torch {initial[1]:.4f} "
          f"(an untrained {NUM_CLASSES}-class classifier should give about ln {NUM_CLASSES} = "
          f"{math.log(NUM_CLASSES):.4f})")

    def on_its_own(found) -> dict | None:  # after a mismatch: each learner alone (lockstep.alone)
        return None if across else alone.after(found, args, data, device, dtype,
                                               steps_per_epoch, package)

    history = report.History(args.independent, initial)
    for epoch in range(1, args.epochs + 1):
        epoch_batches = (across.epoch_batches(data, args.batch_size, args.seed, epoch) if across
                         else batches(data.train_x, data.train_y, args.batch_size, args.seed,
                                      epoch))
        with tqdm(total=steps_per_epoch, desc=f"epoch {epoch}", leave=False, file=sys.stderr,
                  disable=args.quiet or not sys.stderr.isatty()) as progress:
            try:
                result = train_epoch_lockstep(learners, epoch_batches, progress,
                                              args.independent,
                                              (epoch - 1) * steps_per_epoch + 1,
                                              diagnose=history.diagnosis is None,
                                              stop=args.manual is not None
                                              and not args.keep_going and not across,
                                              ranks=across or None)
            except (Diverged, Mismatch) as error:
                result = error
        if isinstance(result, Exception):
            seconds = time.perf_counter() - start
            return stopped(args, device, history, seconds, epoch, result, out, on_its_own)
        if across:  # each rank's mean loss is its shard's: their mean, the whole batches'
            result["loss"] = across.mean_over_ranks(result["loss"])
        losses, accuracies = zip(*(learner.evaluate(data.val_x, data.val_y)
                                   for learner in learners), strict=True)
        found = history.diagnosis is None and result.get("diagnosis")
        history.add_epoch(result, accuracies, losses)
        print(history.epoch_line(epoch))
        if found and args.manual:  # --keep-going: the diagnosis now, not only at the end
            why = "--keep-going" if args.keep_going else "every rank trains every epoch"
            print(f"MISMATCH ({args.dtype}), training goes on ({why}): {found['message']}")

    seconds = time.perf_counter() - start
    summary = report.summarize(args, device, learners, data, history, seconds,
                               on_its_own(history.diagnosis))
    if across:  # every rank's verdict and the checks across ranks, to rank 0, which reports
        summary = across.finish(summary)
        if summary is None:
            return 0
        print("\n".join(summary["parallel"]["lines"]))
    print(report.final_table(summary))
    for warning in (summary["not_learning"], summary["unseen"]):
        if warning:
            print(warning)
    report.write(out, summary)
    if args.plots:
        from lockstep import plots  # matplotlib takes 0.4 s to import: only a run that draws pays
        plots.save_all(out, learners, data, history)
    print(f"wrote {out}/report.json" + (" and plots" if args.plots else ""))
    return 0 if summary["match"] else 1


def stopped(args: argparse.Namespace, device: str, history: report.History, seconds: float,
            epoch: int, error: Diverged | Mismatch, out: Path | None, on_its_own) -> int:
    """A run that cannot go on: say why, write report.json (unless out is None: a rank but
    rank 0), exit status 1. An exercise not
    written yet is not a mismatch: its error goes on to main, which names it. The mismatch
    and its diagnosis come first; then on_its_own(error), what each learner reaches alone."""
    if isinstance(error, Diverged):
        print(f"error: training diverged in epoch {epoch}, {error}: "
              f"lower --lr (now {args.lr:g})", file=sys.stderr)
        if out is not None:
            report.write(out, report.stopped(args, device, history, seconds))
        return 1
    if loader.unfinished(error.__cause__):
        raise error.__cause__
    first = history.diagnosis or error.diagnosis
    said = sys.stdout if out is not None else sys.stderr  # a rank's: the launcher shows it
    print(f"MISMATCH ({args.dtype}) in epoch {epoch}, {error}", file=said)
    if first["message"] != str(error):
        print(f"diagnosis: {first['message']}", file=said)
    own = on_its_own(error)
    if own:
        print(report.alone_sentence(own))
    if args.manual and not args.keep_going and out is not None:
        print(report.stop_line(first, args.independent))
    if out is not None:
        report.write(out, report.stopped(args, device, history, seconds, str(error), first,
                                         own))
    return 1


if __name__ == "__main__":
    status = main()
    ranks.end(status)  # a rank of W ends here
    sys.exit(status)
