"""Progress reporting that suits where the output goes: a live bar on a terminal, a few plain lines in a log file.

tqdm redraws its bar with carriage returns; written to a file (a cluster job's log) that is a stream of tens of
kilobytes per network. ``progress`` gives tqdm's bar when stderr is a terminal, and otherwise a ``LineProgress``
that prints one line every ``every_percent`` of the work or every ``every_seconds``, whichever comes first.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator


def _disabled(disable: bool) -> bool:
    return disable or os.environ.get("TQDM_DISABLE") == "1"


class LineProgress:
    """An iterable that prints 'desc: 120/300 (40 %), 12.3 s, loss=0.51' lines at coarse intervals (no redraws)."""

    def __init__(self, iterable: Iterable, desc: str, total: int | None, every_percent: float = 10.0,
                 every_seconds: float = 60.0, stream=None):
        self.iterable, self.desc = iterable, desc
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.every_percent, self.every_seconds = every_percent, every_seconds
        self.stream = stream or sys.stderr
        self.postfix = ""
        self.count, self.start, self.last_time, self.last_percent = 0, time.time(), time.time(), 0.0

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def _line(self) -> None:
        done = f"{self.count}/{self.total} ({100 * self.count / self.total:.0f} %)" if self.total else str(self.count)
        extra = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {done}, {time.time() - self.start:.1f} s{extra}", file=self.stream, flush=True)

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.count += 1
            now = time.time()
            percent = 100.0 * self.count / self.total if self.total else 0.0
            if (self.total and percent - self.last_percent >= self.every_percent) or now - self.last_time >= self.every_seconds:
                self.last_time, self.last_percent = now, percent
                self._line()

    def close(self) -> None:
        pass


class _Silent:
    def __init__(self, iterable):
        self.iterable = iterable

    def __iter__(self):
        return iter(self.iterable)

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


def progress(iterable: Iterable, desc: str, total: int | None = None, disable: bool = False):
    """tqdm on a terminal, ``LineProgress`` elsewhere, nothing when disabled (or TQDM_DISABLE=1)."""
    if _disabled(disable):
        return _Silent(iterable)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, mininterval=1.0)
    return LineProgress(iterable, desc, total)
