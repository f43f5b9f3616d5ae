"""Side-by-side baseline (not a test): our stage-2 data and our training budget through sentence-transformers.

Reads a finished `gte run` directory and fine-tunes the same base model with SentenceTransformerTrainer +
MultipleNegativesRankingLoss on the same data, for the same wall time, then evaluates it with the same
train.eval.evaluate.evaluate call (the pipeline's eval settings) and writes a comparison:

  data       <run.dir>/data/mined train split (query, positive, the first k mined negatives, k =
             stage2 data.num_negatives; fewer than k are cycled, as our loader does), stage2 data.sources
  model      stage1 model.init_from (the packaged all-MiniLM-L6-v2 in the quickstart)
  lengths    max_seq_length = max(stage2 data.query_max_len, data.doc_max_len) (ST has one max length)
  batch, lr  stage2 train.global_batch_size, optim.lr (--lr overrides) and optim.weight_decay; warmup 10%, linear
  loss       MNRL (ST's default scale 20); the cached variant with stage2 train.chunk_size texts per forward when
             stage 2 used train.grad_cache (a batch of 128 x (2 + k) texts does not fit in RAM otherwise)
  budget     phases/stage1.json + phases/stage2.json seconds (our whole training), or --budget-seconds; a short
             calibration on a throwaway copy sets max_steps, and a callback stops training when the budget is used
  sampler    one source per batch (DatasetDict, ST's PROPORTIONAL multi-dataset sampler) and NO_DUPLICATES
  writes     <run.dir>/baseline_st/{model, eval/results.json, comparison.md, baseline.json, metrics.jsonl}

  .venv/bin/python benchmarks/st_baseline.py runs/quickstart                     # after `gte run` finished
  .venv/bin/python benchmarks/st_baseline.py runs/quickstart --budget-seconds 60 --out /tmp/stb   # quick CPU check
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import shutil
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from omegaconf import OmegaConf  # noqa: E402

from benchmarks.peer_settings import load_peer  # noqa: E402
from train.config import TrainConfig  # noqa: E402

PHASES_TRAINING = ("stage1", "stage2")
EVAL_DEFAULTS = {"tasks": ["sts-b", "beir"], "bf16": True, "batch_size": 64, "beir_sources": []}


@dataclass
class Plan:
    """Everything the baseline takes from our run, plus its own settings (saved in baseline.json)."""

    run_dir: str
    out_dir: str
    base_model: str
    sources: list[str]
    num_negatives: int
    max_seq_length: int
    batch_size: int
    lr: float
    lr_from: str
    weight_decay: float
    query_prompt: str
    doc_prompt: str
    bf16: bool
    seed: int
    budget_seconds: float
    budget_from: str
    scale: float
    batch_sampler: str
    multi_dataset: str
    mini_batch_size: int


def read_stage_config(run_dir: Path, stage: str) -> TrainConfig:
    """<run.dir>/<stage>/config.yaml as a typed TrainConfig (schema defaults for missing keys, no validation)."""
    path = run_dir / stage / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: RUN_DIR must be a `gte run` directory whose {stage} phase ran")
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), OmegaConf.load(path)))


def phase_seconds(run_dir: Path) -> dict[str, float]:
    """Seconds of each finished phase from phases/<phase>.json (a resumed phase records its last attempt only)."""
    found = {}
    for marker in sorted((run_dir / "phases").glob("*.json")):
        record = json.loads(marker.read_text())
        found[record.get("phase", marker.stem)] = float(record["seconds"])
    return found


def make_plan(args: argparse.Namespace) -> Plan:
    run_dir = Path(args.run_dir)
    s1, s2 = read_stage_config(run_dir, "stage1"), read_stage_config(run_dir, "stage2")
    seconds = phase_seconds(run_dir)
    if args.budget_seconds is not None:
        budget, budget_from = float(args.budget_seconds), "--budget-seconds"
    elif all(p in seconds for p in PHASES_TRAINING):
        budget, budget_from = sum(seconds[p] for p in PHASES_TRAINING), "phases/stage1.json + phases/stage2.json"
    else:
        missing = [p for p in PHASES_TRAINING if p not in seconds]
        raise FileNotFoundError(f"{run_dir / 'phases'} has no marker for {missing}: the default budget is the wall "
                                "time of our stage1 + stage2 phases: finish `gte run` or pass --budget-seconds S")
    return Plan(
        run_dir=str(run_dir), out_dir=str(args.out or run_dir / "baseline_st"), base_model=s1.model.init_from,
        sources=list(s2.data.sources), num_negatives=s2.data.num_negatives,
        max_seq_length=max(s2.data.query_max_len, s2.data.doc_max_len), batch_size=s2.train.global_batch_size,
        lr=s2.optim.lr if args.lr is None else args.lr, lr_from="stage2 optim.lr" if args.lr is None else "--lr",
        weight_decay=s2.optim.weight_decay, query_prompt=s2.data.query_prompt, doc_prompt=s2.data.doc_prompt,
        bf16=args.bf16 if args.bf16 is not None else s2.train.precision == "bf16", seed=s2.train.seed,
        budget_seconds=budget, budget_from=budget_from, scale=args.scale, batch_sampler=args.batch_sampler,
        multi_dataset=args.multi_dataset, mini_batch_size=_mini_batch_size(args, s2),
    )


def _mini_batch_size(args: argparse.Namespace, s2: TrainConfig) -> int:
    """--mini-batch-size, else stage 2's memory choice: with train.grad_cache, CachedMultipleNegativesRankingLoss
    (the same loss, gradient-cached like ours) with train.chunk_size texts per forward; without it, plain MNRL."""
    if args.mini_batch_size is not None:
        return args.mini_batch_size
    return s2.train.chunk_size if s2.train.grad_cache else 0


# ---- data ----------------------------------------------------------------------------------------------------------
def read_mined(mined_dir: Path, plan: Plan) -> dict[str, list[dict]]:
    """Source -> rows {anchor, positive, negative_1..k} of the train split of a pairs dir, prompts prepended."""
    import pyarrow.parquet as pq

    manifest = json.loads((mined_dir / "manifest.json").read_text())
    names = plan.sources or sorted(manifest["sources"])
    k, out = plan.num_negatives, {}
    for name in names:
        rows = []
        for shard in manifest["sources"][name]["train"]["files"]:
            path = Path(shard) if Path(shard).is_absolute() else mined_dir / shard
            columns = ["query", "positive", "negatives"] if k else ["query", "positive"]
            rows += pq.read_table(path, columns=columns).to_pylist()
        out[name] = [_row(r, k, plan, f"{mined_dir}/{name}") for r in rows]
    return out


def _row(r: dict, k: int, plan: Plan, where: str) -> dict:
    row = {"anchor": plan.query_prompt + r["query"], "positive": plan.doc_prompt + r["positive"]}
    if k:
        negs = r["negatives"] or []
        if not negs:
            raise ValueError(f"{where}: a row has no negatives but stage2 data.num_negatives={k}; re-run `gte mine`")
        for i in range(k):  # the first k; fewer are cycled, as train.data.sample_negatives does
            row[f"negative_{i + 1}"] = plan.doc_prompt + negs[i % len(negs)]
    return row


def to_datasets(rows: dict[str, list[dict]], plan: Plan):
    """A DatasetDict (one source per batch) or, with --multi-dataset concat, one shuffled-together Dataset."""
    from datasets import Dataset, DatasetDict

    if plan.multi_dataset == "concat":
        return Dataset.from_list([r for name in rows for r in rows[name]])
    small = [name for name, r in rows.items() if len(r) < plan.batch_size]
    if small:  # drop_last: such a source would never fill a batch (and an empty sampler breaks ST's mixing)
        print(f"[baseline] sources with fewer rows than one batch are left out: {small}", flush=True)
    return DatasetDict({name: Dataset.from_list(r) for name, r in rows.items() if name not in small})


# ---- training ------------------------------------------------------------------------------------------------------
def make_trainer(plan: Plan, model, train_set, max_steps: int, output_dir: Path, callbacks: list):
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    args = SentenceTransformerTrainingArguments(
        output_dir=str(output_dir), per_device_train_batch_size=plan.batch_size, max_steps=max_steps,
        learning_rate=plan.lr, warmup_steps=0.1, lr_scheduler_type="linear", weight_decay=plan.weight_decay,
        max_grad_norm=1.0, bf16=plan.bf16, use_cpu=True, report_to="none", save_strategy="no", eval_strategy="no",
        logging_strategy="steps", logging_steps=10, disable_tqdm=True, dataloader_drop_last=True, seed=plan.seed,
        batch_sampler=plan.batch_sampler,
        multi_dataset_batch_sampler="proportional" if plan.multi_dataset == "concat" else plan.multi_dataset,
    )
    if plan.mini_batch_size:
        loss = CachedMultipleNegativesRankingLoss(model, scale=plan.scale, mini_batch_size=plan.mini_batch_size)
    else:
        loss = MultipleNegativesRankingLoss(model, scale=plan.scale)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_set, loss=loss,
                                         callbacks=callbacks)
    return trainer, _count_rows(trainer)


class _RowCounter:
    """The trainer's collator, counting the rows of every batch in order (accelerate's loader collates one batch
    ahead, so only the first global_step counts were trained on); other attributes pass through."""

    def __init__(self, collate) -> None:
        self.collate, self.counts = collate, []

    def __call__(self, features):
        self.counts.append(len(features))
        return self.collate(features)

    def __getattr__(self, name: str):
        return getattr(self.__dict__["collate"], name)


def _count_rows(trainer) -> list[int]:
    counter = _RowCounter(trainer.data_collator)
    trainer.data_collator = counter
    return counter.counts


def wall_budget_callback(budget_seconds: float, log_file: Path | None = None):
    """A TrainerCallback that stops before the next step would end past the budget, and logs loss lines."""
    from transformers import TrainerCallback

    class WallBudget(TrainerCallback):
        def __init__(self) -> None:
            self.start, self.stamps, self.stopped_by_budget = 0.0, [], False

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.stamps.append(time.perf_counter() - self.start)
            per_step = self.stamps[-1] / len(self.stamps)
            if self.stamps[-1] + per_step > budget_seconds and state.global_step < state.max_steps:
                self.stopped_by_budget = control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kwargs):
            if log_file is not None and logs:
                kind = "summary" if "train_runtime" in logs else "train"
                line = {"kind": kind, "step": state.global_step, **logs}
                with log_file.open("a") as f:
                    f.write(json.dumps(line) + "\n")

    return WallBudget()


def calibrate(plan: Plan, model, train_set, steps: int, work: Path) -> float:
    """Median seconds per step on a throwaway copy of the model (the first step, with its set-up, not counted).

    The median, because the early steps also pay one-off kernel set-up for new sequence lengths (ST pads each
    batch to its longest text): a short calibration tends to overestimate, and the wall callback is the backstop.
    """
    timer = wall_budget_callback(float("inf"))
    trainer, _ = make_trainer(plan, copy.deepcopy(model), train_set, max(1, steps) + 1, work / "calibration", [timer])
    trainer.train()
    shutil.rmtree(work / "calibration", ignore_errors=True)
    return statistics.median(b - a for a, b in zip(timer.stamps, timer.stamps[1:]))


def train_baseline(plan: Plan, train_set, args: argparse.Namespace) -> dict:
    """Fine-tune within the budget, save to <out>/model; returns what happened (seconds, steps, rows seen)."""
    from transformers import set_seed

    from gte_model.assets import PACKAGED, packaged_model_path

    out = Path(plan.out_dir)
    set_seed(plan.seed)
    path = packaged_model_path(plan.base_model) if plan.base_model.lower() in PACKAGED else Path(plan.base_model)
    if not path.is_dir():
        raise ValueError(f"stage1 model.init_from={plan.base_model!r} is not a packaged model or a folder: the ST "
                         "baseline fine-tunes a pretrained model (a preset starts from random weights)")
    model, peer = load_peer(path, "cpu")  # its best documented settings on a CPU (benchmarks/peer_settings.py)
    model.max_seq_length = plan.max_seq_length
    if plan.query_prompt or plan.doc_prompt:  # saved with the model, so evaluate() encodes as in training
        model.prompts = {"query": plan.query_prompt, "document": plan.doc_prompt}
    start = time.perf_counter()
    step_s = 0.0 if args.max_steps else calibrate(plan, model, train_set, args.calibration_steps, out)
    calibration_s = time.perf_counter() - start
    max_steps = args.max_steps or max(1, int(0.97 * plan.budget_seconds / step_s))
    how = f"--max-steps {max_steps}" if args.max_steps else f"calibration {step_s:.2f}s/step -> max_steps={max_steps}"
    print(f"[baseline] {how}; wall budget {plan.budget_seconds:.0f}s", flush=True)
    (out / "metrics.jsonl").unlink(missing_ok=True)
    budget = wall_budget_callback(plan.budget_seconds, out / "metrics.jsonl")
    trainer, rows = make_trainer(plan, model, train_set, max_steps, out / "trainer", [budget])
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    model.save_pretrained(str(out / "model"))
    shutil.rmtree(out / "trainer", ignore_errors=True)
    return {"train_seconds": round(seconds, 1), "calibration_seconds": round(calibration_s, 1),
            "calibration_step_seconds": round(step_s, 3), "max_steps": max_steps, "steps": trainer.state.global_step,
            "pairs_seen": sum(rows[: trainer.state.global_step]), "stopped_by_budget": budget.stopped_by_budget,
            "mean_train_loss": float(result.training_loss),
            "step_seconds": [round(b - a, 2) for a, b in zip([0.0, *budget.stamps], budget.stamps)], "peer": peer,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


# ---- evaluation and comparison -------------------------------------------------------------------------------------
def eval_settings(run_dir: Path) -> dict:
    """tasks / bf16 / batch_size of the pipeline's eval section (<run.dir>/config.yaml), so both evals match."""
    path = run_dir / "config.yaml"
    section = OmegaConf.to_container(OmegaConf.load(path)).get("eval", {}) if path.is_file() else {}
    return {key: section.get(key, default) for key, default in EVAL_DEFAULTS.items()}


