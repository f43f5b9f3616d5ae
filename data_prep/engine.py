"""Where prep and mining run: `engine=local` (this process and a process pool, the default) or `engine=ray`.

Both engines run the same steps on the same config and write the same bytes: Ray spreads the per-record and
per-chunk work over a cluster, and every result is keyed by its position (batch, chunk, record id) and put back in
that order before anything is decided or written. Ray is imported here, lazily, and only when engine=ray:

  gte prep configs/prep.yaml engine=ray ray.num_workers=2                  # a local Ray with this machine's CPUs
  gte prep configs/prep.yaml engine=ray ray.address=auto                   # an existing cluster (`ray start`)

A cluster's workers need this package importable (installed, or on PYTHONPATH) and the inputs readable.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from gte_model.core.config import bounded
from gte_model.core.errors import import_extra
from gte_model.core.memory import peak_rss_mb, private_peak_mb, track_private_peak

ENGINES = ("local", "ray")
_WORKER_PEAK_MB: dict[int, tuple[float, float]] = {}  # Ray worker pid -> (peak RSS, peak private), as reported
INSTALL_HINT = "pip install -e .[ray]"
ENGINE_HINT = f"local = this machine, the default; ray = a Ray cluster, {INSTALL_HINT}"


@dataclass
class RayConfig:
    """How engine=ray reaches its cluster and how wide it runs (none of it changes the output)."""

    address: str = ""  # an existing cluster ("auto", "ray://host:10001"); "" = start a local Ray
    num_cpus: int = bounded(0, ge=0, hint="0 = every core")  # CPUs of a local Ray started here
    # object store of a local Ray started here; 0 = Ray's default (30% of memory)
    object_store_mb: int = bounded(0, ge=0, hint="0 = Ray's default")
    num_workers: int = bounded(2, ge=1)  # tasks in flight and embedding actors at once


def import_ray():
    """The ray module, or a one-line MissingExtra (a UserError) with the install command."""
    return import_extra("ray", "engine=ray", "ray", "set engine=local", package="Ray")


@contextlib.contextmanager
def ray_session(cfg: RayConfig) -> Iterator:
    """Connect to `cfg.address`, or start a local Ray; a Ray already running in this process is used as it is.
    Only a Ray started here is shut down at the end."""
    ray = import_ray()
    _WORKER_PEAK_MB.clear()
    if ray.is_initialized():
        yield ray
        return
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if cfg.address:
        ray.init(address=cfg.address, **kwargs)
    else:
        ray.init(num_cpus=cfg.num_cpus or None, object_store_memory=(cfg.object_store_mb << 20) or None, **kwargs)
    try:
        yield ray
    finally:
        ray.shutdown()


def ray_ordered_map(fn: Callable, tasks: Iterable, window: int, *shared) -> Iterator:
    """fn(task, *shared) over tasks as Ray tasks, results in submission order, at most `window` in flight (bounded
    memory). `shared`: values every task reads (put in the object store once, not copied per task)."""
    ray = import_ray()
    remote = ray.remote(_measured)
    refs = [ray.put(value) for value in shared]
    pending: deque = deque()
    for task in tasks:
        pending.append(remote.remote(fn, task, *refs))
        if len(pending) >= window:
            yield _unmeasured(ray.get(pending.popleft()))
    while pending:
        yield _unmeasured(ray.get(pending.popleft()))


def _measured(fn: Callable, task, *shared) -> tuple:
    track_private_peak()  # sampling from the first task on
    return fn(task, *shared), worker_peaks()


def _unmeasured(answer: tuple):
    result, peaks = answer
    record_worker_peaks(peaks)
    return result


def worker_peaks() -> tuple[int, float, float]:
    """In a Ray task that called track_private_peak first: (pid, peak RSS, peak private memory) of this worker so
    far, for record_worker_peaks."""
    return os.getpid(), peak_rss_mb(), private_peak_mb()


def record_worker_peaks(peaks: tuple[int, float, float]) -> None:
    pid, rss, private = peaks
    old = _WORKER_PEAK_MB.get(pid, (0.0, 0.0))
    _WORKER_PEAK_MB[pid] = (max(rss, old[0]), max(private, old[1]))


def ray_worker_peak_mb() -> tuple[float, float]:
    """(peak RSS, peak private memory) in MiB of the largest Ray worker that reported in this session. RSS counts
    the object-store pages a worker read; the private figure is what the worker itself allocated."""
    return (max((rss for rss, _ in _WORKER_PEAK_MB.values()), default=0.0),
            max((private for _, private in _WORKER_PEAK_MB.values()), default=0.0))
