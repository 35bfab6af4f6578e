"""The notebooks as stored: one per chapter, each with the outputs of one run from a clean
kernel, in order, and at most 400 KB. (The suite runs each of them too: pyproject's
testpaths and --nbmake.) A chapter's notebook opens with what it assumes and ends with
where to go next.

Each check returns what is wrong, as a list of lines; its twin feeds it a broken notebook.
"""

import json
import re
from pathlib import Path

import pytest

import conftest

FIRST, *CHAPTERS = conftest.NOTEBOOKS
MAX_BYTES = 400_000


def stored_problems(name: str, size: int, notebook: dict) -> list[str]:
    """Too large, or not stored as one run of every code cell, top to bottom."""
    problems = [f"{name}: {size:,} bytes, over {MAX_BYTES:,}"] if size > MAX_BYTES else []
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    counts = [cell.get("execution_count") for cell in code]
    if counts != list(range(1, len(code) + 1)):
        problems.append(f"{name}: not stored from one run in order (execution counts {counts})")
    outputs = [output for cell in code for output in cell.get("outputs", [])]
    if not outputs:
        problems.append(f"{name}: stored without outputs")
    errors = [output for output in outputs if output.get("output_type") == "error"]
    if errors:
        problems.append(f"{name}: stored with an error ({errors[0].get('ename')})")
    return problems


def frame_problems(name: str, notebook: dict) -> list[str]:
    """A chapter's notebook that does not say first what it assumes, or last where next."""
    text = ["".join(cell["source"]) for cell in notebook["cells"]]
    problems = []
    if "assumes" not in text[0]:
        problems.append(f"{name}: its first cell does not say what it assumes")
    if "## Where next" not in text[-1]:
        problems.append(f"{name}: its last cell does not say where to go next")
    return problems


@pytest.mark.parametrize("path", [FIRST, *CHAPTERS], ids=lambda path: path.name)
def test_each_notebook_is_stored_small_with_the_outputs_of_one_run(path: Path):
    assert not stored_problems(path.name, path.stat().st_size, json.loads(path.read_text()))


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda path: path.name)
def test_each_chapter_says_what_it_assumes_and_where_next(path: Path):
    assert not frame_problems(path.name, json.loads(path.read_text()))


def test_one_notebook_per_chapter():
    """The first keeps chapters 1-6 and ends with where next; seven chapters follow it."""
    names = {path.stem for path in CHAPTERS}
    assert names == {"hidden_layer_and_batchnorm", "adam_and_adamw", "tutor", "convolutions",
                     "what_loss_backward_does", "residual_networks", "data_parallelism"}
    cells = ["".join(cell["source"]) for cell in json.loads(FIRST.read_text())["cells"]]
    numbered = re.findall(r"^## (\d+)\.", "\n".join(cells), flags=re.M)
    assert numbered == [str(n) for n in range(1, 7)] and "## Where next" in cells[-1]


@pytest.mark.twin
def test_a_large_unrun_or_failed_notebook_and_one_without_its_frame_are_found():
    def cell(kind, source, count=None, outputs=()):
        return {"cell_type": kind, "source": [source], "execution_count": count,
                "outputs": list(outputs)}

    unrun = {"cells": [cell("markdown", "# A chapter"), cell("code", "1", 1),
                       cell("code", "2", None)]}
    cleared = {"cells": [cell("code", "1", 1)]}
    failed = {"cells": [cell("code", "1/0", 1, [{"output_type": "error",
                                                 "ename": "ZeroDivisionError"}])]}
    assert stored_problems("a", 500_000, unrun) == [
        "a: 500,000 bytes, over 400,000",
        "a: not stored from one run in order (execution counts [1, None])",
        "a: stored without outputs"]
    assert stored_problems("c", 1_000, cleared) == ["c: stored without outputs"]
    assert stored_problems("b", 1_000, failed) == ["b: stored with an error (ZeroDivisionError)"]
    assert frame_problems("a", unrun) == ["a: its first cell does not say what it assumes",
                                          "a: its last cell does not say where to go next"]
