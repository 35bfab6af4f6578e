"""Where an error was raised, in one line: "exercises/layers.py line 88, in ReLU.backward".

For errors raised by a learner's code (practice.loader, practice.grading) and by the manual
code the tutor replays (lockstep.replay): the innermost frame of the traceback that lies in
a given folder, rather than a stack dump.
"""

import functools
import traceback
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Place:
    file: str
    line: int
    function: str  # with its class where Python knows it (3.11+): "ReLU.backward"

    @property
    def at(self) -> str:
        """'exercises/layers.py line 88', without the function."""
        return f"{shown(self.file)} line {self.line}"

    def __str__(self) -> str:
        return f"{self.at}, in {self.function}"


def place(error: BaseException, folder: Path | None = None) -> Place | None:
    """The innermost frame of error's traceback that lies in folder (any frame if folder is
    None), or None if there is none."""
    places = [Place(frame.f_code.co_filename, line,
                    getattr(frame.f_code, "co_qualname", frame.f_code.co_name))
              for frame, line in traceback.walk_tb(error.__traceback__)]
    if folder is not None:
        folder = Path(folder).resolve()
        places = [where for where in places if lies_in(where.file, folder)]
    return places[-1] if places else None


@functools.cache  # a grading asks for hundreds of tracebacks through the same few files
def lies_in(file: str, folder: Path) -> bool:
    """Whether file lies in folder (resolved), at any depth."""
    return folder in Path(file).resolve().parents


def shown(path: str | Path) -> str:
    """path relative to the working folder where it lies below it, else as it is."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def first_line(error: BaseException) -> str:
    """The first line of error's message, with ' ...' if there are more."""
    lines = str(error).strip().splitlines() or [""]
    return lines[0] + (" ..." if len(lines) > 1 else "")


def one_line(error: BaseException) -> str:
    """'TypeError: the first line of its message'."""
    return f"{type(error).__name__}: {first_line(error)}"
