"""The pages hold: README.md, docs/*.md and the notebooks' text.

1. Every relative link reaches a file or folder, and every #anchor a heading of the page
   it names (the anchor as GitHub makes it from the heading).
2. Every command shown (a line of a ```sh block, or inline `python ...`, `make ...`,
   `pytest ...`) is accepted by the parser of the command line it names: compare.py's flags,
   the benchmark's, python -m practice's, pytest's --manual, a target of the Makefile.
3. Words: no page speaks of a "session" or a "VM"; the machine the figures were measured on
   is named in docs/speed.md, once, and nowhere else.

Each check returns what is wrong, as a list of lines; its twin feeds it a broken page.
"""

import contextlib
import functools
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import conftest
from lockstep import flags
from practice import exercises

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOTEBOOKS = conftest.NOTEBOOKS
CODE_BLOCK = re.compile(r"```.*?```", flags=re.S)
MACHINE = re.compile(r"\b(AMD|EPYC|Intel|Xeon|Ryzen|Core i\d|Apple M\d|NVIDIA|RTX|[AHLTV]\d{2,3})\b"
                     r"|virtual machine|where this was written")
README_LINES = 150


def text_of(page: Path) -> str:
    """A page's Markdown: the file, or a notebook's markdown cells one after the other."""
    if page.suffix != ".ipynb":
        return page.read_text()
    cells = json.loads(page.read_text())["cells"]
    return "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")


def prose(markdown: str) -> str:
    """The Markdown without its code: fenced blocks and inline code spans left out."""
    return re.sub(r"`[^`]*`", "", CODE_BLOCK.sub("", markdown))


# 1. Links and anchors -------------------------------------------------------------------------

def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    return {anchor(heading) for heading in
            re.findall(r"^#+ (.+)$", CODE_BLOCK.sub("", markdown), flags=re.M)}


def broken_links(page: Path, markdown: str) -> list[str]:
    """Each relative link of the page that reaches nothing, or no heading of its target."""
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(markdown)):
        if re.match(r"[a-z]+:", target):
            continue  # a web address: not ours to check offline
        path, _, fragment = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            problems.append(f"{page.name}: {target} reaches no file")
        elif fragment and fragment not in anchors(markdown if not path else text_of(linked)):
            problems.append(f"{page.name}: {target} reaches no heading #{fragment}")
    return problems


@pytest.mark.parametrize("page", PAGES + NOTEBOOKS, ids=lambda page: page.name)
def test_every_link_and_anchor_resolves(page: Path):
    assert not broken_links(page, text_of(page))


@pytest.mark.twin
def test_a_missing_file_and_a_wrong_anchor_are_found():
    page = REPO / "docs" / "tutor.md"
    broken = "# Title\n\n[a](missing.md) [b](../README.md#no-such-heading) [c](#title) [d](#nope)"
    assert broken_links(page, broken) == [
        "tutor.md: missing.md reaches no file",
        "tutor.md: ../README.md#no-such-heading reaches no heading #no-such-heading",
        "tutor.md: #nope reaches no heading #nope"]


def test_anchors_are_made_as_github_makes_them():
    assert anchor("What `make demo` prints") == "what-make-demo-prints"
    assert anchor("Why the update is checked on torch's gradients") == (
        "why-the-update-is-checked-on-torchs-gradients")


# 2. Commands ----------------------------------------------------------------------------------

def commands(markdown: str) -> list[str]:
    """Each command the page shows: the lines of its ```sh and ```bash blocks (a line ending
    in a backslash goes on), and its inline code that starts with python, make or pytest
    (a span may wrap a line); comments and leading VAR=value settings left out."""
    found = []
    for block in re.findall(r"```(?:sh|bash)\n(.*?)```", markdown, flags=re.S):
        found += block.replace("\\\n", " ").splitlines()
    spans = re.findall(r"`([^`]+)`", CODE_BLOCK.sub("", markdown))
    found += [span for span in spans if re.match(r"(python|make|pytest)\b", span.strip())]
    found = [" ".join(command.split(" #")[0].split()) for command in found]
    return [re.sub(r"^(\w+=\S+ )+", "", command) for command in found if command]


