"""hw2: train, separate and evaluate a vocals / accompaniment Open-Unmix model on MUSDB18.

Flow: data -> model -> train -> separate -> evaluate -> report.
"""

__version__ = "0.1.0"


class Hw2Error(Exception):
    """A problem with the user's input: its message is one line that names the problem and the fix.

    Command-line entry points print it as `error: <message>` and exit with status 2, without a traceback.
    """
