"""Where prep and mining run: `engine=local` (this process and a process pool, the default) or `engine=ray`.

Both engines run the same steps on the same config and write the same bytes: Ray spreads the per-record and
per-chunk work over a cluster, and every result is keyed by its position (batch, chunk, record id) and put back in
that order before anything is decided or written. Ray is imported lazily, and only when engine=ray:

  gte prep configs/prep.yaml engine=ray ray.num_workers=2                  # a local Ray with this machine's CPUs
  gte prep configs/prep.yaml engine=ray ray.address=auto                   # an existing cluster (`ray start`)

A cluster's workers need this package importable (installed, or on PYTHONPATH) and the inputs readable.

The seam: a command chooses its engine once (`open_engine`) and hands every distributable step to that object,
an `Engine`. Prep: `ordered_map` (step 1), `near_dedup`, `decontaminate`; mining: `encoder` (embedding),
`map_build` (index shards), `map_chunks` (search + selection of query chunks). `LocalEngine` runs them here (and
prep's step 1 in a process pool); `RayEngine` as Ray tasks and actors (data_prep.ray_dedup, data_prep.ray_mine) on
one Ray session, and it holds the memory peaks its workers report, for the manifest (`worker_peak_mb`).
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from data_prep import ray_dedup, ray_mine
from data_prep.dedup import DedupConfig, EvalIndex, decontaminate, near_dedup
from data_prep.knn import Shard
from data_prep.ray_support import import_ray, measured
from data_prep.signature_files import Signatures
from gte_model.core.config import bounded
from gte_model.core.errors import ignore_interrupts
from gte_model.core.memory import children_peak_rss_mb
from gte_model.embed_cache import Encoder

ENGINES = ("local", "ray")
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


class Engine(Protocol):
    """What prep and mining hand to an engine. Every map returns fn's results in task order, whatever ran first."""

    name: str  # "local" | "ray"

    def workers(self) -> contextlib.AbstractContextManager:
        """The block in which `ordered_map` may use worker processes (prep's step 1)."""

    def ordered_map(self, fn: Callable, tasks: Iterable, *shared) -> Iterator:
        """fn(task, *shared) per task, in task order, a bounded number in flight. `shared`: values every task reads."""

    def near_dedup(self, sigs: Signatures, source_ids: np.ndarray, by_positive: np.ndarray, keep: np.ndarray,
                   num_sources: int, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
        """dedup.near_dedup over the staged signatures -> (keep mask, counts [num_sources, 2] within/across)."""

    def decontaminate(self, index: EvalIndex, q_hash: np.ndarray, p_hash: np.ndarray, sigs: Signatures,
                      source_ids: np.ndarray, train: np.ndarray, num_sources: int) -> tuple[np.ndarray, np.ndarray]:
        """dedup.decontaminate over the staged signatures -> (train mask, drops per source)."""

    def map_build(self, build: Callable, tasks: Iterable[np.ndarray]) -> Iterator:
        """build(docs) -> a faiss index, per corpus shard (knn.build_shards' map_fn)."""

    def map_chunks(self, fn: Callable, tasks: Iterable, shards: list[Shard], *shared) -> Iterator:
        """fn(task, shards, *shared) per query chunk (mine_search.mine_embedded)."""

    def encoder(self, model) -> Encoder | None:
        """embed_cache.embed_cached's encoder for `model`; None = in this process."""

    def worker_peak_mb(self) -> tuple[float, float]:
        """(peak RSS, peak private memory) in MiB of the largest worker so far; private 0.0 where not measured."""


class LocalEngine:
    """engine=local: everything in this process, except prep's step 1, which runs in a pool of `num_proc` processes
    inside `workers()` (num_proc > 1)."""

    name = "local"

    def __init__(self, num_proc: int = 1) -> None:
        self.num_proc = num_proc
        self._pool = None
        self._pool_wanted = False
        self._signatures: tuple = (None, None)  # (Signatures, its arrays): near dedup and decontamination read once

    @contextlib.contextmanager
    def workers(self) -> Iterator[None]:
        """The pool starts at the first map inside the block (none when nothing is mapped: a re-run that finds every
        source staged) and ends with it, so its memory is freed for the steps after and counted as a finished
        child's (children_peak_rss_mb)."""
        self._pool_wanted = self.num_proc > 1
        try:
            yield
        finally:
            self._pool_wanted = False
            if self._pool is not None:
                self._pool.terminate()
                self._pool = None

    def ordered_map(self, fn: Callable, tasks: Iterable, *shared) -> Iterator:
        if self._pool is None and self._pool_wanted:
            # Ctrl-C goes to the parent alone: a worker killed mid-task prints a traceback and hangs the pool
            self._pool = mp.get_context("spawn").Pool(self.num_proc, initializer=ignore_interrupts)
        if self._pool is None:
            yield from (fn(task, *shared) for task in tasks)
            return
        pending: deque = deque()
        for task in tasks:
            pending.append(self._pool.apply_async(fn, (task, *shared)))
            if len(pending) >= 2 * self.num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def near_dedup(self, sigs: Signatures, source_ids: np.ndarray, by_positive: np.ndarray, keep: np.ndarray,
                   num_sources: int, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
        return near_dedup(*self._arrays(sigs), source_ids, by_positive, keep, num_sources, cfg)

    def decontaminate(self, index: EvalIndex, q_hash: np.ndarray, p_hash: np.ndarray, sigs: Signatures,
                      source_ids: np.ndarray, train: np.ndarray, num_sources: int) -> tuple[np.ndarray, np.ndarray]:
        return decontaminate(index, q_hash, p_hash, *self._arrays(sigs), source_ids, train, num_sources)

    def _arrays(self, sigs: Signatures) -> tuple[np.ndarray, np.ndarray]:
        """Every signature in memory (q_sig, p_sig [N, num_perm]), read from disk once per Signatures."""
        if self._signatures[0] is not sigs:
            self._signatures = (sigs, sigs.all())
        return self._signatures[1]

    def map_build(self, build: Callable, tasks: Iterable[np.ndarray]) -> Iterator:
        return map(build, tasks)

    def map_chunks(self, fn: Callable, tasks: Iterable, shards: list[Shard], *shared) -> Iterator:
        return (fn(task, shards, *shared) for task in tasks)

    def encoder(self, model) -> Encoder | None:
        return None

    def worker_peak_mb(self) -> tuple[float, float]:
        return children_peak_rss_mb(), 0.0  # a pool worker's private memory is not measured


class RayEngine:
    """engine=ray on one Ray session: tasks (2 x num_workers in flight; num_workers for index shards) and
    `num_workers` embedding actors. Every task reports its worker's memory peaks with its result
    (ray_support.measured); the largest per worker are kept for the manifest, so each run counts its own."""

    name = "ray"

    def __init__(self, ray, num_workers: int) -> None:
        self.ray = ray
        self.num_workers = num_workers
        self._peaks: dict[int, tuple[float, float]] = {}  # worker pid -> (peak RSS, peak private), as reported
        self._encoders: ray_mine.RayEncoder | None = None  # started at the first embedding call

    def workers(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # Ray's workers belong to the session

    def ordered_map(self, fn: Callable, tasks: Iterable, *shared) -> Iterator:
        return self.windowed_map(fn, tasks, 2 * self.num_workers, *shared)

    def windowed_map(self, fn: Callable, tasks: Iterable, window: int, *shared) -> Iterator:
        """fn(task, *shared) as Ray tasks, results in submission order, at most `window` in flight (bounded
        memory)."""
        remote = self.ray.remote(measured)
        refs = [self.ray.put(value) for value in shared]
        pending: deque = deque()
        for task in tasks:
            pending.append(remote.remote(fn, task, *refs))
            if len(pending) >= window:
                yield self._result(pending.popleft())
        while pending:
            yield self._result(pending.popleft())

    def _result(self, ref):
        result, peaks = self.ray.get(ref)
        self.record_peaks(peaks)
        return result

    def record_peaks(self, peaks: tuple[int, float, float]) -> None:
        """A worker's report (ray_support.worker_peaks): its largest figures so far are kept."""
        pid, rss, private = peaks
        old = self._peaks.get(pid, (0.0, 0.0))
        self._peaks[pid] = (max(rss, old[0]), max(private, old[1]))

    def worker_peak_mb(self) -> tuple[float, float]:
        """RSS counts the object-store pages a worker read; the private figure is what the worker allocated."""
        rss = max((rss for rss, _ in self._peaks.values()), default=0.0)
        return max(children_peak_rss_mb(), rss), max((p for _, p in self._peaks.values()), default=0.0)

    def near_dedup(self, sigs: Signatures, source_ids: np.ndarray, by_positive: np.ndarray, keep: np.ndarray,
                   num_sources: int, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
        return ray_dedup.near_dedup_ray(self, sigs, source_ids, by_positive, keep, num_sources, cfg)

    def decontaminate(self, index: EvalIndex, q_hash: np.ndarray, p_hash: np.ndarray, sigs: Signatures,
                      source_ids: np.ndarray, train: np.ndarray, num_sources: int) -> tuple[np.ndarray, np.ndarray]:
        return ray_dedup.decontaminate_ray(self, index, q_hash, p_hash, sigs, source_ids, train, num_sources)

    def map_build(self, build: Callable, tasks: Iterable[np.ndarray]) -> Iterator:
        answers = self.windowed_map(functools.partial(ray_mine.serialized, build), tasks, self.num_workers)
        return map(ray_mine.deserialized, answers)

    def map_chunks(self, fn: Callable, tasks: Iterable, shards: list[Shard], *shared) -> Iterator:
        return self.ordered_map(functools.partial(ray_mine.with_shards, fn), tasks, ray_mine.serialize(shards),
                                *shared)

    def encoder(self, model) -> Encoder:
        if self._encoders is None:
            self._encoders = ray_mine.RayEncoder(self.num_workers)
        return self._encoders.of(model)

    def close(self) -> None:
        if self._encoders is not None:
            self._encoders.close()
            self._encoders = None


@contextlib.contextmanager
def open_engine(name: str, ray: RayConfig, num_proc: int = 1) -> Iterator[Engine]:
    """The engine a command runs on, chosen once for its whole run: engine=local a LocalEngine with `num_proc`
    processes for prep's step 1; engine=ray a RayEngine on `ray.address`, or on a Ray started here (shut down at
    the end). A Ray already running in this process is used as it is. The embedding actors end with the engine."""
    if name != "ray":
        yield LocalEngine(num_proc)
        return
    ray_module = import_ray()
    with contextlib.ExitStack() as stack:
        if not ray_module.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if ray.address:
                ray_module.init(address=ray.address, **kwargs)
            else:
                ray_module.init(num_cpus=ray.num_cpus or None,
                                object_store_memory=(ray.object_store_mb << 20) or None, **kwargs)
            stack.callback(ray_module.shutdown)
        engine = RayEngine(ray_module, ray.num_workers)
        stack.callback(engine.close)
        yield engine
