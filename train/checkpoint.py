"""Checkpoints: atomic, newest-K, exact resume.

A checkpoint is `<run.dir>/checkpoints/step-XXXXXXX/`: accelerator.save_state (model, optimizer, the registered
LR scheduler, python/numpy/torch RNG states of every process; a DeepSpeed engine checkpoint under DeepSpeed) plus
trainer_state.json (the step, which is the data position because the sampler is a pure function of the step, and
the metrics.jsonl byte offset). It is written to `.tmp-step-XXXXXXX` and renamed into place once complete, so a
crash mid-save leaves the previous checkpoint intact and a half-written folder is never picked up.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from train.distributed import barrier

_NAME = re.compile(r"^step-(\d{7,})$")
STATE_FILE = "trainer_state.json"


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (renamed into place, with trainer_state.json), oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def save_checkpoint(accelerator, run_dir: str | Path, step: int, state: dict, keep: int) -> Path:
    """Every process calls this (save_state is collective under DeepSpeed); returns the final folder."""
    root = checkpoint_dir(run_dir)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}"  # the same name on every rank: all of them write into it
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash mid-save
        tmp.mkdir(parents=True)
    barrier()
    accelerator.save_state(str(tmp))
    barrier()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **state}, indent=2))
        _fsync_dir(tmp)
        if final.exists():  # the same step saved before a crash and redone: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
        prune_checkpoints(run_dir, keep)
    barrier()
    return final


def load_checkpoint(accelerator, path: str | Path) -> dict:
    """Restore model, optimizer, scheduler and RNG states from `path`; returns trainer_state.json."""
    accelerator.load_state(str(path))
    return json.loads((Path(path) / STATE_FILE).read_text())


def prune_checkpoints(run_dir: str | Path, keep: int) -> None:
    """Delete all but the newest `keep` complete checkpoints, and stale temp folders of finished saves."""
    found = list_checkpoints(run_dir)
    for _, path in found[: max(0, len(found) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def clean_partial(run_dir: str | Path) -> None:
    """Remove temp folders left by a save that crashed (main process, before training starts)."""
    root = checkpoint_dir(run_dir)
    if root.is_dir():
        for path in root.glob(".tmp-step-*"):
            shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry so the rename survives a power loss, not only a process kill."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
