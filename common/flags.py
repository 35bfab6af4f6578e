"""Command-line flags: bad usage gets one line and exit status 2, before any work starts.

A flag that takes a real number uses `finite` as its argparse type, so inf and nan are
refused by name (argparse prefixes "argument --lr: "); its range is checked after parsing.
"""

import argparse
import math


class ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):
        """Bad usage: one line on stderr (not the whole usage text), exit status 2."""
        self.exit(2, f"error: {message} (see --help)\n")


def finite(text: str) -> float:
    """argparse type: a real number, neither inf nor nan."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value
