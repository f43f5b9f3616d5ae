"""Preemption: SIGTERM or SIGUSR1 (what SLURM sends before it kills a job) finish the current step, write a
checkpoint and exit with EXIT_PREEMPTED, which scripts/slurm_multinode.sbatch requeues on. Re-running the same
command resumes from that checkpoint."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

import torch

from train.distributed import all_reduce_mean, world

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again later"
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised after the checkpoint of a preempted run is written."""

    def __init__(self, step: int, checkpoint) -> None:
        super().__init__(f"preempted: checkpoint at step {step} in {checkpoint}; re-run the same command to resume")
        self.step, self.checkpoint = step, checkpoint


class Guard:
    def __init__(self) -> None:
        self.signal: int | None = None

    def requested(self, device="cpu") -> bool:
        """Whether any process was signalled (every process must agree, so it stops at the same step)."""
        flag = float(self.signal is not None)
        if world()[1] > 1:
            flag = all_reduce_mean(torch.tensor(flag, device=device)).item()
        return flag > 0


@contextlib.contextmanager
def preemption_guard() -> Iterator[Guard]:
    guard = Guard()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield guard
        return

    def handler(signum, frame):
        guard.signal = signum
        print(f"gte train: {signal.Signals(signum).name} received: finishing this step, then a checkpoint",
              flush=True)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield guard
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
