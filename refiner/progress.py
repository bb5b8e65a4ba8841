"""Progress bars that read well in a terminal and in a log file.

In a terminal: tqdm as usual. Elsewhere (``make run > log``, DVC, Prefect, CI) tqdm's
carriage-return updates pile up into one line thousands of characters long, so there each
update is a whole ASCII line, at most one every ``LOG_INTERVAL_S`` seconds, plus the last.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_INTERVAL_S = 30.0


class _Lines:
    """A stream for tqdm that ends each of its updates with a newline instead of a carriage return."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable=None, *, desc: str, total: int | None = None, enabled: bool = True, **kwargs) -> tqdm:
    """A labelled bar (say which stage, seed and round it counts): ``desc`` names it."""
    if sys.stderr.isatty():
        return tqdm(iterable, desc=desc, total=total, disable=not enabled, mininterval=1, **kwargs)
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, mininterval=LOG_INTERVAL_S,
                file=_Lines(sys.stderr), ascii=True, **kwargs)  # no width known: a short bar, the text whole