def load_results(path: Path) -> dict | None:
    return json.loads(path.read_text())["results"] if path.is_file() else None


def ours_pairs(run_dir: Path, stage: str) -> tuple[int, int]:
    """(steps, pairs) of one of our stages: the last step in its metrics.jsonl (else train.max_steps) x batch."""
    cfg = read_stage_config(run_dir, stage)
    metrics = run_dir / stage / "metrics.jsonl"
    steps = [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.strip()] if (
        metrics.is_file()) else []
    done = max(steps) if steps else cfg.train.max_steps
    return done, done * cfg.train.global_batch_size


def comparison_md(plan: Plan, results: dict[str, dict], record: dict, ours: dict) -> str:
    from train.eval.evaluate import compare_table

    header = ["# Side-by-side baseline: sentence-transformers at the same data and budget", "",
              f"Run directory `{plan.run_dir}`; command: `{record['command']}`.", ""]
    caveat = ("- Our wall time counts whole phases (data loading, validation, checkpoints, export); the baseline's "
              "counts trainer.train() only, so the budget comparison favours the baseline.")
    return "\n".join([*header, compare_table(results), *_time_table(record["train"], ours), "",
                      *_settings(plan, record["train"]), caveat, ""])


def _time_table(t: dict, ours: dict) -> list[str]:
    return [
        "| model | training data | training wall time (s) | pairs seen | steps |", "| --- | --- | --- | --- | --- |",
        f"| ours (stage 1 + stage 2) | prep pairs (stage 1), mined triples (stage 2) | {ours['seconds']:.0f} "
        f"({ours['stage1_seconds']:.0f} + {ours['stage2_seconds']:.0f}) | {ours['pairs']:,} "
        f"({ours['stage1_pairs']:,} + {ours['stage2_pairs']:,}) | {ours['stage1_steps']} + {ours['stage2_steps']} |",
        f"| ST baseline | mined triples | {t['train_seconds']:.0f} | {t['pairs_seen']:,} | {t['steps']} |",
    ]


