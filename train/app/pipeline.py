"""The whole pipeline in one command: prep -> stage 1 -> mine -> stage 2 -> [merge] -> export [rotated] -> evaluate ->
report.

  gte run configs/quickstart.yaml                      # the README's main command (wall time: benchmarks/README.md)
  gte run configs/quickstart.yaml run.dir=runs/qs2 stage1.train.max_steps=10   # any key of any phase

Each phase records completion in <run.dir>/phases/<phase>.json (its config section, the upstream phases' digest,
seconds and peak memory). Re-running skips a phase with the same record; a changed phase is rebuilt with every
phase that depends on it (a training phase whose only change is its length, train.max_steps or train.epochs,
continues; an evaluation depends only on the model it evaluates and the held-out sets). Long phases (training,
mining) resume inside themselves, so an interrupted pipeline finishes where it stopped. Layout:
  <run.dir>/data/pairs  prep output        <run.dir>/stage1  stage-1 run (its export feeds mining and stage 2)
  <run.dir>/data/mined  triples            <run.dir>/stage2  stage-2 run
  <run.dir>/stage0      with run.stage0=true: the MLM run (train.mlm) whose export stage 1 starts from
  <run.dir>/merged      merge output       (when merge.models is set: e.g. [base, stage2], WiSE-FT)
  <run.dir>/teacher_ft  with run.tune_teacher=true: the teacher fine-tuned on the mined rows
  <run.dir>/teacher_cache  its vectors of every mined text (phase teacher_scores), which stage 2 distils from
  <run.dir>/export      the final model (turned to its principal axes when rotate.rows > 0: gte_model.rotate)
  <run.dir>/eval/{base,teacher,teacher_ft,stage1,stage2,merged}  results (prep's held-out sets, plus eval.extra's:
                                                      your own test sets, BEIR folders or `gte prep` outputs)
A teacher (mine.teacher.model) vets the mined negatives; stage 2 distils from it (loss.distill_weight) through the
same vector cache: stage2.teacher follows mine.teacher unless stage2.teacher.model names another model. With
stage2.teacher.kind=cross it is a cross-encoder whose scores of every mined pair fill <run.dir>/teacher_cache
first (phase teacher_scores).
  <run.dir>/report.md, report.png          loss curves of both stages, metric bars, wall time of each phase
run.dir is marked as gte run's (a folder gte did not write is refused untouched) and locked while the pipeline runs
(gte_model.core.lock): a second `gte run` on it refuses, naming the holder. Re-running a phase replaces that
phase's own earlier output (and nothing another command built).
"""

from __future__ import annotations

import copy
import gc
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path

from data_prep.mine import MineConfig, embed_cache_dir, mine
from data_prep.prep import PrepConfig, prep
from gte_model.core.atomic import build_dir, claim_dir
from gte_model.core.config import ConfigError, config_from_argv, dump_config, save_config
from gte_model.core.lock import hold
from gte_model.core.memory import children_peak_rss_mb, peak_rss_mb, release_free_memory, reset_peak
from gte_model.core.pairs import DEV_SPLIT, MANIFEST_FILE, beir_dirs
from gte_model.core.record import Record, defaults_of, describe, digest_json, flatten, read_record, write_record
from gte_model.load import UntrustedCodeError
from gte_model.merge import MergeConfig, run_merge
from gte_model.presets import PRESETS
from gte_model.rotate_cli import run_rotate
from train.app.report import PHASES_DIR, write_report
from train.config import TrainConfig
from train.eval.dims import PRECISION_NAMES
from train.eval.evaluate import STS_TASK, evaluate
from train.eval.long_text import LONG_TEXT_TASK, evaluate_long_text_dims
from train.eval.sts import evaluate_sts
from train.loop import LENGTH_KEYS, fit
from train.mlm import MLMTrainer
from train.mlm_config import MLMConfig
from train.teacher import fill_teacher_cache

PHASE_FORMAT = 1
_REBUILD_KEYS = frozenset({"overwrite", "run.overwrite"})  # set by the pipeline itself when a phase must rebuild
# permissions, not settings: a model's own code runs only when trusted and then gives the same output, so a phase
# record leaves them out (and records written before they existed still match)
_TRUST_KEYS = frozenset({"trust_remote_code", "teacher.trust_remote_code", "filter.trust_remote_code"})
# the phases that load this run's own models (stage 1's export; with run.stage0 stage 1 starts from stage 0's) run
# their code when stage1.model.trust_remote_code says so: resolve() sets these from it
_RUN_MODEL_TRUST = ("stage0.model.trust_remote_code", "mine.trust_remote_code", "stage2.model.trust_remote_code",
                    "merge.trust_remote_code")
