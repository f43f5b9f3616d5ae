"""The one training loop for both stages: `gte train CONFIG [key=value ...]` (or `python -m train CONFIG ...`).

  CPU, seconds:  .venv/bin/python -m tests.train.tinydata runs/tiny-pairs && gte train configs/tiny.yaml
  one GPU:       gte train configs/pretrain.yaml run.dir=runs/stage1
  several GPUs:  accelerate launch --config_file configs/accelerate/ddp.yaml -m train configs/pretrain.yaml
  SLURM:         sbatch scripts/slurm_multinode.sbatch configs/pretrain.yaml

A stage is a config, not a code path: stage 2 differs in data (mined negatives), batch, lr and `model.init_from`.
Re-running the same command resumes from the newest intact checkpoint; a finished run (its gte_record.json) is a
no-op; a larger train.max_steps continues it; any other change of config or inputs is refused naming the keys
(run.overwrite=true starts afresh). SIGTERM/SIGUSR1 checkpoint and exit 75 (train.preempt).
A run dir is gte's (marked `gte train`, core.atomic.claim_dir): a folder gte did not write, or another command's
output, is refused untouched, and run.overwrite deletes only what training wrote there. The job's main process
holds the run dir's lock (core.lock) throughout: a second `gte train` on it refuses, naming the holder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from gte_model.core.atomic import check_replaceable, claim_dir
from gte_model.core.config import config_from_argv, config_to_dict, dump_config, save_config
from gte_model.core.errors import UserError
from gte_model.core.lock import hold
from gte_model.core.memory import HeapTrimmer, peak_rss_mb
from gte_model.core.pairs import digest_note, manifest_digest
from gte_model.core.progress import progress
from gte_model.core.record import (
    RECORD_FILE,
    Change,
    Record,
    StaleOutput,
    describe,
    flatten,
    read_record,
    write_record,
)
from gte_model.load import weights_digest
from train.best import best_step, stop_step
from train.checkpoint import (
    Checkpoint,
    checkpoint_dir,
    clean_partial,
    latest_checkpoint,
    list_checkpoints,
    our_entries,
)
from train.config import TrainConfig
from train.distributed import all_reduce_mean, broadcast_object, world
from train.length import resolve_length
from train.metrics import METRICS_FILE, PLOT_FILE, SOURCE_LOSS, TRACKER_DIR, open_logger, read_metrics
from train.preempt import Preempted, preemption_guard
from train.trainer import PROBE_FILE, StepStats, Trainer

TRAIN_FORMAT = 2  # bump when a run dir's layout or checkpoint format changes
# Keys that change speed, memory, logging or float summation order, never what is trained: a resume may change
# them. train.max_steps is compared on its own (a larger total continues the run). data.train_dir is identified by
# its content (the manifest digest among the inputs), not its path.
RESUME_SAFE = frozenset({
    "run.dir", "run.name", "run.overwrite", "log", "data.train_dir", "data.cache_dir", "data.pretokenize",
    "data.val_rows",
    "train.chunk_size", "train.chunk_tokens", "train.packed", "train.grad_checkpointing", "train.log_every",
    "train.checkpoint_every", "train.keep_checkpoints", "train.eval_every", "train.max_bad_steps",
    "train.inexact_resume", "train.prefetch", "train.compile", "loss.row_chunk",
    "teacher.trust_remote_code",  # a permission: the teacher's own code, when trusted, gives the same vectors
})
# the run's length: a change continues the run to the new total (the schedule is recomputed); train.epochs is
# recorded beside the train.max_steps it resolved to (train.length)
LENGTH_KEYS = frozenset({"train.max_steps", "train.epochs"})


class TrainingDiverged(UserError):
    """Non-finite loss or gradient norm for train.max_bad_steps steps in a row: stopped, nothing exported."""


def main(argv: list[str] | None = None) -> int:
    """`gte train CONFIG [key=value ...]`, e.g. `gte train configs/tiny.yaml train.max_steps=100 optim.lr=1e-4`."""
    cfg = config_from_argv(TrainConfig, argv, __doc__)
    if cfg is not None:
        fit(cfg)
    return 0


def fit(cfg: TrainConfig, trainer: type = Trainer) -> Path:
    """Train one stage to cfg.train.max_steps and export; returns the export folder. trainer: the class that builds
    the stage from cfg (Trainer's interface; train.mlm.MLMTrainer runs the MLM stage in this same loop)."""
    run_dir = Path(cfg.run.dir)
    # RANK is set by the launcher before any process group exists: the job's other processes write into the run
    # dir alongside its main process, so only the main one locks it (and marks it ours).
    main = int(os.environ.get("RANK", "0")) == 0
    with hold(run_dir, "run.dir") if main else contextlib.nullcontext():
        claim_dir(run_dir, "run.dir", "gte train", older=_older_run(run_dir), write=main)
        return _train(cfg, run_dir, main, trainer)


def _older_run(run_dir: Path) -> bool:
    """A run dir an older version wrote (before run dirs were marked): a training record or a checkpoint."""
    with contextlib.suppress(UserError, OSError, ValueError):
        done = read_record(run_dir)
        return (done is not None and done.kind == "train") or bool(list_checkpoints(run_dir))
    return False


def _train(cfg: TrainConfig, run_dir: Path, main: bool, trainer_class: type = Trainer) -> Path:
    if isinstance(cfg, TrainConfig):  # train.epochs -> train.max_steps (the MLM stage's config counts steps only)
        cfg = resolve_length(cfg, log=print if main else lambda line: None)
    record = run_record(cfg)
    if _finished(run_dir, record, cfg, main):
        return run_dir / "export"
    trainer = trainer_class(cfg)
    if trainer.is_main:
        print(dump_config(cfg), flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        clean_partial(run_dir)
    start, offset = _resume_point(trainer.resume(), record, cfg)
    if trainer.is_main:  # only once the config is known to apply: a refused resume leaves the old one
        save_config(cfg, run_dir / "config.yaml")
    t, cfg_dict = cfg.train, config_to_dict(cfg)
    logger = open_logger(trainer.is_main, run_dir, cfg_dict, offset, cfg.log.wandb, cfg.log.project, cfg.run.name,
                         cfg.log.report_to)
    # the dev curve so far: a resumed run's metrics.jsonl is cut back to its checkpoint, so its best-so-far is kept
    evals = broadcast_object(_eval_lines(run_dir) if trainer.is_main else None)
    last = t.max_steps  # or the step at which train.patience stops the run
    bar = progress(total=t.max_steps, initial=start, disable=not trainer.is_main, desc="train", unit="step")
    meter, bad, trim = _Meter(trainer), 0, HeapTrimmer()
    with preemption_guard() as guard, bar:
        for step in range(start, t.max_steps):
            stats = trainer.step(step)
            trim()  # every step's shapes differ: without trims glibc's heaps grow by GBs per run
            bad = 0 if stats.applied else bad + 1
            done = step + 1  # steps completed = the next step's data position
            if stats.applied:  # a skipped step is its own line, never also in a train line's mean
                meter.add(stats)
            if meter.steps and (done % t.log_every == 0 or done == t.max_steps):
                line = meter.flush()
                logger.log(line)
                bar.set_postfix(loss=f"{line['loss']:.4f}", pairs_s=f"{line['pairs_per_s']:.0f}")
            if bad:
                logger.log({"kind": "skipped", "step": done, "loss": stats.loss, "lr": stats.lr,
                            "grad_norm": stats.grad_norm})
                _check_divergence(trainer, stats, bad)
            if cfg.data.val_rows and t.eval_every and done % t.eval_every == 0 and done < t.max_steps:
                evals.append({"kind": "eval", "step": done, **trainer.validate()})
                logger.log(evals[-1])
                if t.best_metric and best_step(evals, t.best_metric) == done:  # kept while it stays the best
                    trainer.save(done, _state(record, logger, evals, t.best_metric))
                if t.patience and stop_step(evals, t.best_metric, t.patience) == done:
                    last = done
                    break
            if t.checkpoint_every and done % t.checkpoint_every == 0 and done < t.max_steps:
                trainer.save(done, _state(record, logger, evals, t.best_metric))
                logger.plot()
            if guard.requested(trainer.accelerator.device):
                raise Preempted(done, trainer.save(done, _state(record, logger, evals, t.best_metric)))
            bar.update(1)
    if cfg.data.val_rows and last == t.max_steps:
        evals.append({"kind": "eval", "step": t.max_steps, **trainer.validate()})
        logger.log(evals[-1])
    logger.plot()
    state = _state(record, logger, evals, t.best_metric)
    trainer.save(last, state)  # lets a larger train.max_steps continue a finished run
    if state["best_step"] not in (None, last):
        trainer.restore(state["best_step"])  # the export is the best step's model
    export, diff = trainer.export(cfg_dict)
    if trainer.is_main:
        record.stats = {"step": last, "best_step": state["best_step"], "export": str(export),
                        "export_max_abs_diff": diff}
        write_record(run_dir, record)  # last: the run counts as finished from here on
        print(f"gte train: exported {export} (reload max |diff| {diff:.2e})", flush=True)
    logger.close()
    trainer.accelerator.wait_for_everyone()
    return export


def run_record(cfg: TrainConfig) -> Record:
    """What a run's weights depend on: the config minus RESUME_SAFE keys, the pairs dir and the initial weights."""
    init = Path(cfg.model.init_from).expanduser()
    inputs = {
        "data.train_dir": manifest_digest(cfg.data.train_dir),
        "model.init_from": weights_digest(init) if init.is_dir() else cfg.model.init_from,
    }
    return Record("train", TRAIN_FORMAT, flatten(config_to_dict(cfg), skip=RESUME_SAFE), inputs,
                  defaults=flatten(config_to_dict(TrainConfig()), skip=RESUME_SAFE))


def _finished(run_dir: Path, record: Record, cfg: TrainConfig, main: bool) -> bool:
    """True when run_dir holds this exact finished run. run.overwrite clears our files first (the main process,
    before the others can start: they meet it when the process group forms); a finished run whose only change is a
    larger train.max_steps is reopened; any other change is refused."""
    if cfg.run.overwrite:
        if main:
            _clear_run(run_dir)
        return False
    done = read_record(run_dir)
    if done is None:
        return False
    changes = done.changes(record)
    if not changes and (run_dir / "export").is_dir():
        print(f"gte train: {run_dir} finished already ({run_dir / RECORD_FILE}); export: {run_dir / 'export'}")
        return True
    if _not_continuable(changes):
        raise StaleOutput(f"run.dir={run_dir}: finished with another config or other inputs: {_refusal(changes)}")
    (run_dir / RECORD_FILE).unlink(missing_ok=True)  # reopened (every rank gets here; one removes it)
    return False


def _resume_point(ckpt: Checkpoint | None, record: Record, cfg: TrainConfig) -> tuple[int, int]:
    """(first step, metrics.jsonl byte offset), after checking the checkpoint was made by this config."""
    if ckpt is None:
        return 0, 0
    step, run_dir = int(ckpt.state["step"]), cfg.run.dir
    saved = ckpt.state.get("record")
    changes = (Record(**saved).changes(record) if saved else
               [Change("format", "a checkpoint without a config record (an older format)", f"train v{TRAIN_FORMAT}",
                       "format")])
    other = _not_continuable(changes)
    if other:
        raise StaleOutput(f"run.dir={run_dir}: its checkpoint at step {step} was made with another config or other "
                          f"inputs: {_refusal(other)}")
    if cfg.train.max_steps < step:
        key = "train.epochs" if getattr(cfg.train, "epochs", 0) else "train.max_steps"  # MLM: no train.epochs
        raise StaleOutput(f"train.max_steps={cfg.train.max_steps} is below step {step} of the newest checkpoint in "
                          f"{ckpt.path.parent}; raise {key}, or set run.overwrite=true to train afresh")
    if world()[0] == 0:
        print(f"gte train: resuming from {ckpt.path} (step {step})", flush=True)
        if changes:
            print(f"gte train: {changes[0]}: the learning-rate schedule now runs to step {cfg.train.max_steps} "
                  "(warmup and decay recomputed for the new total)", flush=True)
    return step, int(ckpt.state.get("metrics_offset", 0))


def _not_continuable(changes: list[Change]) -> list[Change]:
    """The changes a run cannot continue across: all but a new length (LENGTH_KEYS; the schedule is recomputed)."""
    return [c for c in changes if c.key not in LENGTH_KEYS]


def _refusal(changes: list[Change]) -> str:
    """The changes, why a changed pairs dir reads as changed where its digests alone do not say it, and the fixes."""
    notes = [digest_note(c.old, c.new) for c in changes if c.key == "data.train_dir" and c.where == "input"]
    back = [f"point {c.key} back at what the run started from" for c in changes if c.where == "input"][:1]
    fixes = ", ".join([*back, "set run.overwrite=true to train afresh", "or choose another run.dir"])
    return "; ".join([describe(changes), *filter(None, notes), fixes])


def _state(record: Record, logger, evals: list[dict], best_metric: str) -> dict:
    """A checkpoint's trainer state: where metrics.jsonl ends, the run's record and the best step so far."""
    best = best_step(evals, best_metric) if best_metric else None
    return {"metrics_offset": logger.offset(), "record": record.__dict__, "best_step": best}


def _eval_lines(run_dir: Path) -> list[dict]:
    return [r for r in read_metrics(run_dir / METRICS_FILE) if r.get("kind") == "eval"]


def _check_divergence(trainer: Trainer, stats: StepStats, bad: int) -> None:
    from train.backend import is_deepspeed

    limit = 1 if is_deepspeed(trainer.accelerator) else trainer.cfg.train.max_bad_steps
    if trainer.is_main:
        print(f"gte train: WARNING step {stats.step + 1}: loss={stats.loss} grad_norm={stats.grad_norm}; update "
              f"skipped ({bad} in a row, train.max_bad_steps={limit})", flush=True)
    if bad >= limit:
        last = latest_checkpoint(trainer.run_dir)
        raise TrainingDiverged(
            f"train stopped at step {stats.step + 1}: non-finite loss ({stats.loss}) or gradient norm "
            f"({stats.grad_norm}) for {bad} steps in a row at lr={stats.lr:.3g}; nothing was exported; last good "
            f"checkpoint: {last or 'none'}; lower optim.lr (or raise loss.temperature) and re-run with "
            "run.overwrite=true"
        )


def _clear_run(run_dir: Path) -> None:
    """run.overwrite=true: remove what a previous run of ours wrote here (never other files, not even in
    checkpoints/)."""
    check_replaceable(run_dir / "export", "run.dir", "gte train", overwrite=True)
    shutil.rmtree(run_dir / "export", ignore_errors=True)
    for path in our_entries(run_dir):
        shutil.rmtree(path, ignore_errors=True)
    with contextlib.suppress(OSError):
        checkpoint_dir(run_dir).rmdir()  # only when nothing else is left in it
    for name in (RECORD_FILE, METRICS_FILE, PLOT_FILE, PROBE_FILE):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / TRACKER_DIR, ignore_errors=True)  # the trackers' copy of metrics.jsonl


class _Meter:
    """Accumulates steps between log lines; throughput counts non-padding tokens of every process."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer, self.steps = trainer, []

    def add(self, stats: StepStats) -> None:
        self.steps.append(stats)

    def flush(self) -> dict:
        """One train line for the applied steps since the last one, stamped with the last of them: skipped steps
        have lines of their own, so no step number is logged twice."""
        tr, last, n = self.trainer, self.steps[-1], len(self.steps)
        device, size = tr.accelerator.device, world()[1]
        loss = all_reduce_mean(torch.tensor(float(np.mean([s.loss for s in self.steps])), device=device)).item()
        by_source: dict[str, list[float]] = {}
        for s in self.steps:  # one source per step on every process: the same keys everywhere
            by_source.setdefault(s.source, []).append(s.loss)
        # loss/<source>: the mean loss of that source's steps in this line (a line of log_every steps mixes them)
        source_loss = {f"{SOURCE_LOSS}{source}": all_reduce_mean(torch.tensor(float(np.mean(v)), device=device)).item()
                       for source, v in sorted(by_source.items())}
        tokens = all_reduce_mean(torch.tensor(float(sum(s.tokens for s in self.steps)), device=device)).item()
        seconds = max(1e-9, sum(s.seconds for s in self.steps))
        self.steps = []
        return {
            "kind": "train",
            "step": last.step + 1,
            "loss": loss,
            "lr": last.lr,
            "grad_norm": last.grad_norm,
            "source": last.source,
            **source_loss,
            "pass": tr.sampler.pass_at(last.step)[1],
            "first_row": last.rows[0],
            "rows_crc": zlib.crc32(np.asarray(last.rows, dtype=np.int64).tobytes()),
            "pairs_per_s": n * tr.cfg.train.global_batch_size / seconds,
            "tokens_per_s": tokens * size / seconds,
            "peak_rss_mb": peak_rss_mb(),
            "time": time.time(),
        }


__all__ = ["LENGTH_KEYS", "RESUME_SAFE", "TrainingDiverged", "fit", "main", "run_record"]
