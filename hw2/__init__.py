"""hw2: train, separate and evaluate a vocals / accompaniment Open-Unmix model on MUSDB18.

Flow: data -> model -> train -> separate -> evaluate -> report.

Two policies every command shares live here:
- bad input: a problem with the user's input is one line on stderr, `error: <what is wrong and the fix>`,
  exit status 2, no traceback (`Hw2Error`, `OneLineParser`, `run_cli`);
- nothing half-written: every file is written through `atomic_write`, so a crash or a kill leaves the previous
  file (or none), never a truncated one.

Beside them, the one sample rate every module works at: `RATE`, MUSDB's 44.1 kHz.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

__version__ = "0.1.0"
RATE = 44100  # MUSDB's sample rate, and so the cache's, every model's and every score's


class Hw2Error(Exception):
    """A problem with the user's input: its message is one line that names the problem and the fix."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line on stderr and exit status 2."""

    def error(self, message):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def run_cli(action: Callable[[], object], interrupted: str = "interrupted") -> int:
    """Run a command's work: 0 when it succeeds, 2 with one `error:` line for an `Hw2Error`, 130 for Ctrl-C with
    the line the interrupt carries (a command that knows what it kept raises `KeyboardInterrupt(line)`), else
    `interrupted`."""
    try:
        action()
    except Hw2Error as e:
        close_open_bars()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        close_open_bars()
        print(str(e) or interrupted, file=sys.stderr)
        return 130
    return 0


def close_bar(bar) -> None:
    """Close a tqdm progress bar (if its own loop has not) and make sure whatever is printed next starts a line of
    its own. A bar redraws its line with carriage returns: on a terminal a bar closed without `leave` is erased,
    but in a file or a pipe its text stays and ends with no newline, so the next line (an epoch's, an error, a
    time limit) would be glued to it."""
    if not hasattr(bar, "sp") or getattr(bar, "hw2_line_ended", False):  # disabled (never drawn), or done here
        return
    bar.hw2_line_ended = True
    bar.close()  # nothing when its loop ran out: tqdm closed it then, and left its line open
    notebook = sys.modules.get("tqdm.notebook")
    if notebook is not None and isinstance(bar, notebook.tqdm_notebook):  # a widget: no line to end
        return
    if not bar.leave and not (hasattr(bar.fp, "isatty") and bar.fp.isatty()):
        bar.fp.write("\n")
        bar.fp.flush()


def close_open_bars() -> None:
    """`close_bar` every tqdm bar still open (an error or Ctrl-C left it), in screen order."""
    tqdm = sys.modules.get("tqdm")  # not imported here: a command that drew no bar has none open
    if tqdm is not None:
        for bar in sorted(getattr(tqdm.tqdm, "_instances", ()), key=lambda b: abs(getattr(b, "pos", 0))):
            close_bar(bar)


def as_json(value):
    """`value` as it reads back from JSON (tuples as lists, keys as strings): what compares equal to a record
    written with json.dumps (a results file's identity, a run's config.json)."""
    return json.loads(json.dumps(value))


TMP_TAG = ".tmp"


@contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; when the block succeeds it replaces `path` in one rename.

    The temporary file is hidden, carries the writer's pid and keeps the suffix (soundfile picks the format from
    it): `.<name>.<pid>.tmp<suffix>`. A failure removes it; a kill leaves it, and `remove_stale_temporaries`
    clears it later.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_TAG}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(text)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_write` left in `folder` (not recursive) when its writer was killed:
    those whose pid is no longer running. Returns the deleted paths."""
    removed = []
    for p in Path(folder).glob(f".*{TMP_TAG}*"):
        parts = p.name.split(".")
        pid = next((int(x) for x in reversed(parts) if x.isdigit()), None)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
