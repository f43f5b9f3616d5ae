"""`gte run configs/domain.yaml` end to end on a folder of planted documents and no queries: passages, the no-model
query makers, stage 1 (one epoch), mining behind the round-trip filter, stage 2, the merge fit on the dev split and the
evaluation on documents held out."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import WORDS

ROOT = Path(__file__).resolve().parents[2]


def _documents(folder: Path, n: int = 30) -> None:
    rng = random.Random(0)
    folder.mkdir()
    for i in range(n):
        topic = rng.sample(WORDS, 3)
        sections = []
        for s in range(3):
            heading = " ".join(rng.sample(topic + rng.sample(WORDS, 2), 4))
            sentences = [" ".join([*rng.sample(topic, 2), *rng.sample(WORDS, 6)]) + "." for _ in range(6)]
            sections.append(f"## {heading}\n\n{' '.join(sentences)}\n")
        (folder / f"doc{i:02d}.md").write_text(f"# {' '.join(topic)} guide {i}\n\n" + "\n".join(sections))


@pytest.mark.slow
@pytest.mark.integration
def test_domain_pipeline_adapts_a_model_from_documents_alone_and_scores_it_on_held_out_documents(tmp_path):
    _documents(tmp_path / "docs")
    run_dir = tmp_path / "domain"
    tiny = [
        f"prep.files.0.path={tmp_path / 'docs'}", "prep.files.0.documents.passage_tokens=40",
        "prep.files.0.documents.overlap_tokens=8", "prep.split.heldout_fraction=0.2", "prep.num_proc=1",
        "stage1.model.init_from=tiny", "stage1.train.global_batch_size=8", "stage1.train.chunk_size=8",
        "stage1.train.checkpoint_every=2", "stage1.train.precision=fp32",
        "stage1.optim.warmup_steps=1", "stage1.log.wandb=off",
        "mine.embed.bf16=false", "mine.filter.embed.bf16=false", "mine.filter.top_k=5",
        "stage2.train.global_batch_size=4", "stage2.train.chunk_size=12", "stage2.train.max_steps=2",
        "stage2.train.checkpoint_every=2", "stage2.train.precision=fp32", "stage2.optim.warmup_steps=1",
        "stage2.log.wandb=off", "merge.models=[stage1,stage2]", "eval.tasks=[beir]", "eval.bf16=false",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "train.app.cli", "run", "configs/domain.yaml", f"run.dir={run_dir}", *tiny]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((run_dir / "data" / "pairs" / "manifest.json").read_text())
    assert list(manifest["sources"]) == ["docs"]
    keys = {split: {k for f in (run_dir / "data" / "pairs" / "docs").glob(f"{split}-*.parquet")
                    for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()}
            for split in ("train", "heldout")}
    assert keys["train"] and keys["heldout"] and not keys["train"] & keys["heldout"]  # held out by document
    for stage in ("base", "stage1", "stage2", "merged"):
        results = json.loads((run_dir / "eval" / stage / "results.json").read_text())["results"]
        assert 0.0 <= results["beir/docs"]["ndcg@10"] <= 1.0, stage
    report = (run_dir / "report.md").read_text()
    assert "beir/docs" in report
    # stage 1: one epoch of the train pairs (train.epochs=1), whatever train.max_steps says
    rows = manifest["sources"]["docs"]["train"]["rows"]
    assert json.loads((run_dir / "stage1" / "gte_record.json").read_text())["stats"]["step"] == rows // 8
    # the merge weights: fit on prep's dev rows (documents neither trained on nor evaluated), every grid point listed
    merge = json.loads((run_dir / "merged" / "gte_export.json").read_text())["train_config"]["merge"]
    assert merge["fit_split"] == "dev" and {"0.0,1.0", "1.0,0.0"} <= set(merge["fit"])
    assert list(merge["fit"]["0.0,1.0"]) == ["pairs/docs"] and "## Merge" in report and "| 0.0 / 1.0 |" in report
    dev = {k for f in (run_dir / "data" / "pairs" / "docs").glob("dev-*.parquet")
           for k in pq.read_table(f, columns=["key"]).column("key").to_pylist()}
    assert dev and not dev & (keys["train"] | keys["heldout"])