@functools.cache
def benchmark_flags():
    """benchmarks/bench.py's parse_args (the script is not in a package), loaded once."""
    spec = importlib.util.spec_from_file_location("bench", REPO / "benchmarks" / "bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench.parse_args


@functools.cache
def pytest_options() -> set[str]:
    """The options pytest takes here: its own, its plugins' and the project's (--manual,
    practice.grading), as `pytest --help` lists them."""
    shown = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=REPO, text=True,
                           capture_output=True, env=os.environ | {"PYTEST_ADDOPTS": ""}).stdout
    return set(re.findall(r"(?<![\w-])(--?[\w][\w-]*)", shown))


def refused(command: str) -> str | None:
    """Why the command line named by `command` refuses it, or None if it accepts it."""
    words = shlex.split(command)
    parsers = {("python", "compare.py"): flags.parse_args,
               ("python", "benchmarks/bench.py"): benchmark_flags(),
               ("python", "-m", "practice"): exercises.parse_args}
    for start, parse in parsers.items():
        if tuple(words[:len(start)]) == start:
            return parse_problem(parse, words[len(start):])
    if words[0] == "make":
        targets = re.findall(r"^([\w-]+):", (REPO / "Makefile").read_text(), flags=re.M)
        assignments = dict(word.split("=", 1) for word in words[1:] if "=" in word)
        unknown = [word for word in words[1:] if "=" not in word and word not in targets]
        if unknown:
            return f"the Makefile has no target {unknown[0]}"
        return parse_problem(flags.parse_args, shlex.split(assignments.get("ARGS", "")))
    if words[:3] == ["python", "-m", "pytest"] or words[0] == "pytest":
        options = [word.split("=")[0] for word in words if word.startswith("-")]
        unknown = [option for option in options if option not in pytest_options()]
        return f"pytest has no {unknown[0]} here" if unknown else None
    return None  # not one of the project's command lines (pip, jupyter)


def parse_problem(parse, argv: list[str]) -> str | None:
    """What a parser printed when it refused argv (exit status 2), or None."""
    said = io.StringIO()
    try:
        with contextlib.redirect_stderr(said), contextlib.redirect_stdout(io.StringIO()):
            parse(argv)
    except SystemExit as stop:
        if stop.code not in (0, None):  # --help exits 0
            return said.getvalue().strip() or f"exit status {stop.code}"
    return None


def refused_commands(page: Path) -> list[str]:
    return [f"{page.name}: {command}: {problem}" for command in commands(text_of(page))
            if (problem := refused(command))]


@pytest.mark.parametrize("page", PAGES + NOTEBOOKS, ids=lambda page: page.name)
def test_every_command_shown_is_accepted(page: Path):
    assert not refused_commands(page)


def starts_from_a_command(markdown: str) -> bool:
    """Its title, then a ```sh block with the command, then what the learner will see."""
    chunks = markdown.split("\n\n")
    return (len(chunks) > 2 and chunks[0].startswith("# ") and chunks[1].startswith("```sh\n")
            and bool(commands(chunks[1])))


@pytest.mark.parametrize("page", PAGES[1:], ids=lambda page: page.name)
def test_each_page_starts_from_the_command_that_runs_it(page: Path):
    assert starts_from_a_command(text_of(page))


@pytest.mark.twin
def test_a_page_that_starts_elsewhere_is_found():
    assert starts_from_a_command("# Tutor\n\n```sh\nmake demo\n```\n\nIt prints...")
    assert not starts_from_a_command("# Tutor\n\nSome words first.\n\n```sh\nmake demo\n```")
    assert not starts_from_a_command("# Tutor\n\n```sh\n\n```\n\nNo command in it.")


def test_the_readme_is_short():
    assert len(text_of(REPO / "README.md").splitlines()) <= README_LINES


def test_the_commands_of_the_pages_are_found():
    found = commands(text_of(REPO / "README.md"))
    assert "make demo" in found and "make test" in found
    assert any(command.startswith("python compare.py --model mlp") for command in found)


