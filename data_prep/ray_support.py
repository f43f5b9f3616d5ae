"""What the Ray engine (data_prep.engine.RayEngine) and its steps (data_prep.ray_dedup, data_prep.ray_mine) share:
the lazy import of Ray, and the memory report a Ray task sends back with its result."""

from __future__ import annotations

import os
from collections.abc import Callable

from gte_model.core.errors import import_extra
from gte_model.core.memory import peak_rss_mb, private_peak_mb, track_private_peak


def import_ray():
    """The ray module, or a one-line MissingExtra (a UserError) with the install command."""
    return import_extra("ray", "engine=ray", "ray", "set engine=local", package="Ray")


def worker_peaks() -> tuple[int, float, float]:
    """In a Ray task that called track_private_peak first: (pid, peak RSS, peak private memory) of this worker so
    far, for RayEngine.record_peaks."""
    return os.getpid(), peak_rss_mb(), private_peak_mb()


def measured(fn: Callable, task, *shared) -> tuple:
    """In a Ray task: fn(task, *shared) and this worker's peaks (RayEngine.ordered_map records them)."""
    track_private_peak()  # sampling from the first task on
    return fn(task, *shared), worker_peaks()
