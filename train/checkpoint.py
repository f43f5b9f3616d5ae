"""Checkpoints: atomic, newest-K, checksummed, exact resume, and nothing unpickled.

  <run.dir>/checkpoints/step-XXXXXXX/
    model.safetensors          the model's weights
    optimizer.safetensors      AdamW state tensors (`state.<param index>.<name>`)
    optimizer.json             parameter groups (hyper-parameters) and non-tensor state
    rng-rank<R>.safetensors    torch generator states of process R (CPU, and CUDA devices)
    rng-rank<R>.json           python and numpy generator states of process R
    trainer_state.json         step (= the data position: the sampler is a pure function of it), metrics.jsonl
                               offset, process count, the config record, and the sha256 of every file above
The learning-rate schedule is a pure function of the step (train.trainer.lr_factor), so it needs no state.
Under DeepSpeed the engine's own checkpoint (its format, which pickles) goes in deepspeed/ instead of the
model/optimizer files.

A checkpoint is written to `.gte-tmp-step-XXXXXXX-<pid>@<host>` (the main process's pid: every rank writes into
it) and renamed into place once complete; its files get the umask's mode (safetensors alone would make them
0600). On resume the newest one
whose files match their checksums is used; a damaged one is named and skipped for the next older one. A checkpoint
whose only damage is this process's RNG state is used only with train.inexact_resume=true.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gte_model.core.atomic import apply_umask, fsync_dir, write_json
from gte_model.core.errors import UserError
from gte_model.core.lock import HOST
from train.distributed import barrier, broadcast_object, world

_NAME = re.compile(r"^step-(\d{7,})$")
STATE_FILE = "trainer_state.json"
_RNG = re.compile(r"^rng-rank\d+\.(safetensors|json)$")
# a save's temp folder; `.tmp-step-XXXXXXX` is what older versions named it
_TMP_NAME = re.compile(r"^\.(?:gte-tmp-step-\d{7,}-\d+@[^@/]+|tmp-step-\d{7,})$")


class CheckpointError(UserError):
    """No usable checkpoint although some exist: the message names them and the fix."""


@dataclass
class Checkpoint:
    path: Path
    state: dict  # trainer_state.json
    exact: bool  # this process's RNG state is restored


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Renamed-into-place checkpoints (with trainer_state.json), oldest first."""
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