# the section a phase's own code runs on: its errors name keys within it (model.trust_remote_code=true)
_PHASE_SECTIONS = {"stage0": "stage0", "stage1": "stage1", "mine": "mine", "teacher_ft": "teacher_ft",
                   "teacher_scores": "stage2", "stage2": "stage2", "merge": "merge"}


@dataclass
class PipelineRunConfig:
    dir: str = "runs/quickstart"  # everything the pipeline writes goes under this folder
    # run stage 0 first: masked-LM pretraining (section stage0) on the prep output's texts; stage 1 then starts from
    # its export (stage1.model.init_from is set to it) and so does the `base` evaluation
    stage0: bool = False
    # distillation from a fine-tuned teacher (configs/distill.yaml): after mining, fine-tune the teacher (section
    # teacher_ft, from teacher_ft.model.init_from) on the mined rows, embed every text of those rows with it into
    # <run.dir>/teacher_cache (phase teacher_scores), and let stage 2 distil from it (stage2.loss.distill_weight)
    # reading only that cache
    tune_teacher: bool = False


@dataclass
class PipelineEvalConfig:
    # sts-b, long-text (the general checks), beir, mteb:<TaskName>; the general checks named here also join a fit of
    # the merge weights (merge.fit.data), each on its dev split
    tasks: list[str] = field(default_factory=lambda: ["sts-b", "long-text", "beir"])
    bf16: bool = True  # bf16 autocast for encoding (same ranking as fp32 to ~1e-3 on this CPU)
    batch_size: int = 64  # texts per encode batch
    # held-out BEIR sets to report (source names); [] = every source's. Supervised paraphrase sources (stsb) make a
    # trivial retrieval set (a few dozen near-identical pairs), so the quickstart leaves them out.
    beir_sources: list[str] = field(default_factory=list)
    # a reference model evaluated beside base / stage 1 / stage 2 (e.g. all-mpnet-base-v2); "" = mine.teacher.model;
    # its own code (config.json auto_map) runs with mine.teacher.trust_remote_code=true, as the teacher's
    teacher: str = ""
    # also score every model with its embeddings cut to these dims (Matryoshka); [] = stage2.loss.matryoshka_dims
    dims: list[int] = field(default_factory=list)
    # the final model's retrieval also scored with its embeddings held as int8 / binary (train/eval/quantized.py),
    # at the full dim and each of dims: the report's quantized table; [] = float embeddings only
    quantize: list[str] = field(default_factory=list)
    # more held-out sets scored for every model beside prep's own: BEIR folders (corpus.jsonl, queries.jsonl,
    # qrels/test.tsv), named by folder, or pairs dirs (every BEIR set of one, by source: a test file made into one
    # with `gte prep ... split.heldout_fraction=1.0`)
    extra: list[str] = field(default_factory=list)


@dataclass
class PipelineRotateConfig:
    # train rows per source of the prep output whose queries and positives fit the final model's rotation (gte
    # rotate: the same full-dim similarities, better truncated ones); 0 = the final model is not rotated
    rows: int = 0


