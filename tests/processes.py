"""pytest run as `python -m pytest ARGS` would run it, several times in turn in one process.

The tests that run pytest itself (the grading of exercise folders, the data rule) need a
process of their own: a run imports the project's modules as it finds them (an exercise folder
as manual, a conftest with no data found). One process for several runs starts Python, torch
and pytest once: before each run it forgets every module of the project, moves to the run's
folder and takes the run's environment, so that each run sees what a new process would.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

IN_TURN = """
import contextlib, io, json, os, sys
import pytest
root, runs = sys.argv[1], json.loads(sys.argv[2])
project, venv = os.path.join(root, ""), os.path.join(root, ".venv", "")
def ours(name, module):  # manual, tests, test_layers (a test module), lockstep.epoch, ...
    file = getattr(module, "__file__", None) or ""
    return name.partition(".")[0] in ("manual", "tests") or (
        file.startswith(project) and not file.startswith(venv))
for cwd, env, args in runs:
    for name in [name for name, module in sys.modules.items() if ours(name, module)]:
        del sys.modules[name]
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        status = pytest.main(args)
    print("ran", json.dumps([int(status), output.getvalue()]), flush=True)
"""


def start(runs: list[tuple[Path, dict[str, str], list[str]]]) -> subprocess.Popen:
    """A process doing each run (folder, environment, pytest's arguments) in turn; finish()
    reads what they printed."""
    plain = [(str(cwd), env, args) for cwd, env, args in runs]
    return subprocess.Popen([sys.executable, "-c", IN_TURN, str(ROOT), json.dumps(plain)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(process: subprocess.Popen, runs: int) -> list[tuple[int, str]]:
    """(exit status, what pytest printed on stdout and stderr) of each of the `runs` runs of a
    process start() began; kills it if it fails or takes more than 10 minutes."""
    try:
        printed = process.communicate(timeout=600)[0]
    finally:
        process.kill()  # a no-op once it has ended; none is left running on an error
    results = [tuple(json.loads(line.removeprefix("ran ")))
               for line in printed.splitlines() if line.startswith("ran ")]
    assert process.returncode == 0 and len(results) == runs, printed[-3000:]
    return results


def pytest_in_turn(runs: list[tuple[Path, dict[str, str], list[str]]]) -> list[tuple[int, str]]:
    """(exit status, output) of each run (folder, environment, pytest's arguments), done in
    turn in one process."""
    return finish(start(runs), len(runs))
