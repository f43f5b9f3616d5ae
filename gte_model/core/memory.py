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


def _malloc_trim():
    global _TRIM
    if _TRIM is False:
        try:
            _TRIM = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _TRIM = None
    return _TRIM


_TRIM = False  # resolved on first use: None where the C library has no malloc_trim