@dataclass
class PipelineConfig:
    run: PipelineRunConfig = field(default_factory=PipelineRunConfig)
    prep: PrepConfig = field(default_factory=PrepConfig)  # prep.out_dir is set to <run.dir>/data/pairs
    # `gte mlm`'s config, used with run.stage0=true; run.dir and data.train_dir are set by the pipeline
    stage0: MLMConfig = field(default_factory=MLMConfig)
    stage1: TrainConfig = field(default_factory=TrainConfig)  # run.dir, data.train_dir are set by the pipeline
    mine: MineConfig = field(default_factory=MineConfig)  # input_dir, out_dir and model are set by the pipeline
    # with run.tune_teacher=true: the teacher's fine-tuning, a `gte train` config; run.dir and data.train_dir (the
    # mined rows) are set by the pipeline
    teacher_ft: TrainConfig = field(default_factory=TrainConfig)
    stage2: TrainConfig = field(default_factory=TrainConfig)  # init_from = the stage-1 export, data = mined
    # models: pipeline names (base, stage1, stage2) or folders; [] = no merge (the final model is stage 2's).
    # fit.data: pairs dirs, or `pairs` / `mined` for the pipeline's own. out_dir is set by the pipeline.
    merge: MergeConfig = field(default_factory=MergeConfig)
    rotate: PipelineRotateConfig = field(default_factory=PipelineRotateConfig)
    eval: PipelineEvalConfig = field(default_factory=PipelineEvalConfig)

    def resolve(self) -> PipelineConfig:
        """Wire the phases together under run.dir: one place decides every path."""
        root = Path(self.run.dir)
        self.prep.out_dir = str(root / "data" / "pairs")
        self.stage0.run.dir = str(root / "stage0")
        self.stage0.data.train_dir = self.prep.out_dir
        if self.run.stage0:
            self.stage1.model.init_from = str(root / "stage0" / "export")
        self.stage1.run.dir = str(root / "stage1")
        self.stage1.data.train_dir = self.prep.out_dir
        self.mine.input_dir = self.prep.out_dir
        self.mine.out_dir = str(root / "data" / "mined")
        self.mine.model = str(root / "stage1" / "export")
        self.stage2.run.dir = str(root / "stage2")
        self.stage2.data.train_dir = self.mine.out_dir
        self.stage2.model.init_from = self.mine.model
        cross = self.stage2.teacher.kind == "cross"  # a cross-encoder: its own model and pair-score cache
        if self._reads_mine_teacher():
            # one teacher, one cache of its vectors: stage 2 reads what mining embedded
            self.stage2.teacher = copy.deepcopy(self.mine.teacher)
            self.stage2.teacher.cache_dir = str(self.mine.teacher.cache_dir or embed_cache_dir(self.mine))
        self.teacher_ft.run.dir = str(root / "teacher_ft")
        self.teacher_ft.data.train_dir = self.mine.out_dir
        if cross:
            self.stage2.teacher.cache_dir = str(root / "teacher_cache")
        if self.run.tune_teacher:
            # stage 2's teacher settings (max_seq_len, prompts, ...) with the tuned model and its own cache
            self.stage2.teacher.model = str(root / "teacher_ft" / "export")
            self.stage2.teacher.cache_dir = str(root / "teacher_cache")
        self.merge.out_dir = str(root / "merged")
        # mining, stage 2 and the merge load the stage-1 export (and the merge its base), which carries stage 1's
        # model code (stage 0's, with run.stage0): whether that code may run is stage1.model.trust_remote_code's call
        trust = self.stage1.model.trust_remote_code
        self.mine.trust_remote_code = self.stage2.model.trust_remote_code = self.merge.trust_remote_code = trust
        self.stage0.model.trust_remote_code = trust  # with run.stage0, stage 1 starts from its export
        if self.run.tune_teacher:  # the tuned teacher carries the code of the model teacher_ft started from
            self.stage2.teacher.trust_remote_code = self.teacher_ft.model.trust_remote_code
        return self

    def _reads_mine_teacher(self) -> bool:
        """Stage 2 distils from mining's teacher (one teacher, one cache of its vectors; not a cross-encoder)."""
        return bool(self.mine.teacher.model) and self.stage2.teacher.model in ("", self.mine.teacher.model) and (
            self.stage2.teacher.kind != "cross")

    def trust_source(self, key: str) -> str:
        """The key a user sets to decide `key`, a phase's trust_remote_code in override spelling: resolve() copies
        stage 1's into the phases that load this run's own models, and a teacher's into stage 2's where stage 2
        reads that teacher (the tuned one, or mining's)."""
        if key in _RUN_MODEL_TRUST:
            return "stage1.model.trust_remote_code"
        if key == "stage2.teacher.trust_remote_code" and self.run.tune_teacher:
            return "teacher_ft.model.trust_remote_code"
        if key == "stage2.teacher.trust_remote_code" and self._reads_mine_teacher():
            return "mine.teacher.trust_remote_code"
        return key

    def _overruled_trust(self) -> list[str]:
        """Each trust_remote_code set true where resolve() would overwrite it with a false one: refused by validate(),
        not silently dropped (nor obeyed: trust is given by the key that decides it, not widened from another)."""
        overruled = []
        for key in (*_RUN_MODEL_TRUST, "stage2.teacher.trust_remote_code"):
            source = self.trust_source(key)
            if source != key and attrgetter(key)(self) and not attrgetter(source)(self):
                overruled.append(f"{key}=true: in `gte run` {source} decides whether that model's code may run, "
                                 f"and it is false; set {source}=true instead")
        return overruled

    def model_path(self, name: str) -> str:
        """A pipeline model name (base, stage1, stage2) -> what load_model takes; anything else is a folder."""
        exports = {"base": self.stage1.model.init_from, "stage1": self.mine.model,
                   "stage2": str(Path(self.stage2.run.dir) / "export")}
        return exports.get(name, name)

    def merge_config(self) -> MergeConfig:
        """The merge section with pipeline names resolved to folders."""
        merge = copy.deepcopy(self.merge)
        merge.models = [self.model_path(m) for m in merge.models]
        merge.overwrite = True  # <run.dir>/merged is the pipeline's own: a merge phase run again replaces it
        merge.fit.data = [{"pairs": self.prep.out_dir, "mined": self.mine.out_dir}.get(d, d) for d in merge.fit.data]
        return merge

    def __post_init__(self) -> None:
        self._overruled = self._overruled_trust()  # what the user set, before resolve() overwrites it
        self.resolve()

    def validate(self) -> list[str]:
        errors = [*self._overruled, *(f"prep.{e}" for e in self.prep.validate())]
        errors += [f"mine.{e}" for e in self.mine.validate()]
        # World size and ZeRO stage come from the launcher, as in `gte train`.
        if self.run.stage0:
            errors += [f"stage0: {e}" for e in self.stage0.validate()]
        errors += [f"stage1: {e}" for e in self.stage1.validate()]
        if self.run.tune_teacher:
            errors += [f"teacher_ft: {e}" for e in self.teacher_ft.validate()]
            if self.teacher_ft.model.init_from in PRESETS:
                errors.append(f"run.tune_teacher=true: teacher_ft.model.init_from={self.teacher_ft.model.init_from} "
                              "is a random-init preset; name the teacher to fine-tune, e.g. "
                              "teacher_ft.model.init_from=all-mpnet-base-v2")
            if not self.stage2.loss.uses_teacher:
                errors.append("run.tune_teacher=true: stage 2 never reads the tuned teacher; set "
                              "stage2.loss.distill_weight (e.g. 1.0) or stage2.loss.guide_margin")
            if self.stage2.teacher.kind == "cross":
                errors.append("run.tune_teacher=true with stage2.teacher.kind=cross: the tuned teacher is an "
                              "embedding model; set stage2.teacher.kind=bi, or run.tune_teacher=false to distil "
                              "from the cross-encoder in stage2.teacher.model")
        errors += [f"stage2: {e}" for e in self.stage2.validate()]
        if self.merge.models:
            # resolved: `base` may name a preset (stage1.model.init_from), which merge refuses
            errors += [f"merge.{e}" for e in self.merge_config().validate()]
        if self.merge.fit.split == DEV_SPLIT and "pairs" in self.merge.fit.data and not self.prep.split.dev_fraction:
            errors.append("merge.fit.split=dev with merge.fit.data=[pairs]: prep cuts no dev split; set "
                          "prep.split.dev_fraction (e.g. 0.1)")
        if self.rotate.rows == 1 or self.rotate.rows < 0:
            errors.append(f"rotate.rows={self.rotate.rows}: 0 (no rotation) or >= 2 rows per source")
        errors += [f"eval.extra.{i}={p}: does not exist; name a BEIR folder or a `gte prep` output"
                   for i, p in enumerate(self.eval.extra) if not Path(p).is_dir()]
        errors += [f"eval.quantize={self.eval.quantize}: {p!r} is not a precision; choose from "
                   f"{', '.join(PRECISION_NAMES)}" for p in self.eval.quantize if p not in PRECISION_NAMES]
        if self.eval.quantize and "beir" not in self.eval.tasks:
            errors.append(f"eval.quantize={self.eval.quantize}: scores retrieval only and eval.tasks has no beir; "
                          "add beir to eval.tasks or set eval.quantize=[]")
        if self.stage2.data.num_negatives > self.mine.negatives.k:
            errors.append(
                f"stage2.data.num_negatives={self.stage2.data.num_negatives} exceeds mine.negatives.k="
                f"{self.mine.negatives.k}: raise mine.negatives.k or lower stage2.data.num_negatives"
            )
        return errors


