"""compare.py --world-size W on one machine: start W ranks of the same command, as torchrun does.

Each rank is `python compare.py ARGS` with torchrun's environment: RANK, LOCAL_RANK,
WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR (127.0.0.1) and MASTER_PORT (a free port, unless
the environment names one), and OMP_NUM_THREADS: the cores shared out between the ranks, at
least one each. Each rank runs in a session of its own, so that Ctrl-C reaches the launcher
alone, which passes it on once. Rank 0 prints to the terminal; the others' output is kept in
a file, whose last line is shown if that rank is the first to fail. When rank 0 fails, the
others are stopped at once; when another fails, rank 0 gets GRACE seconds to end on its own.
No rank outlives the launcher.
"""

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPARE = Path(__file__).resolve().parent.parent / "compare.py"
GRACE = 3.0  # seconds rank 0 gets to say its own line once another rank has failed
PR_SET_PDEATHSIG = 1  # prctl's option: the signal a process gets when its parent dies


def die_with_parent() -> None:
    """In a rank, before it starts: on Linux, have the kernel kill it should the launcher
    die first (prctl PR_SET_PDEATHSIG), so that a killed launcher leaves no rank behind.
    Elsewhere the process group's timeout ends an orphaned rank."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def free_port() -> int:
    """A TCP port nobody listens on now, for rank 0's store."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(rank: int, world_size: int, port: str) -> dict[str, str]:
    """torchrun's variables for one rank of world_size on this machine."""
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1)
                                                            // world_size))
    return os.environ | {"RANK": str(rank), "LOCAL_RANK": str(rank),
                         "WORLD_SIZE": str(world_size), "LOCAL_WORLD_SIZE": str(world_size),
                         "MASTER_ADDR": os.environ.get("MASTER_ADDR", "127.0.0.1"),
                         "MASTER_PORT": port, "OMP_NUM_THREADS": threads}


def start(argv: list[str], world_size: int) -> int:
    """Run `compare.py argv` as world_size ranks and return rank 0's exit status (or the
    status of the rank that failed first, when rank 0 was only stopped by it)."""
    port = os.environ.get("MASTER_PORT") or str(free_port())
    with tempfile.TemporaryDirectory(prefix="compare-ranks-") as folder:
        logs = [open(Path(folder) / f"rank{rank}.txt", "w+") for rank in range(world_size)]
        ranks = [subprocess.Popen([sys.executable, str(COMPARE), *argv],
                                  env=environment(rank, world_size, port),
                                  stdout=None if rank == 0 else logs[rank],
                                  stderr=None if rank == 0 else logs[rank],
                                  start_new_session=True, preexec_fn=die_with_parent)
                 for rank in range(world_size)]
        try:
            first = wait(ranks)
        except KeyboardInterrupt:  # Ctrl-C reaches the launcher alone: passed on to each rank,
            for process in ranks:  # which says it and cleans up as one process does
                process.send_signal(signal.SIGINT)
            wait(ranks, GRACE)
            return 130
        finally:
            for process in ranks:
                process.kill()  # a no-op for those that ended
                process.wait()
        status = ranks[0].returncode
        if first not in (None, 0):  # rank 0's own words are on the terminal already
            logs[first].seek(0)
            line = said(logs[first].read(), ranks[first].returncode, status)
            if line:
                print(f"rank {first}: {line}", file=sys.stderr)
            if status <= 0:  # rank 0 ended well or was stopped here: the run failed all the same
                status = ranks[first].returncode if ranks[first].returncode > 0 else 1
        for log in logs:
            log.close()
        return status


def said(log: str, status: int, rank_0_status: int) -> str | None:
    """What to show of a failed rank: its last line on stderr, unless that only says it lost
    the others; else its exit status, where it differs from rank 0's (a rank that was
    killed, or ended on its own); None where rank 0 has said it all (the same verdict)."""
    told = [line for line in log.splitlines() if line.strip()]
    if told and "lost the other ranks" not in told[-1]:
        return told[-1]
    return None if status == rank_0_status else f"ended with exit status {status}"


def wait(ranks: list[subprocess.Popen], seconds: float | None = None) -> int | None:
    """Wait for every rank (at most `seconds`); once one fails, give rank 0 GRACE seconds
    (none if it is rank 0), then return. The number of the rank that failed first, else
    None."""
    failed = None
    deadline = None if seconds is None else time.monotonic() + seconds
    while any(process.poll() is None for process in ranks):
        failed = failed if failed is not None else first_failed(ranks)
        if failed is not None and seconds is None:
            seconds = GRACE if failed else 0
            deadline = time.monotonic() + seconds
        if deadline is not None and time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return failed if failed is not None else first_failed(ranks)


def first_failed(ranks: list[subprocess.Popen]) -> int | None:
    """The rank that ended with a non-zero status, if any: of several seen at once, one
    other than rank 0, whose failure is then most likely losing that one."""
    failures = [rank for rank, process in enumerate(ranks)
                if process.returncode not in (None, 0)]
    return min(failures, key=lambda rank: (rank == 0, rank)) if failures else None