def _settings(plan: Plan, t: dict) -> list[str]:
    loss = (f"CachedMultipleNegativesRankingLoss (scale {plan.scale:g}, mini_batch_size {plan.mini_batch_size})"
            if plan.mini_batch_size else f"MultipleNegativesRankingLoss (scale {plan.scale:g})")
    negatives = (f"{plan.num_negatives} hard negatives per query (the first of each mined list)"
                 if plan.num_negatives else "in-batch negatives only")
    steps_from = (f"from a {t['calibration_step_seconds']:.2f}s/step calibration ({t['calibration_seconds']:.0f}s, "
                  "not counted)" if t["calibration_step_seconds"] else "(--max-steps)")
    return [
        f"- Baseline: SentenceTransformerTrainer + {loss}, from `{plan.base_model}`, batch {plan.batch_size}, "
        f"{negatives}, max_seq_length {plan.max_seq_length}, lr {plan.lr:g} ({plan.lr_from}), warmup 10%, linear "
        f"decay, {'bf16' if plan.bf16 else 'fp32'}, batch sampler {plan.batch_sampler}, sources "
        f"{plan.multi_dataset}, attention {t.get('peer', {}).get('attention', 'sdpa')} (padded: no padding-free path "
        f"on a CPU), fused AdamW; peak RSS {t.get('peak_rss_mb', 0):,} MB.",
        f"- Budget {plan.budget_seconds:.0f}s ({plan.budget_from}); max_steps {t['max_steps']} {steps_from}; stopped "
        f"by the wall budget before max_steps: {t['stopped_by_budget']}; budget used "
        f"{t['train_seconds'] / plan.budget_seconds:.0%}.",
    ]


