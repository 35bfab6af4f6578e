"""The test suite finds MNIST by the project's one rule: $MNIST_ROOT, else ./data.

Each test runs pytest in a subprocess from an empty working folder, with MNIST_ROOT and
CI unset unless said, and with every download sent to a closed local port, so nothing
is fetched. `--setup-only` sets up each test's fixtures (where a missing data set skips
or fails it) without running the tests themselves.
"""

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import conftest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "Digit_Classification_with_Softmax.ipynb"
NOTEBOOK_CASE = f"{NOTEBOOK.name}::{NOTEBOOK.name}"  # its junit classname::name
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}


def setup_only(cwd: Path, *paths: Path, **env: str) -> tuple[subprocess.CompletedProcess, dict]:
    """pytest --setup-only on `paths`, run in `cwd`. Returns the run and each test's outcome
    from its junit report, by "classname::name": "skipped: <message>", "error: <message>",
    or "set up"."""
    junit = cwd / "junit.xml"
    clean = {k: v for k, v in os.environ.items() if k not in ("MNIST_ROOT", "CI", "NO_PROXY")}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--setup-only", "-p", "no:cacheprovider",
         f"--junitxml={junit}", *map(str, paths)],
        cwd=cwd, env=clean | NO_NETWORK | env, capture_output=True, text=True, timeout=300)
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        what = [f"{child.tag}: {child.get('message')}" for child in case]
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = (what or ["set up"])[0]
    return result, outcomes


def test_data_in_dot_data_sets_up_every_real_data_test(tmp_path: Path, mnist_root: Path):
    """MNIST in ./data, MNIST_ROOT unset: the whole suite, notebook included, skips nothing
    but the CUDA test."""
    (tmp_path / "data").symlink_to(mnist_root, target_is_directory=True)
    result, outcomes = setup_only(tmp_path, REPO / "tests", NOTEBOOK)
    assert result.returncode == 0, result.stdout[-2000:]
    assert len(outcomes) > 400 and NOTEBOOK_CASE in outcomes
    not_set_up = {name: what for name, what in outcomes.items()
                  if what != "set up" and "CUDA" not in what}
    assert not not_set_up


def test_no_data_anywhere_skips_with_one_line_saying_what_to_set(tmp_path: Path):
    """No ./data, no MNIST_ROOT, the download failing: the real-data tests and the notebook
    skip (the others, like the bad-flag tests, still run), and one line says how many and
    what to set."""
    result, outcomes = setup_only(tmp_path, REPO / "tests" / "test_compare.py", NOTEBOOK)
    assert result.returncode == 0, result.stdout[-2000:]
    skipped = [name for name, what in outcomes.items() if what.startswith("skipped")]
    assert NOTEBOOK_CASE in skipped and len(skipped) >= 5
    assert set(outcomes.values()) - {"set up"} == {outcomes[NOTEBOOK_CASE]}
    lines = [line for line in result.stdout.splitlines() if "real-data tests skipped" in line]
    raw = tmp_path.resolve() / "data" / "MNIST" / "raw"
    assert len(lines) == 1 and lines[0].startswith(
        f"{len(skipped)} real-data tests skipped, set MNIST_ROOT to a folder holding MNIST/raw/: "
        f"MNIST not found in {raw} and the download failed")


def test_no_data_under_ci_fails_instead_of_skipping(tmp_path: Path):
    """The same, with CI set: the real-data tests and the notebook fail; none skips."""
    result, outcomes = setup_only(tmp_path, REPO / "tests" / "test_compare.py", NOTEBOOK, CI="true")
    assert result.returncode == 1
    failed = [name for name, what in outcomes.items() if what.startswith("error")]
    assert NOTEBOOK_CASE in failed and len(failed) >= 5
    assert set(outcomes.values()) - {"set up"} == {outcomes[NOTEBOOK_CASE]}
    assert "set MNIST_ROOT" in outcomes[NOTEBOOK_CASE] and "skipped" not in result.stdout


def test_notebook_kernel_is_given_the_root_the_tests_found(monkeypatch, mnist_root: Path):
    """The notebook's kernel starts in the notebook's folder, not pytest's: conftest hands it
    the root it found as MNIST_ROOT, so `pytest` run from elsewhere finds the same data."""
    monkeypatch.delenv("MNIST_ROOT", raising=False)  # restored after the test
    conftest.pytest_runtest_setup(SimpleNamespace(path=NOTEBOOK))
    assert os.environ["MNIST_ROOT"] == str(mnist_root) and mnist_root.is_absolute()
