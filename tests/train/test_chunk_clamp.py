"""A smaller batch never fails on train.chunk_size: with the gradient cache on and a chunk that holds every text of
a step, training runs one plain chunk (a notice says so) and gives the same losses as train.grad_cache=false."""

from __future__ import annotations

import json

from tests.train.tinydata import tiny_args, write_tiny_pairs
from train.app.cli import main as gte


def _losses(run_dir) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in lines if r.get("kind") == "train"]


def test_a_chunk_larger_than_the_step_is_clamped_with_a_notice_and_trains_like_no_cache(tmp_path, capsys):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    common = ("train.global_batch_size=8", "train.max_steps=3", "train.eval_every=0", "data.val_rows=0",
              "train.checkpoint_every=0", "optim.warmup_steps=1")
    assert gte(["train", *tiny_args(tmp_path / "clamped", pairs, "train.chunk_size=128", *common)]) == 0
    out = capsys.readouterr().out
    assert "train.chunk_size=128 clamped to the 24 texts one process encodes per step" in out
    assert gte(["train", *tiny_args(tmp_path / "plain", pairs, "train.chunk_size=128", "train.grad_cache=false",
                                    *common)]) == 0
    assert "clamped" not in capsys.readouterr().out
    assert _losses(tmp_path / "clamped") == _losses(tmp_path / "plain") and len(_losses(tmp_path / "plain")) == 3
