"""hw2: train, separate and evaluate a vocals / accompaniment Open-Unmix model on MUSDB18.

Flow: data -> model -> train -> separate -> evaluate -> report.

Every command line shares one bad-input policy, defined here: a problem with the user's input is one line on
stderr, `error: <what is wrong and the fix>`, exit status 2, no traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable

__version__ = "0.1.0"


class Hw2Error(Exception):
    """A problem with the user's input: its message is one line that names the problem and the fix."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_cli(action: Callable[[], object], interrupted: str = "interrupted") -> int:
    """Run a command's work: 0 when it succeeds, 2 with one `error:` line for an `Hw2Error`, 130 with the
    `interrupted` line for Ctrl-C."""
    try:
        action()
    except Hw2Error as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
    return 0