# ---- saving ---------------------------------------------------------------------------------------------------
def save_checkpoint(accelerator, model, optimizer, run_dir: str | Path, step: int, state: dict, keep: int) -> Path:
    """Every process calls this (DeepSpeed's save is collective); returns the final folder."""
    root = checkpoint_dir(run_dir)
    final = root / f"step-{step:07d}"
    tmp = root / broadcast_object(f".gte-tmp-step-{step:07d}-{os.getpid()}@{HOST}")  # rank 0's: all write into it
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash mid-save
        tmp.mkdir(parents=True)
    barrier()
    try:
        if _deepspeed(accelerator):
            accelerator.save_state(str(tmp / "deepspeed"))
        elif accelerator.is_main_process:
            save_file(own_storage(accelerator.unwrap_model(model).state_dict()), str(tmp / "model.safetensors"))
            _save_optimizer(optimizer, tmp)
        _save_rng(tmp, accelerator.process_index)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _disk_error(exc, tmp) from exc
    barrier()
    if accelerator.is_main_process:
        files = {p.relative_to(tmp).as_posix(): _sha256(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        info = {"step": step, "world_size": accelerator.num_processes, **state, "sha256": files}
        write_json(tmp / STATE_FILE, info)
        apply_umask(tmp)
        fsync_dir(tmp)
        if final.exists():  # the same step saved before a crash and redone: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(root)
        prune_checkpoints(run_dir, keep, protect=state.get("best_step"))
    barrier()
    return final


def own_storage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict with every tensor that shares its storage with another one copied into its own: safetensors
    refuses shared storage, and loaders split fused weights into views of one tensor (transformers' GTE and NomicBERT
    folders: q/k/v and the GLU's up/gate projections are chunks of one fused matrix). Tied weights are written once
    per name; load_state_dict copies each back into the one tensor, so a resume is exact either way."""
    users: dict[int, int] = {}
    for tensor in state.values():
        key = tensor.untyped_storage().data_ptr()
        users[key] = users.get(key, 0) + 1
    return {name: (t.detach().clone() if users[t.untyped_storage().data_ptr()] > 1 else t.detach()).contiguous()
            for name, t in state.items()}


def _save_optimizer(optimizer, folder: Path) -> None:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    write_json(folder / "optimizer.json", {"param_groups": sd["param_groups"], "scalars": scalars})


def _save_rng(folder: Path, rank: int) -> None:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, str(folder / f"rng-rank{rank}.safetensors"))
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    write_json(folder / f"rng-rank{rank}.json", {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    })


# ---- loading --------------------------------------------------------------------------------------------------
def find_resumable(run_dir: str | Path, rank: int, world_size: int, inexact_ok: bool, log=print) -> Checkpoint | None:
    """The newest intact checkpoint (None when there is none at all); damaged ones are named and skipped."""
    found = list_checkpoints(run_dir)
    rng_only: list[Checkpoint] = []
    problems = []
    for _, path in reversed(found):
        state, damaged_rng, problem = _verify(path)
        if state is None:
            problems.append(f"{path}: {problem}")
            log(f"gte train: WARNING checkpoint {path} is damaged ({problem}); trying the next older one")
            continue
        rng_files = {f"rng-rank{rank}.safetensors", f"rng-rank{rank}.json"}
        changed_world = int(state.get("world_size", 1)) != world_size
        if changed_world:
            log(f"gte train: {path} was written by {state.get('world_size')} processes, this run has {world_size}: "
                "same data order, new RNG streams for dropout (an inexact resume)")
            return Checkpoint(path, state, exact=False)
        bad_rng = sorted(rng_files & set(damaged_rng))
        if not bad_rng:
            return Checkpoint(path, state, exact=True)
        problems.append(f"{path}: RNG state {', '.join(bad_rng)} missing or damaged")
        log(f"gte train: WARNING {path}: RNG state {', '.join(bad_rng)} is missing or damaged; trying an older one")
        rng_only.append(Checkpoint(path, state, exact=False))
    if rng_only and inexact_ok:
        log(f"gte train: train.inexact_resume=true: resuming from {rng_only[0].path} without its RNG state")
        return rng_only[0]
    if problems:
        fix = "set train.inexact_resume=true to resume without the RNG state, or " if rng_only else ""
        raise CheckpointError(f"{checkpoint_dir(run_dir)}: no intact checkpoint ({'; '.join(problems)}); {fix}"
                              "set run.overwrite=true to start the run afresh")
    return None


def _verify(path: Path) -> tuple[dict | None, list[str], str]:
    """Every file against its checksum, once: (trainer_state, the damaged RNG files, '') when all other files
    match, else (None, [], what is wrong)."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        sums = state["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return None, [], f"{STATE_FILE} unreadable: {exc}"
    damaged = [name for name, digest in sums.items()
               if not (path / name).is_file() or _sha256(path / name) != digest]
    bad = [f for f in damaged if not _RNG.match(f)]
    if bad or not sums:
        return None, [], f"{', '.join(bad) or 'no checksums'} do not match"
    return state, [f for f in damaged if _RNG.match(f)], ""


def load_checkpoint(accelerator, model, optimizer, ckpt: Checkpoint) -> dict:
    """Restore weights, optimizer state and (when ckpt.exact) this process's RNG states; returns trainer_state."""
    path = ckpt.path
    if _deepspeed(accelerator):
        accelerator.load_state(str(path / "deepspeed"))
    else:
        accelerator.unwrap_model(model).load_state_dict(load_file(str(path / "model.safetensors")))
        _load_optimizer(optimizer, path)
    if ckpt.exact:
        _load_rng(path, accelerator.process_index)
    return ckpt.state


def _load_optimizer(optimizer, folder: Path) -> None:
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict = {}
    for key, value in load_file(str(folder / "optimizer.safetensors")).items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    for key, value in meta["scalars"].items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{**g, "betas": tuple(g["betas"])} if "betas" in g else g for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _load_rng(folder: Path, rank: int) -> None:
    tensors = load_file(str(folder / f"rng-rank{rank}.safetensors"))
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("cuda.")), key=lambda k: int(k[5:]))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    states = json.loads((folder / f"rng-rank{rank}.json").read_text())
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


# ---- housekeeping ---------------------------------------------------------------------------------------------
def prune_checkpoints(run_dir: str | Path, keep: int, protect: int | None = None) -> None:
    """Delete all but the newest `keep` complete checkpoints (step-XXXXXXX folders, nothing else); the one of step
    `protect` (the best so far, train.best_metric) is kept besides them."""
    found = [(step, path) for step, path in list_checkpoints(run_dir) if step != protect]
    for _, path in found[: max(0, len(found) - keep)]:
        shutil.rmtree(path, ignore_errors=True)


def clean_partial(run_dir: str | Path) -> None:
    """Remove temp folders left by a save that crashed (the main process, holding the run dir's lock, before
    training starts: no other writer is alive)."""
    for path in our_entries(run_dir, temp_only=True):
        shutil.rmtree(path, ignore_errors=True)


def our_entries(run_dir: str | Path, temp_only: bool = False) -> list[Path]:
    """What checkpoints/ holds that a save wrote: step-XXXXXXX folders and save temp folders (never other files)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    return [p for p in root.iterdir() if p.is_dir() and not p.is_symlink()
            and (_TMP_NAME.match(p.name) or (not temp_only and _NAME.match(p.name)))]


def _disk_error(exc: Exception, where: Path) -> Exception:
    """Library writers (safetensors, DeepSpeed) report a full disk in their own words; name errno and path."""
    text = str(exc)
    if isinstance(exc, OSError) or not ("os error 28" in text or "No space" in text or "StorageFull" in text):
        if isinstance(exc, OSError) and exc.filename is None:
            return OSError(exc.errno, exc.strerror or text, str(where))
        return exc
    return OSError(errno.ENOSPC, "No space left on device (checkpoint not written)", str(where))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _deepspeed(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type == DistributedType.DEEPSPEED


class Checkpointing:
    """save / resume / restore for a trainer that has accelerator, model, optimizer, run_dir, cfg.train and is_main
    (train.trainer.Trainer, train.mlm.MLMTrainer)."""

    def save(self, done: int, state: dict) -> Path:
        t = self.cfg.train
        return save_checkpoint(self.accelerator, self.model, self.optimizer, self.run_dir, done, state,
                               t.keep_checkpoints)

    def resume(self) -> Checkpoint | None:
        """Restore the newest intact checkpoint (None: start at step 0)."""
        rank, size = world()
        log = print if self.is_main else (lambda *a, **k: None)
        ckpt = find_resumable(self.run_dir, rank, size, self.cfg.train.inexact_resume, log=log)
        if ckpt is not None:
            load_checkpoint(self.accelerator, self.model, self.optimizer, ckpt)
        return ckpt

    def restore(self, step: int) -> None:
        """Load the model of the checkpoint of `step` (the best one, train.best_metric) for the export."""
        found = dict(list_checkpoints(self.run_dir))
        if step not in found:
            raise AssertionError(f"the best step {step} has no checkpoint in {self.run_dir} ({sorted(found)})")
        load_checkpoint(self.accelerator, self.model, self.optimizer, Checkpoint(found[step], {}, exact=False))
