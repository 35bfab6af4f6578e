"""pytest run as `python -m pytest ARGS` would run it, several times in turn in one process;
and the environment of a process kept off the network.

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
# each module compiled (a test module's asserts rewritten) once, not once per run, even where
# PYTHONDONTWRITEBYTECODE is set (as on the machines here): into __pycache__, as git ignores
sys.dont_write_bytecode = False
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


def pytest_in_turn(runs: list[tuple[Path, dict[str, str], list[str]]]) -> list[tuple[int, str]]:
    """(exit status, what pytest printed on stdout and stderr) of each run (folder,
    environment, pytest's arguments), done in turn in one process; the process is killed if
    it fails or takes more than 10 minutes."""
    plain = [(str(cwd), env, args) for cwd, env, args in runs]
    process = subprocess.Popen([sys.executable, "-c", IN_TURN, str(ROOT), json.dumps(plain)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        printed = process.communicate(timeout=600)[0]
    finally:
        process.kill()  # a no-op once it has ended; none is left running on an error
    results = [tuple(json.loads(line.removeprefix("ran ")))
               for line in printed.splitlines() if line.startswith("ran ")]
    assert process.returncode == 0 and len(results) == len(runs), printed[-3000:]
    return results


def offline(env: dict[str, str]) -> dict[str, str]:
    """env for a process that must not reach the network, whatever the machine: every proxy
    variable points at 127.0.0.1:9, a closed port, and no_proxy is removed, so torchvision's
    download (urllib.request) fails at once with "Connection refused"."""
    closed = dict.fromkeys(["http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"],
                           "http://127.0.0.1:9")
    return {name: value for name, value in env.items() if name.lower() != "no_proxy"} | closed
