"""Progress bars for a terminal, one plain line per interval for a log file.

tqdm redraws its bar with carriage returns, which a log file (a pipeline
stage's log, a SLURM job's output) keeps as one ever-growing line. When
stderr is not a terminal, :func:`bar` prints a line every
``LABELNOISE_PROGRESS_SECONDS`` seconds (default 30) and one at the end.

    for x in bar(items, desc="filter", unit="stem"):
        ...
    with bar(total=steps, desc="epoch 3", unit="step") as b:
        b.update(1); b.set_postfix(loss=f"{loss:.4f}")
"""
from __future__ import annotations

import os
import sys
import time

import tqdm

INTERVAL_ENV = "LABELNOISE_PROGRESS_SECONDS"
DEFAULT_INTERVAL = 30.0


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


class LineProgress:
    """tqdm's interface (iterate, update, set_postfix, close, a context) writing whole lines."""

    def __init__(self, iterable=None, *, total=None, desc: str = "", unit: str = "it", initial: int = 0,
                 disable: bool = False, file=None, **_ignored):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.desc, self.unit, self.n, self.disable = total, desc, unit, initial, disable
        self.file = file or sys.stderr
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.first = initial
        self.interval = _interval()
        self.closed = False
        self.written = initial  # the count the last line showed

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def set_postfix(self, refresh: bool = True, **values) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._write()

    def _write(self) -> None:
        if self.disable:
            return
        self.written = self.n
        elapsed = time.monotonic() - self.start
        done = self.n - self.first
        rate = done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total is not None else ""
        left = ""
        if self.total is not None and rate > 0 and self.n < self.total:
            left = f", {_clock((self.total - self.n) / rate)} left"
        tail = f" ({self.postfix})" if self.postfix else ""
        head = f"{self.desc}: " if self.desc else ""
        print(f"{head}{self.n}{of} {self.unit}, {rate:.2f} {self.unit}/s, {_clock(elapsed)} elapsed{left}{tail}",
              file=self.file, flush=True)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.n != self.written:  # the last count, unless a line just showed it
                self._write()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def bar(iterable=None, **kwargs):
    """A tqdm bar on a terminal, a :class:`LineProgress` elsewhere (same arguments)."""
    stream = kwargs.get("file") or sys.stderr
    if getattr(stream, "isatty", lambda: False)():
        return tqdm.tqdm(iterable, **kwargs)
    return LineProgress(iterable, **kwargs)
