"""The best checkpoint and early stopping on the dev curve (train/best.py, train.best_metric, train.patience)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from tests.train.tinydata import train_tiny, write_tiny_pairs
from train.best import best_step, stop_step
from train.metrics import read_metrics

CURVE = [0.40, 0.55, 0.61, 0.58, 0.61, 0.57, 0.52]  # val_ndcg@10 at steps 10, 20, ... 70: best 0.61 first at 30


def _lines(values, metric="val_ndcg@10"):
    return [{"kind": "eval", "step": 10 * (i + 1), metric: v} for i, v in enumerate(values)]


def test_best_step_is_the_highest_value_the_earlier_step_on_a_tie():
    assert best_step(_lines(CURVE), "val_ndcg@10") == 30


def test_best_step_of_val_loss_is_the_lowest():
    assert best_step(_lines([3.0, 2.1, 2.5, 2.1], "val_loss"), "val_loss") == 20
    assert best_step([{"kind": "eval", "step": 5, "val_batches": 0}], "val_loss") is None


@pytest.mark.parametrize("patience, step", [(1, 40), (2, 50), (3, 60), (4, 70), (5, None)])
def test_early_stop_comes_at_the_patience_th_evaluation_without_a_new_best(patience, step):
    assert stop_step(_lines(CURVE), "val_ndcg@10", patience) == step


def _evals(run_dir) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "eval"]


def _weights(folder) -> dict:
    return load_file(str(next(folder.rglob("model.safetensors"))))


RUN = ("train.eval_every=2", "train.checkpoint_every=0", "train.keep_checkpoints=1", "data.val_rows=16",
       "train.best_metric=val_loss", "optim.lr=0.05", "optim.warmup_steps=0")


def test_export_is_the_best_steps_model_and_its_checkpoint_is_kept(tmp_path, one_thread):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    run = tmp_path / "run"
    assert train_tiny(run, pairs, *RUN, "train.max_steps=8") == 0
    best = best_step(_evals(run), "val_loss")
    record = json.loads((run / "gte_record.json").read_text())
    assert record["stats"]["best_step"] == best
    kept = run / "checkpoints" / f"step-{best:07d}"
    assert kept.is_dir()  # kept besides the newest one (keep_checkpoints=1)
    ckpt, export = _weights(kept), _weights(run / "export")
    assert all(ckpt[k].equal(v) for k, v in export.items() if k in ckpt) and len(export) > 0


def test_patience_stops_the_run_at_the_stated_step_and_a_continued_run_keeps_the_best_so_far(tmp_path, one_thread):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    run = tmp_path / "run"
    assert train_tiny(run, pairs, *RUN, "train.max_steps=4", "train.patience=2") == 0
    first = _evals(run)
    assert train_tiny(run, pairs, *RUN, "train.max_steps=12", "train.patience=2") == 0
    evals = _evals(run)
    assert evals[: len(first)] == first  # the continued run starts from the finished run's curve
    record = json.loads((run / "gte_record.json").read_text())
    assert record["stats"]["best_step"] == best_step(evals, "val_loss")
    stop = stop_step(evals, "val_loss", 2)
    assert record["stats"]["step"] == (stop or 12) == evals[-1]["step"]
