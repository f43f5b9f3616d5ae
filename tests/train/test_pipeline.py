"""`gte run` end to end on a tiny budget: every phase runs, the report is written, and a run killed in stage 1
finishes when re-run without redoing the phases that were done."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from gte_model import load_model

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "prep.sources=[pydocs,stsb]",
    "prep.max_pairs.default=300",
    "prep.split.heldout_fraction=0.2",
    "prep.split.max_heldout_queries=40",
    "prep.num_proc=1",
    "stage1.model.init_from=tiny",
    "stage1.data.val_rows=8",
    "stage1.train.global_batch_size=16",
    "stage1.train.chunk_size=16",
    "stage1.train.max_steps=6",
    "stage1.train.checkpoint_every=2",
    "stage1.train.precision=fp32",
    "stage1.optim.lr=1e-3",
    "stage1.optim.warmup_steps=1",
    "stage1.log.wandb=off",
    "mine.max_queries_per_source=40",
    "mine.embed.bf16=false",
    "mine.negatives.margin=0.0",  # a random tiny model scores everything near cosine 1: keep what ranks below
    "mine.negatives.max_score=1.0",
    "mine.teacher.model=all-mpnet-base-v2",  # not in the quickstart itself: run here so its path is tested
    "mine.teacher.max_seq_len=64",
    "stage2.loss.distill_weight=1.0",
    "stage2.loss.distill_in_batch=true",
    "stage2.loss.matryoshka_dims=[32,16]",  # the tiny preset has 32 dims
    "eval.dims=[16,8]",
    "stage2.data.val_rows=8",
    "stage2.train.global_batch_size=8",
    "stage2.train.chunk_size=16",
    "stage2.train.max_steps=4",
    "stage2.train.checkpoint_every=2",
    "stage2.train.precision=fp32",
    "stage2.optim.warmup_steps=1",
    "stage2.log.wandb=off",
    "eval.tasks=[beir]",
    "eval.beir_sources=[]",
    "eval.bf16=false",
    "merge.models=[stage1,stage2]",  # the quickstart merges base, here a random preset, which merge refuses
]
# a teacher (all-mpnet-base-v2, installed by scripts/setup.sh) vets negatives, stage 2 distils from it, and the
# final model is a merge (of stage 1 and stage 2: the quickstart's base is a random tiny preset here, not a saved
# model), rotated to its principal axes (rotate.rows)
PHASES = ["prep", "stage1", "mine", "stage2", "merge", "export", "eval_base", "eval_teacher", "eval_stage1",
          "eval_stage2", "eval_merged"]


def _cmd(run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "train.app.cli", "run", "configs/quickstart.yaml", f"run.dir={run_dir}", *TINY]


@pytest.mark.slow
@pytest.mark.integration
def test_pipeline_killed_in_stage1_finishes_on_rerun_without_redoing_prep(tmp_path):
    run_dir = tmp_path / "qs"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(_cmd(run_dir), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = run_dir / "stage1" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if checkpoints.is_dir() and any(p.name.startswith("step-") for p in checkpoints.iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the pipeline ended before stage 1 wrote a checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run_dir / "phases" / "prep.json").is_file() and not (run_dir / "phases" / "stage1.json").is_file()
    prep_marker = (run_dir / "phases" / "prep.json").read_text()

    rerun = subprocess.run(_cmd(run_dir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "[run] prep: done before, skipped" in rerun.stdout
    assert (run_dir / "phases" / "prep.json").read_text() == prep_marker
    steps = [json.loads(line)["step"] for line in (run_dir / "stage1" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == 6, steps  # resumed, no step logged twice
    for phase in PHASES:
        assert (run_dir / "phases" / f"{phase}.json").is_file(), phase
    report = (run_dir / "report.md").read_text()
    assert "merged (final, rotated)" in report and "teacher (all-mpnet-base-v2)" in report and "ndcg@10" in report
    assert (run_dir / "report.png").is_file()
    mined = pq.read_table(next((run_dir / "data" / "mined").glob("*/train-*.parquet"))).to_pylist()
    assert all(len(r["teacher_scores"]) == 1 + len(r["negatives"]) for r in mined)
    assert list((run_dir / "data" / ".mined.embed_cache").iterdir())  # stage 2 read the teacher from here
    assert not (run_dir / "stage2" / "teacher_cache").exists()
    final = load_model(run_dir / "export")
    assert final.base_model == "preset:tiny" and final.rotation is not None
    merged = load_model(run_dir / "merged")
    texts = ["python file data", "the news report", "a small red dog"]
    a, b = merged.encode(texts, normalize=True), final.encode(texts, normalize=True)
    assert abs(a @ a.T - b @ b.T).max() < 1e-5 and abs(a - b).max() > 1e-3  # turned, same similarities
    results = json.loads((run_dir / "eval" / "stage2" / "results.json").read_text())["results"]
    assert {"beir/pydocs", "beir/stsb"} <= set(results)
    assert not any("int8" in name for name in results)  # quantized embeddings: the final model only
    final_results = json.loads((run_dir / "eval" / "merged" / "results.json").read_text())["results"]
    # eval.quantize from the quickstart, at the full dim and each of eval.dims
    assert {"beir/pydocs@int8", "beir/pydocs@binary", "beir/pydocs@16+int8", "beir/pydocs@8+binary"} <= set(
        final_results)
    quantized = report[report.index("### Quantized embeddings"):]
    assert "| merged (final, rotated) | int8 |" in quantized
    assert "| merged (final, rotated) | binary (rescored) |" in quantized
    card = (run_dir / "export" / "README.md").read_text()
    assert "beir/pydocs" in card  # evaluation results reach the final model's card

    assert "peak RSS (MiB)" in report
    again = subprocess.run(_cmd(run_dir), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout.count("done before, skipped") == len(PHASES)

    # A changed key re-runs its phase and every phase after it, and config.yaml says what was applied.
    changed = subprocess.run([*_cmd(run_dir), "stage2.optim.lr=5e-4"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)
    assert changed.returncode == 0, changed.stderr[-3000:]
    skipped = [p for p in PHASES if f"[run] {p}: done before, skipped" in changed.stdout]
    # evaluations depend only on their model: base, teacher and stage 1 are not scored again
    assert skipped == ["prep", "stage1", "mine", "eval_base", "eval_teacher", "eval_stage1"], changed.stdout[-3000:]
    assert "[run] stage2: starting (changed: optim.lr (3e-05 -> 0.0005))" in changed.stdout
    assert "lr: 0.0005" in (run_dir / "config.yaml").read_text()
    # A larger stage-2 max_steps continues stage 2 from its final checkpoint instead of starting it again.
    longer = subprocess.run([*_cmd(run_dir), "stage2.optim.lr=5e-4", "stage2.train.max_steps=6"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)
    assert longer.returncode == 0, longer.stderr[-3000:]
    assert "(step 4)" in longer.stdout and "schedule now runs to step 6" in longer.stdout
    steps = [json.loads(line)["step"] for line in (run_dir / "stage2" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "train"]
    assert steps == [2, 4, 6], steps  # quickstart logs every 2 steps: no step twice, none lost