@pytest.mark.twin
def test_a_wrong_flag_a_wrong_value_and_a_wrong_target_are_refused():
    assert "unrecognized arguments: --hiden" in refused("python compare.py --hiden 128")
    assert "--momentum must be in [0, 1)" in refused("python compare.py --momentum 1.5")
    assert "--lr" in refused("python benchmarks/bench.py --lr 1")
    assert refused("make demos") == "the Makefile has no target demos"
    assert "--model" in refused('make demo ARGS="--model vgg"')
    assert refused("python -m pytest --manul exercises") == "pytest has no --manul here"
    assert refused("python -m pytest --manual exercises --tb=short -q") is None
    shown = commands("```sh\nMNIST_ROOT=/x python compare.py \\\n  --hiden 3\n```")
    assert "--hiden" in refused(shown[0])
    assert commands("```bash\nCI=1 make demo  # note\npython compare.py \\\n  --lr 1\n```") == [
        "make demo", "python compare.py --lr 1"]
    assert refused("python compare.py --help") is None


# 3. Words -------------------------------------------------------------------------------------

def opening(markdown: str) -> str:
    """A page's title, its command and its first paragraph."""
    chunks = markdown.split("\n\n")
    first = next(i for i, chunk in enumerate(chunks) if not chunk.startswith(("#", "```")))
    return "\n\n".join(chunks[:first + 1])


def wrong_words(page: Path, markdown: str) -> list[str]:
    """A session or a VM in the prose; a machine named outside docs/speed.md's opening."""
    problems = [f"{page.name}: says '{word}'" for word in
                re.findall(r"\b(sessions?|VMs?)\b", prose(markdown), flags=re.I)]
    machines = MACHINE.findall(markdown)
    if page == REPO / "docs" / "speed.md":
        if len(machines) != len(MACHINE.findall(opening(markdown))):
            problems.append(f"{page.name}: names the machine past its opening")
    elif machines:
        problems.append(f"{page.name}: names the machine ({machines[0]}); docs/speed.md does")
    return problems


@pytest.mark.parametrize("page", PAGES + NOTEBOOKS, ids=lambda page: page.name)
def test_no_page_speaks_of_sessions_or_names_the_machine(page: Path):
    assert not wrong_words(page, text_of(page))


def test_speed_names_the_machine_at_its_top():
    assert MACHINE.findall(opening(text_of(REPO / "docs" / "speed.md")))


def test_the_code_speaks_of_no_session_or_vm():
    """Comments and docstrings too: nothing says this session, this VM, an earlier one."""
    tracked = subprocess.run(["git", "ls-files", "*.py", "Makefile", "*.toml", ".ci/*"],
                             cwd=REPO, text=True, capture_output=True).stdout.split()
    said = [f"{name}: {word}" for name in tracked if name != "tests/test_pages.py"  # its twins
            for word in code_words((REPO / name).read_text())]
    assert tracked and not said


def code_words(text: str) -> list[str]:
    return re.findall(r"\b(?:this|that|an earlier|earlier) (?:session|VM)s?\b|\bVMs?\b", text,
                      flags=re.I)


@pytest.mark.twin
def test_a_session_or_a_vm_in_the_code_is_found():
    assert code_words("# 2 s on this VM (an earlier session: 3 s)\nscope='session'") == [
        "this VM", "an earlier session"]


@pytest.mark.twin
def test_a_session_a_vm_and_a_machine_named_elsewhere_are_found():
    page = REPO / "docs" / "tutor.md"
    assert wrong_words(page, "Measured on this session's VM, an AMD EPYC.") == [
        "tutor.md: says 'session'", "tutor.md: says 'VM'",
        "tutor.md: names the machine (AMD); docs/speed.md does"]
    speed = REPO / "docs" / "speed.md"
    assert wrong_words(speed, "# Speed\n\n```sh\nmake\n```\n\nOn an AMD EPYC.\n\nAn H200.") == [
        "speed.md: names the machine past its opening"]