def our_budget(run_dir: Path) -> dict:
    seconds = phase_seconds(run_dir)
    out = {"seconds": sum(seconds.get(p, 0.0) for p in PHASES_TRAINING)}
    for stage in PHASES_TRAINING:
        steps, pairs = ours_pairs(run_dir, stage)
        out.update({f"{stage}_seconds": seconds.get(stage, 0.0), f"{stage}_steps": steps, f"{stage}_pairs": pairs})
    out["pairs"] = out["stage1_pairs"] + out["stage2_pairs"]
    return out


def evaluate_all(plan: Plan, redo: bool) -> dict[str, dict]:
    """{column: results}: base and our stage 2 from the pipeline's eval/ (base evaluated here if missing), and
    the baseline, evaluated with the pipeline's own eval settings."""
    from gte_model.core.pairs import beir_dirs
    from train.eval.evaluate import evaluate

    run_dir, out = Path(plan.run_dir), Path(plan.out_dir)
    settings = eval_settings(run_dir)
    wanted = settings.pop("beir_sources") or None  # the pipeline's eval.beir_sources: the same held-out sets
    sets = beir_dirs(run_dir / "data" / "pairs")
    kw = {**settings, "beir_dirs": {n: p for n, p in sets.items() if wanted is None or n in wanted}}
    base = load_results(run_dir / "eval" / "base" / "results.json")
    if base is None and not redo:  # the pipeline's eval_base phase has not run: our own copy from an earlier call
        base = load_results(out / "eval_base" / "results.json")
    if base is None:
        base = evaluate(plan.base_model, out_dir=out / "eval_base", update_card=False, **kw)
    ours = load_results(run_dir / "eval" / "stage2" / "results.json")
    mine = None if redo else load_results(out / "eval" / "results.json")
    if mine is None:
        mine = evaluate(out / "model", out_dir=out / "eval", update_card=False, **kw)
    columns = {f"base ({Path(plan.base_model).name})": base}
    if ours is not None:
        columns["ours (stage 2)"] = ours
    else:
        print(f"[baseline] {run_dir / 'eval/stage2/results.json'} is missing: our column is left out", flush=True)
    columns["ST baseline"] = mine
    # An evaluation made before eval.beir_sources was honoured may hold extra sets: compare the same sets only.
    keep = {f"beir/{n}" for n in kw["beir_dirs"]}
    return {name: {t: m for t, m in res.items() if not t.startswith("beir/") or t in keep}
            for name, res in columns.items()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a `gte run` directory (run.dir of configs/quickstart.yaml)")
    p.add_argument("--budget-seconds", type=float, default=None, help="default: stage1 + stage2 phase seconds")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast in training (default: as stage2 train.precision)")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: stage2 optim.lr)")
    p.add_argument("--scale", type=float, default=20.0, help="MNRL scale = 1/temperature (ST's default 20)")
    p.add_argument("--batch-sampler", default="no_duplicates", choices=("no_duplicates", "batch_sampler"))
    p.add_argument("--multi-dataset", default="proportional", choices=("proportional", "round_robin", "concat"),
                   help="proportional/round_robin: one source per batch (ST's multi-dataset samplers); concat: mixed")
    p.add_argument("--mini-batch-size", type=int, default=None,
                   help="> 0: CachedMultipleNegativesRankingLoss with this mini-batch, 0: plain MNRL (default: "
                        "stage 2's train.chunk_size when it used train.grad_cache, else 0)")
    p.add_argument("--max-steps", type=int, default=0, help="> 0: skip the calibration (the wall budget still holds)")
    p.add_argument("--calibration-steps", type=int, default=4, help="timed steps on a throwaway copy")
    p.add_argument("--out", default=None, help="default: RUN_DIR/baseline_st")
    p.add_argument("--redo", action="store_true", help="train and evaluate again even if results exist")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    out = Path(plan.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_file = out / "baseline.json"
    record = json.loads(record_file.read_text()) if record_file.is_file() and not args.redo else None
    if record is None or not (out / "model").is_dir():
        print(f"[baseline] plan: {json.dumps(asdict(plan))}", flush=True)
        rows = read_mined(Path(plan.run_dir) / "data" / "mined", plan)
        print(f"[baseline] rows per source: { {name: len(r) for name, r in rows.items()} }", flush=True)
        command = " ".join(["python benchmarks/st_baseline.py", *(sys.argv[1:] if argv is None else argv)])
        record = {"command": command, "plan": asdict(plan), "rows": {n: len(r) for n, r in rows.items()},
                  "train": train_baseline(plan, to_datasets(rows, plan), args)}
        record_file.write_text(json.dumps(record, indent=2) + "\n")
        args.redo = True  # a new model needs a new evaluation
    else:
        plan = Plan(**record["plan"])
        print(f"[baseline] {record_file} exists: training skipped (--redo trains again)", flush=True)
    results = evaluate_all(plan, args.redo)
    ours = our_budget(Path(plan.run_dir))
    record["ours"] = ours
    record_file.write_text(json.dumps(record, indent=2) + "\n")
    text = comparison_md(plan, results, record, ours)
    (out / "comparison.md").write_text(text)
    print(text + f"\n[baseline] wrote {out / 'comparison.md'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
