"""The one progress display: a tqdm bar on a terminal, plain log lines everywhere else.

In a SLURM or CI log (stderr not a terminal) a tqdm bar is one ever-growing line joined by carriage returns;
there a line `desc: n/total unit (pct%), rate, eta, postfix` is printed every `every_s` seconds and at the end.
`quiet_library_bars()` turns the Hugging Face libraries' own bars off in the same case.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO

# Often enough to see a job is alive, rarely enough that a day's log stays readable.
EVERY_S = 30.0


def progress(iterable: Iterable | None = None, *, total: int | None = None, initial: int = 0, desc: str,
             unit: str = "it", disable: bool = False, every_s: float = EVERY_S, stream: TextIO | None = None):
    """A tqdm bar when `stream` (default stderr) is a terminal, else a LineProgress; both count with update(n),
    take set_postfix(**values), iterate over `iterable` and close as context managers."""
    stream = sys.stderr if stream is None else stream
    if _is_terminal(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=disable, file=stream)
    return LineProgress(iterable, total=total, initial=initial, desc=desc, unit=unit, disable=disable,
                        every_s=every_s, stream=stream)


def quiet_library_bars() -> None:
    """Off-terminal, the Hugging Face libraries' bars (weights loading, shard writing, datasets' map) are off too:
    set before they are imported (they read these once)."""
    if not _is_terminal(sys.stderr):
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class LineProgress:
    """tqdm's counting interface, printing one whole line per `every_s` seconds (and a last one on close)."""

    def __init__(self, iterable: Iterable | None = None, *, total: int | None, initial: int, desc: str, unit: str,
                 disable: bool, every_s: float, stream: TextIO):
        self.iterable, self.total, self.n, self.desc, self.unit = iterable, total, initial, desc, unit
        self.disable, self.every_s, self.stream = disable, every_s, stream
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            self.total = len(iterable)
        self.postfix: dict[str, object] = {}
        self._start_n, self._start = initial, time.monotonic()
        self._last_line: float | None = None
        self._printed_n: int | None = None

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()  # as tqdm: a finished loop shows its last count

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self._last_line is None or now - self._last_line >= self.every_s:
            self._print(now)

    def set_postfix(self, **values) -> None:
        self.postfix = values

    def close(self) -> None:
        if self._printed_n != self.n and self.n != self._start_n:
            self._print(time.monotonic())

    def line(self, now: float) -> str:
        elapsed = max(now - self._start, 1e-9)
        rate = (self.n - self._start_n) / elapsed
        count = f"{self.n}/{self.total} {self.unit} ({100 * self.n / self.total:.0f}%)" if self.total else self.n
        parts = [f"{self.desc}: {count}" + ("" if self.total else f" {self.unit}")]
        parts.append(f"{rate:.2f} {self.unit}/s")
        if self.total and rate > 0:
            parts.append(f"eta {_clock((self.total - self.n) / rate)}")
        parts.extend(f"{key}={value}" for key, value in self.postfix.items())
        return ", ".join(parts)

    def _print(self, now: float) -> None:
        self._last_line, self._printed_n = now, self.n
        if not self.disable:
            print(self.line(now), file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"
