"""Peak resident memory you can attribute: per phase (the peak is reset when a phase starts) and per process.

Linux keeps a process's peak RSS (VmHWM); writing 5 to /proc/self/clear_refs resets it, so each phase of a
long-lived process reports its own peak, not the largest of every earlier phase. Elsewhere the lifetime peak of
getrusage is the fallback (then a phase's figure may include earlier phases).
"""

from __future__ import annotations

import resource
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


def children_peak_rss_mb() -> float:
    """Peak resident memory (MiB) of the largest finished child process (worker pools), over the lifetime."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)
