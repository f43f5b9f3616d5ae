"""A read-ahead thread: the host side of the next step (rows, token ids, chunks) is made while this one computes."""

from __future__ import annotations

import concurrent.futures
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class ReadAhead(Generic[T]):
    """prepare(step + 1) in one background thread while step `step` computes. prepare must be a pure function of the
    step that shares nothing with the main thread while it runs (the trainer gives it a sampler of its own, and waits
    for it before the main thread tokenises or reads rows itself), so the batches and their order are unchanged."""

    def __init__(self, prepare: Callable[[int], T], enabled: bool) -> None:
        self.prepare, self.enabled = prepare, enabled
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: tuple[int, concurrent.futures.Future] | None = None

    def get(self, step: int) -> T:
        """Step `step`'s batch: the read-ahead's when it prepared this step, else prepared now."""
        if self._pending is not None:
            ahead, future = self._pending
            self._pending = None
            if ahead == step:
                return future.result()  # re-raises what the thread raised
            with contextlib.suppress(Exception):  # another step (a resume, a retry): let it finish, drop it
                future.result()
        return self.prepare(step)

    def start(self, step: int) -> None:
        if self.enabled:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gte-read-ahead")
            self._pending = (step, self._pool.submit(self.prepare, step))

    def wait(self) -> None:
        """Block until a running read-ahead is done (its result is kept for its step)."""
        if self._pending is not None:
            concurrent.futures.wait([self._pending[1]])

    def close(self) -> None:
        """Drop any read-ahead and end the thread (a later start() opens a new one)."""
        self.wait()
        self._pending = None
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


__all__ = ["ReadAhead"]
