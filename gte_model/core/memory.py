"""Peak resident memory you can attribute: per phase (the peak is reset when a phase starts) and per process.

Linux keeps a process's peak RSS (VmHWM); writing 5 to /proc/self/clear_refs resets it, so each phase of a
long-lived process reports its own peak, not the largest of every earlier phase. Elsewhere the lifetime peak of
getrusage is the fallback (then a phase's figure may include earlier phases).
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")
_STATM = Path("/proc/self/statm")
_PAGE = resource.getpagesize()


def reset_peak() -> bool:
    """Start a new peak-RSS window for this process; False where the OS cannot."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB) since the last reset_peak (or since it started)."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def track_private_peak(interval_s: float = 0.01) -> None:
    """Start (once per process) a thread that samples this process's private resident memory (RssAnon) every
    `interval_s`. Its peak, unlike VmHWM, leaves out shared memory this process only mapped: a Ray worker's RSS
    counts every page of the object store it has read, which grows with the input and is not the worker's own (it
    is the store's, bounded by its size, and spills to disk)."""
    global _PRIVATE_THREAD
    if _PRIVATE_THREAD is not None or not _STATUS.is_file():
        return

    def sample() -> None:
        global _PRIVATE_PEAK_MB
        while not _PRIVATE_STOP.wait(interval_s):
            _PRIVATE_PEAK_MB = max(_PRIVATE_PEAK_MB, _private_mb())

    _PRIVATE_STOP.clear()
    _PRIVATE_THREAD = threading.Thread(target=sample, name="private-memory-peak", daemon=True)
    _PRIVATE_THREAD.start()


@contextlib.contextmanager
def private_peak_tracking():
    """track_private_peak for a with block, then the thread ends and the peak is forgotten: a process that goes on
    to other work (`gte run` trains after prep) must not keep waking a thread 100 times a second."""
    global _PRIVATE_THREAD, _PRIVATE_PEAK_MB
    owner = _PRIVATE_THREAD is None
    track_private_peak()
    try:
        yield
    finally:
        if owner and _PRIVATE_THREAD is not None:
            _PRIVATE_STOP.set()
            _PRIVATE_THREAD.join()
            _PRIVATE_THREAD, _PRIVATE_PEAK_MB = None, 0.0


def private_peak_mb() -> float:
    """Peak private resident memory (MiB) since track_private_peak started (0.0 where it cannot run)."""
    return round(max(_PRIVATE_PEAK_MB, _private_mb()), 1) if _PRIVATE_THREAD is not None else 0.0


def _private_mb() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


_PRIVATE_THREAD: threading.Thread | None = None
_PRIVATE_STOP = threading.Event()
_PRIVATE_PEAK_MB = 0.0


def children_peak_rss_mb() -> float:
    """Peak resident memory (MiB) of the largest finished child process (worker pools), over the lifetime."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def release_free_memory() -> bool:
    """Hand memory the allocator holds but no object uses back to the OS (glibc malloc_trim; False elsewhere).

    Training steps allocate tensors of a different size at every step (unpadded batches), and glibc keeps the freed
    blocks in fragmented heaps: without this a CPU run's resident memory creeps up by gigabytes over a few hundred
    steps (benchmarks/README.md, "Memory"). Called between steps and between pipeline phases."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False


class HeapTrimmer:
    """release_free_memory between training steps, but only when the heap has grown: a trim hands every free page
    back, and the next step faults all of its activation memory in again (0.14-0.26 s a step on a 2-core CPU with
    MiniLM at batch 32, benchmarks/README.md "Issue 28"), while glibc's heap grows only a few tens of MB a step.

    Call it after each step. The first call after a trim (or the first call ever) sets the steady level (the
    resident size with one step's freed activations held); a later call trims when the resident size is more than
    `slack` above that level, with slack = max(min_slack_mb, fraction x level). Resident memory therefore stays
    within slack of the steady level, as with a trim every step, at a trim every slack / growth steps."""

    def __init__(self, fraction: float = 0.125, min_slack_mb: float = 256.0, rss=None):
        self.fraction, self.min_slack_mb = fraction, min_slack_mb
        self.rss = rss or resident_mb
        self.level: float | None = None
        self.trims = 0

    def __call__(self) -> bool:
        """Trim when the heap has grown past the slack; True when it trimmed."""
        now = self.rss()
        if self.level is None:
            self.level = now
            return False
        if now <= self.level + max(self.min_slack_mb, self.fraction * self.level):
            return False
        release_free_memory()
        self.level, self.trims = None, self.trims + 1
        return True


def resident_mb() -> float:
    """This process's resident memory now (MiB; 0.0 where /proc is missing): one read of /proc/self/statm."""
    try:
        return int(_STATM.read_text().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def _malloc_trim():
    global _TRIM
    if _TRIM is False:
        try:
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = None
    return _TRIM


_TRIM = False  # resolved on first use: None where the C library has no malloc_trim
