"""The whole pipeline in one command: prep -> stage 1 -> mine -> stage 2 -> export -> evaluate -> report.

  gte run configs/quickstart.yaml                      # the README's main command (about 30 min on a 2-core CPU)
  gte run configs/quickstart.yaml run.dir=runs/qs2 stage1.train.max_steps=10   # any key of any phase

Each phase records completion in <run.dir>/phases/<phase>.json and is skipped when re-run, and the phases that are
long (training, mining) resume inside themselves, so an interrupted pipeline finishes where it stopped. Layout:
  <run.dir>/data/pairs  prep output        <run.dir>/stage1  stage-1 run (its export feeds mining and stage 2)
  <run.dir>/data/mined  triples            <run.dir>/stage2  stage-2 run
  <run.dir>/export      the final model    <run.dir>/eval/{base,stage1,stage2}  results
  <run.dir>/report.md, report.png          loss curves of both stages, metric bars, wall time of each phase
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.mine import MineConfig, mine
from data_prep.prep import PrepConfig, prep
from gte_model.configio import ConfigError, dump_config, load_config, save_config
from train.config import TrainConfig
from train.evaluate import evaluate, manifest_beir_dirs
from train.loop import fit
from train.report import write_report


@dataclass
class PipelineRunConfig:
    dir: str = "runs/quickstart"  # everything the pipeline writes goes under this folder


@dataclass
class PipelineEvalConfig:
    tasks: list[str] = field(default_factory=lambda: ["sts-b", "beir"])  # sts-b, beir, mteb:<TaskName>
    bf16: bool = True  # bf16 autocast for encoding (same ranking as fp32 to ~1e-3 on this CPU)
    batch_size: int = 64  # texts per encode batch
    # held-out BEIR sets to report (source names); [] = every source's. Supervised paraphrase sources (stsb) make a
    # trivial retrieval set (a few dozen near-identical pairs), so the quickstart leaves them out.
    beir_sources: list[str] = field(default_factory=list)


@dataclass
class PipelineConfig:
    run: PipelineRunConfig = field(default_factory=PipelineRunConfig)
    prep: PrepConfig = field(default_factory=PrepConfig)  # prep.out_dir is set to <run.dir>/data/pairs
    stage1: TrainConfig = field(default_factory=TrainConfig)  # run.dir, data.train_dir are set by the pipeline
    mine: MineConfig = field(default_factory=MineConfig)  # input_dir, out_dir and model are set by the pipeline
    stage2: TrainConfig = field(default_factory=TrainConfig)  # init_from = the stage-1 export, data = mined
    eval: PipelineEvalConfig = field(default_factory=PipelineEvalConfig)

    def resolve(self) -> PipelineConfig:
        """Wire the phases together under run.dir: one place decides every path."""
        root = Path(self.run.dir)
        self.prep.out_dir = str(root / "data" / "pairs")
        self.stage1.run.dir = str(root / "stage1")
        self.stage1.data.train_dir = self.prep.out_dir
        self.mine.input_dir = self.prep.out_dir
        self.mine.out_dir = str(root / "data" / "mined")
        self.mine.model = str(root / "stage1" / "export")
        self.stage2.run.dir = str(root / "stage2")
        self.stage2.data.train_dir = self.mine.out_dir
        self.stage2.model.init_from = self.mine.model
        return self

    def validate(self) -> list[str]:
        self.resolve()
        errors = [f"prep.{e}" for e in self.prep.validate()]
        # World size and ZeRO stage come from the launcher, as in `gte train`.
        errors += [f"stage1: {e}" for e in self.stage1.validate()]
        errors += [f"stage2: {e}" for e in self.stage2.validate()]
        if self.stage2.data.num_negatives > self.mine.negatives.k:
            errors.append(
                f"stage2.data.num_negatives={self.stage2.data.num_negatives} exceeds mine.negatives.k="
                f"{self.mine.negatives.k}: raise mine.negatives.k or lower stage2.data.num_negatives"
            )
        return errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gte run", description="prep -> stage 1 -> mine -> stage 2 -> eval")
    parser.add_argument("config", help="YAML config, e.g. configs/quickstart.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. run.dir=runs/x stage1.optim.lr=1e-5")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = load_config(PipelineConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"gte run: {exc}", file=sys.stderr)
        return 2
    run_pipeline(cfg)
    return 0


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run every phase not yet recorded as done; returns the report path."""
    cfg.resolve()
    root = Path(cfg.run.dir)
    root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, root / "config.yaml")
    print(dump_config(cfg), flush=True)
    base = cfg.stage1.model.init_from
    stage1_export, stage2_export = Path(cfg.stage1.run.dir) / "export", Path(cfg.stage2.run.dir) / "export"
    final = root / "export"
    eval_kw = {"tasks": cfg.eval.tasks, "bf16": cfg.eval.bf16, "batch_size": cfg.eval.batch_size,
               "beir_dirs": lambda: _beir_sets(cfg)}
    phases: list[tuple[str, Callable[[], object]]] = [
        ("prep", lambda: prep(cfg.prep)),
        ("stage1", lambda: fit(cfg.stage1)),
        ("mine", lambda: mine(cfg.mine)),
        ("stage2", lambda: fit(cfg.stage2)),
        ("export", lambda: _copy_export(stage2_export, final)),
        ("eval_base", lambda: _evaluate(base, root / "eval" / "base", update_card=False, **eval_kw)),
        ("eval_stage1", lambda: _evaluate(stage1_export, root / "eval" / "stage1", **eval_kw)),
        ("eval_stage2", lambda: _evaluate(final, root / "eval" / "stage2", **eval_kw)),
    ]
    for name, job in phases:
        _run_phase(root, name, job)
    return write_report(root, base_name=base)


def _beir_sets(cfg: PipelineConfig) -> dict[str, Path]:
    """The prep output's held-out BEIR sets, limited to eval.beir_sources when set."""
    sets = manifest_beir_dirs(cfg.prep.out_dir)
    wanted = cfg.eval.beir_sources or list(sets)
    missing = sorted(set(wanted) - set(sets))
    if missing:
        raise ConfigError(
            f"eval.beir_sources={missing} have no held-out BEIR set in {cfg.prep.out_dir}; it has {sorted(sets)}"
        )
    return {name: sets[name] for name in wanted}


def _evaluate(model, out_dir: Path, beir_dirs: Callable[[], dict], **kwargs) -> dict:
    # The BEIR sets exist only once prep has run, so they are looked up when the phase starts.
    return evaluate(model, beir_dirs=beir_dirs(), out_dir=out_dir, **kwargs)


def phase_done(root: Path, name: str) -> dict | None:
    marker = root / "phases" / f"{name}.json"
    return json.loads(marker.read_text()) if marker.is_file() else None


def _run_phase(root: Path, name: str, job: Callable[[], object]) -> None:
    if phase_done(root, name) is not None:
        print(f"[run] {name}: done before, skipped", flush=True)
        return
    print(f"[run] {name}: starting", flush=True)
    start = time.perf_counter()
    job()
    seconds = time.perf_counter() - start
    marker = root / "phases" / f"{name}.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps({"phase": name, "seconds": round(seconds, 1), "finished": time.time()}) + "\n")
    tmp.replace(marker)  # the marker appears only once the phase really finished
    print(f"[run] {name}: finished in {seconds:.0f}s", flush=True)


def _copy_export(src: Path, dst: Path) -> None:
    tmp = dst.parent / f".{dst.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)
