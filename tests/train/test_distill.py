"""Distillation from a fine-tuned teacher (`gte run configs/distill.yaml`): the teacher's vectors of every mined
text are cached once (train.teacher.fill_teacher_cache) and training then reads them without running the
teacher; the pipeline fine-tunes the teacher, fills the cache and distils stage 2 from it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gte_model.embed_config import TeacherConfig
from gte_model.export import export_model
from tests.conftest import make_tiny_model
from tests.train.tinydata import write_tiny_pairs
from train.data import PairsData
from train.teacher import TeacherVectors, fill_teacher_cache

ROOT = Path(__file__).resolve().parents[2]


def test_teacher_vectors_are_cached_once_and_training_batches_never_run_the_teacher(tmp_path):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    (tmp_path / "vocab").mkdir()
    export_model(make_tiny_model(tmp_path / "vocab", seed=3), tmp_path / "teacher")
    cfg = TeacherConfig(model=str(tmp_path / "teacher"), max_seq_len=32, bf16=False, shard_size=50,
                        cache_dir=str(tmp_path / "cache"))
    first = fill_teacher_cache(cfg, pairs)
    data = PairsData(pairs, num_negatives=2)
    texts = sum((len(q) + len(d) for q, d in map(data.train_texts, data.names)), 0)
    assert first == {"computed": first["computed"], "reused": texts - first["computed"]} and first["computed"] > 0
    again = fill_teacher_cache(cfg, pairs)
    assert again == {"computed": 0, "reused": texts}  # a re-run embeds nothing

    teacher = TeacherVectors(cfg, tmp_path / "unused")
    batches = [data.train_batch(source, list(range(8)), seed=0, step=5) for source in data.names]
    expected = [teacher.model.encode(b.queries + b.documents(), max_seq_len=32, normalize=True) for b in batches]

    def no_forward(*args, **kwargs):
        raise AssertionError("the teacher ran")

    teacher.model.forward = no_forward  # every text of a training batch must come from the cache
    for batch, want in zip(batches, expected):
        q, d, neg = teacher(batch)
        assert neg is not None and neg.shape == (8, 2, teacher.model.dim)
        got = torch.cat([q, d, neg.reshape(16, -1)]).numpy()
        assert abs(got - want).max() < 2e-3  # the teacher's own vectors (cached as float16)


@pytest.mark.slow
@pytest.mark.integration
def test_distill_pipeline_tunes_the_teacher_caches_its_vectors_and_distils_stage2_from_them(tmp_path):
    (tmp_path / "vocab").mkdir()
    export_model(make_tiny_model(tmp_path / "vocab", seed=3), tmp_path / "teacher")
    run_dir = tmp_path / "distill"
    tiny = [
        "prep.sources=[pydocs,debian]", "prep.max_pairs.default=200", "prep.split.heldout_fraction=0.2",
        "prep.split.max_heldout_queries=30", "prep.num_proc=1",
        "stage1.model.init_from=tiny", "stage1.data.val_rows=0", "stage1.train.global_batch_size=16",
        "stage1.train.chunk_size=16", "stage1.train.max_steps=2", "stage1.train.checkpoint_every=2",
        "stage1.train.precision=fp32", "stage1.optim.warmup_steps=1", "stage1.log.wandb=off",
        "mine.max_queries_per_source=30", "mine.max_corpus_per_source=60", "mine.embed.bf16=false",
        "mine.negatives.margin=0.0", "mine.negatives.max_score=1.0",
        f"teacher_ft.model.init_from={tmp_path / 'teacher'}", "teacher_ft.train.global_batch_size=8",
        "teacher_ft.train.chunk_size=24", "teacher_ft.train.max_steps=2", "teacher_ft.train.checkpoint_every=2",
        "teacher_ft.train.precision=fp32", "teacher_ft.optim.warmup_steps=1", "teacher_ft.log.wandb=off",
        "stage2.teacher.bf16=false", "stage2.data.val_rows=0", "stage2.train.global_batch_size=8",
        "stage2.train.chunk_size=24", "stage2.train.max_steps=2", "stage2.train.checkpoint_every=2",
        "stage2.train.precision=fp32", "stage2.optim.warmup_steps=1", "stage2.log.wandb=off",
        "merge.models=[stage1,stage2]", "rotate.rows=0", "eval.teacher=", "eval.tasks=[beir]", "eval.beir_sources=[]",
        "eval.dims=[16]",
        "eval.quantize=[]", "eval.bf16=false",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "train.app.cli", "run", "configs/distill.yaml", f"run.dir={run_dir}", *tiny]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    order = [line.split()[1].rstrip(":") for line in done.stdout.splitlines() if line.endswith(": starting")
             or ": starting (" in line]
    assert order.index("mine") < order.index("teacher_ft") < order.index("teacher_scores") < order.index("stage2")
    assert "eval_teacher_ft" in order
    stage2 = (run_dir / "stage2" / "config.yaml").read_text()
    assert f"model: {run_dir / 'teacher_ft' / 'export'}" in stage2 and str(run_dir / "teacher_cache") in stage2
    assert " computed, 0 found in " in done.stdout  # the teacher_scores phase filled an empty cache
    assert "| teacher, fine-tuned |" in (run_dir / "report.md").read_text() and (run_dir / "report.png").is_file()

    # stage 2 changed: the teacher's fine-tuning and its cache are kept, and nothing is embedded again
    again = subprocess.run([*cmd, "stage2.optim.lr=1e-4"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    for phase in ("teacher_ft", "teacher_scores", "eval_teacher_ft"):
        assert f"[run] {phase}: done before, skipped" in again.stdout, phase
    assert "[run] stage2: starting" in again.stdout