def main(argv: list[str] | None = None) -> int:
    """`gte run CONFIG [key=value ...]`, e.g. `gte run configs/quickstart.yaml run.dir=runs/x stage1.optim.lr=1e-5`."""
    cfg = config_from_argv(PipelineConfig, argv, __doc__)
    if cfg is not None:
        run_pipeline(cfg)
    return 0


def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run every phase whose record is missing or changed (and every phase after a changed one); returns the report
    path."""
    cfg.resolve()
    root = Path(cfg.run.dir)
    with hold(root, "run.dir"):
        claim_dir(root, "run.dir", "gte run", older=_older_pipeline(root))
        return _run_phases(cfg, root)


def _older_pipeline(root: Path) -> bool:
    """A run.dir an older version wrote (before it was marked): it holds phase records."""
    records = (read_record(root / PHASES_DIR, p.name) for p in (root / PHASES_DIR).glob("*.json"))
    return any(r is not None and r.kind.startswith("phase:") for r in records)


def _run_phases(cfg: PipelineConfig, root: Path) -> Path:
    save_config(cfg, root / "config.yaml")
    print(dump_config(cfg), flush=True)
    base, teacher = cfg.stage1.model.init_from, cfg.eval.teacher or cfg.mine.teacher.model
    stage1_export, stage2_export = Path(cfg.stage1.run.dir) / "export", Path(cfg.stage2.run.dir) / "export"
    final = root / "export"
    merged = Path(cfg.merge.out_dir) if cfg.merge.models else None
    eval_kw = {"tasks": cfg.eval.tasks, "bf16": cfg.eval.bf16, "batch_size": cfg.eval.batch_size,
               "beir_dirs": lambda: evaluation_sets(cfg),
               "dims": list(cfg.eval.dims or cfg.stage2.loss.matryoshka_dims),
               "trust_remote_code": cfg.stage1.model.trust_remote_code,  # the run's own models: stage 1's code
               "trust_flag": "stage1.model.trust_remote_code=true"}
    final_kw = {**eval_kw, "quantize": cfg.eval.quantize}  # int8 / binary embeddings: the final model only
    phases = [Phase("prep", cfg.prep, lambda force: prep(_forced(cfg.prep, "overwrite", force)))]
    if cfg.run.stage0:
        phases.append(Phase("stage0", cfg.stage0, lambda force: fit(_forced(cfg.stage0, "run.overwrite", force),
                                                                    trainer=MLMTrainer)))
    phases += [
        Phase("stage1", cfg.stage1, lambda force: fit(_forced(cfg.stage1, "run.overwrite", force))),
        Phase("mine", cfg.mine, lambda force: mine(_forced(cfg.mine, "overwrite", force))),
    ]
    teacher_ft = Path(cfg.teacher_ft.run.dir) / "export"
    phases += teacher_phases(cfg)
    phases.append(Phase("stage2", cfg.stage2, lambda force: fit(_forced(cfg.stage2, "run.overwrite", force))))
    if merged is not None:
        phases.append(Phase("merge", cfg.merge, lambda force: run_merge(cfg.merge_config(),
                                                                          scorers=general_scorers(cfg))))
    phases += [
        Phase("export", {"merged": bool(merged), "rotate": cfg.rotate},
              lambda force: _final_export(cfg, merged or stage2_export, final)),
        Phase("eval_base", {"eval": cfg.eval, "model": base},
              lambda force: _evaluate(base, root / "eval" / "base", update_card=False, **eval_kw),
              after="stage0" if cfg.run.stage0 else "prep"),
    ]
    if teacher:
        teacher_kw = {**eval_kw, "trust_remote_code": cfg.mine.teacher.trust_remote_code,  # eval.teacher's too
                      "trust_flag": "mine.teacher.trust_remote_code=true"}
        phases.append(Phase("eval_teacher", {"eval": cfg.eval, "model": teacher}, lambda force: _evaluate(
            teacher, root / "eval" / "teacher", update_card=False, **teacher_kw), after="prep"))
    if cfg.run.tune_teacher:
        tuned_kw = {**eval_kw, "trust_remote_code": cfg.teacher_ft.model.trust_remote_code,
                    "trust_flag": "teacher_ft.model.trust_remote_code=true"}
        phases.append(Phase("eval_teacher_ft", cfg.eval, lambda force: _evaluate(
            teacher_ft, root / "eval" / "teacher_ft", update_card=False, **tuned_kw), after="teacher_ft"))
    phases += [
        Phase("eval_stage1", cfg.eval, lambda force: _evaluate(stage1_export, root / "eval" / "stage1", **eval_kw),
              after="stage1"),
        Phase("eval_stage2", cfg.eval, lambda force: _evaluate(
            final if merged is None else stage2_export, root / "eval" / "stage2",
            **(final_kw if merged is None else eval_kw)), after="export"),
    ]
    if merged is not None:
        phases.append(Phase("eval_merged", cfg.eval, lambda force: _evaluate(final, root / "eval" / "merged",
                                                                             **final_kw), after="export"))
    digests: dict[str, str] = {}
    for i, phase in enumerate(phases):
        after = phase.after if phase.after is not None else (phases[i - 1].name if i else "")
        digests[phase.name] = _run_phase(root, _naming_run_keys(cfg, phase), digests.get(after, ""))
    general = "stsb" not in cfg.prep.sources and "sts-b" in cfg.eval.tasks
    return write_report(root, base_name=base, teacher_name=teacher, general_check=general,
                        rotated=cfg.rotate.rows > 0)


def _naming_run_keys(cfg: PipelineConfig, phase: Phase) -> Phase:
    """The phase, its refusal to run a model's own code naming the key of `gte run` that decides it
    (stage1.model.trust_remote_code for stage 2's model, stage2.teacher.trust_remote_code, ...) rather than the key
    within the phase's section that its own code knows (model.trust_remote_code)."""
    section = _PHASE_SECTIONS.get(phase.name)
    if section is None:  # the pipeline's own phases already name their keys in full
        return phase

    def job(force: bool):
        try:
            return phase.job(force)
        except UntrustedCodeError as exc:
            key = cfg.trust_source(f"{section}.{exc.flag.removesuffix('=true')}")
            raise UntrustedCodeError(exc.reason, f"{key}=true") from exc

    return replace(phase, job=job)


def teacher_phases(cfg: PipelineConfig) -> list[Phase]:
    """After mining, what stage 2's teacher needs: the tuned teacher (run.tune_teacher) and its vectors of every mined
    text, or a cross-encoder's scores of every mined pair (stage2.teacher.kind=cross); stage 2 reads the cache only."""
    tuned = [Phase("teacher_ft", cfg.teacher_ft, lambda force: fit(_forced(cfg.teacher_ft, "run.overwrite", force)))]
    fill = Phase("teacher_scores", cfg.stage2.teacher,
                 lambda force: fill_teacher_cache(cfg.stage2.teacher, cfg.mine.out_dir))
    if cfg.run.tune_teacher:
        return [*tuned, fill]
    return [fill] if cfg.stage2.teacher.kind == "cross" and cfg.stage2.loss.uses_teacher else []


@dataclass
class Phase:
    name: str
    config: object  # the section whose keys decide whether the phase must run again
    job: Callable[[bool], object]  # job(force): force = rebuild the phase's output even if it looks done
    # the phase whose output this one depends on (None: the one before it); an evaluation depends only on its model
    # and the held-out sets, so a changed stage 2 does not evaluate the base model again
    after: str | None = None


def evaluation_sets(cfg: PipelineConfig) -> dict[str, Path]:
    """The prep output's held-out BEIR sets, limited to eval.beir_sources when set, then those of eval.extra."""
    sets = beir_dirs(cfg.prep.out_dir, key="prep.out_dir")
    wanted = cfg.eval.beir_sources or list(sets)
    missing = sorted(set(wanted) - set(sets))
    if missing:
        raise ConfigError(
            f"eval.beir_sources={missing} have no held-out BEIR set in {cfg.prep.out_dir}; it has {sorted(sets)}"
        )
    chosen = {name: sets[name] for name in wanted}
    for i, folder in enumerate(cfg.eval.extra):
        key = f"eval.extra.{i}"
        found = beir_dirs(folder, key=key) if (Path(folder) / MANIFEST_FILE).is_file() else {Path(folder).name: folder}
        for name, path in found.items():
            if name in chosen:
                raise ConfigError(f"{key}={folder}: its set {name!r} has the name of another evaluation set; "
                                  "rename the folder (or the source) so each result has its own name")
            chosen[name] = Path(path)
    return chosen


def general_scorers(cfg: PipelineConfig) -> dict[str, Callable]:
    """The general checks of eval.tasks as tasks of a merge-weight fit, each on its dev split (a choice made from
    data never reads a test split); STS-B only when no training source is STS-B."""
    e, scorers = cfg.eval, {}
    if STS_TASK in e.tasks and "stsb" not in cfg.prep.sources:
        scorers[f"{STS_TASK}/dev"] = lambda m: evaluate_sts(m, "dev", e.batch_size, e.bf16)["cosine_spearman"]
    if LONG_TEXT_TASK in e.tasks:
        scorers[f"{LONG_TEXT_TASK}/dev"] = lambda m: evaluate_long_text_dims(
            m, None, "dev", e.batch_size, e.bf16)[m.dim]["cosine_spearman"]
    return scorers


def _evaluate(model, out_dir: Path, beir_dirs: Callable[[], dict], **kwargs) -> dict:
    # The BEIR sets exist only once prep has run, so they are looked up when the phase starts.
    return evaluate(model, beir_dirs=beir_dirs(), out_dir=out_dir, skip_large_dims=True, **kwargs)


def _forced(section, key: str, force: bool):
    """The section with its rebuild key set (a copy: config.yaml keeps what the user wrote)."""
    if not force:
        return section
    section = copy.deepcopy(section)
    owner, _, name = key.rpartition(".")
    setattr(getattr(section, owner) if owner else section, name, True)
    return section


def phase_record(root: Path, name: str) -> Record | None:
    return read_record(root / PHASES_DIR, f"{name}.json")


def _run_phase(root: Path, phase: Phase, upstream: str) -> str:
    """Run one phase unless its record says it is done with this config after these upstream phases; returns the
    digest the next phase depends on. A changed phase is rebuilt (force), except a training phase whose only change
    is its length (train.max_steps, train.epochs), which continues."""
    skip = _REBUILD_KEYS | _TRUST_KEYS
    want = Record(f"phase:{phase.name}", PHASE_FORMAT, flatten(phase.config, skip=skip), {"upstream": upstream},
                  defaults=defaults_of(phase.config, skip))
    digest = digest_json([want.kind, want.config, want.inputs])
    have = phase_record(root, phase.name)
    changes = have.changes(want) if have is not None else []
    if have is not None and not changes:
        print(f"[run] {phase.name}: done before, skipped", flush=True)
        # the digest it was recorded with: a key added since, at its default, changes nothing downstream either
        return digest_json([have.kind, have.config, have.inputs])
    force = any(c.key not in LENGTH_KEYS for c in changes)
    why = f" (changed: {describe(changes)})" if changes else ""
    print(f"[run] {phase.name}: starting{why}", flush=True)
    (root / PHASES_DIR / f"{phase.name}.json").unlink(missing_ok=True)
    gc.collect()
    release_free_memory()  # what earlier phases freed goes back to the OS, so this phase's peak is its own
    reset_peak()
    start = time.perf_counter()
    phase.job(force)
    want.stats = {"seconds": round(time.perf_counter() - start, 1), "finished": time.time(),
                  "peak_rss_mb": peak_rss_mb(), "children_peak_rss_mb": children_peak_rss_mb()}
    write_record(root / PHASES_DIR, want, f"{phase.name}.json")  # the phase counts as done only from here on
    print(f"[run] {phase.name}: finished in {want.stats['seconds']:.0f}s, peak RSS "
          f"{want.stats['peak_rss_mb']:.0f} MiB", flush=True)
    return digest


def _final_export(cfg: PipelineConfig, src: Path, dst: Path) -> None:
    """The final model: src rotated to the principal axes of the prep output's train texts, or src as it is."""
    if cfg.rotate.rows:
        run_rotate(src, dst, [cfg.prep.out_dir], cfg.rotate.rows, bf16=cfg.eval.bf16, key="run.dir", what="gte run",
                   overwrite=True, trust_remote_code=cfg.stage1.model.trust_remote_code,
                   trust_flag="stage1.model.trust_remote_code=true")
        return
    with build_dir(dst, "gte run", "run.dir", overwrite=True) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
