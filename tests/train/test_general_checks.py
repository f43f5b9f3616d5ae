"""Per-source loss in metrics.jsonl and the report, and the general checks (STS-B, long-text) in the pipeline's
merge-weight fit and report (issue 23)."""

from __future__ import annotations

import json

import pytest

from gte_model.merge import fit_weights
from tests.conftest import make_tiny_model
from tests.train.tinydata import train_tiny, write_tiny_pairs
from train.app.pipeline import PipelineConfig, general_scorers
from train.app.report import write_report
from train.eval.long_text import evaluate_long_text_dims
from train.eval.sts import evaluate_sts
from train.metrics import SOURCE_LOSS, read_metrics, source_curves


def _train_lines(run_dir) -> list[dict]:
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "train"]


def test_a_line_of_several_steps_carries_the_mean_loss_of_each_source_it_saw(tmp_path, one_thread):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    common = ("train.max_steps=8", "train.checkpoint_every=0", "data.val_rows=0", "train.eval_every=0")
    assert train_tiny(tmp_path / "every", pairs, *common, "train.log_every=1") == 0
    assert train_tiny(tmp_path / "pairs_of", pairs, *common, "train.log_every=2") == 0
    steps = {r["step"]: (r["source"], r["loss"]) for r in _train_lines(tmp_path / "every")}
    lines = _train_lines(tmp_path / "pairs_of")
    assert len(lines) == 4 and len({s for s, _ in steps.values()}) > 1
    for line in lines:
        want: dict[str, list[float]] = {}
        for step in (line["step"] - 1, line["step"]):
            want.setdefault(steps[step][0], []).append(steps[step][1])
        got = {k[len(SOURCE_LOSS):]: v for k, v in line.items() if k.startswith(SOURCE_LOSS)}
        assert got.keys() == want.keys()
        for source, losses in want.items():
            assert got[source] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    curves = source_curves(lines)
    assert sum(len(at) for at, _ in curves.values()) == sum(
        len([k for k in r if k.startswith(SOURCE_LOSS)]) for r in lines)


def test_curves_of_lines_written_before_the_per_source_keys_use_their_own_source():
    old = [{"step": 2, "loss": 3.0, "source": "a"}, {"step": 4, "loss": 1.0, "source": "b"},
           {"step": 6, "loss": 2.0, "source": "a"}]
    assert source_curves(old) == {"a": ([2, 6], [3.0, 2.0]), "b": ([4], [1.0])}


def test_merge_fit_counts_a_scorer_as_a_task(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a, b = make_tiny_model(tmp_path / "a", seed=0), make_tiny_model(tmp_path / "b", seed=1)
    target = next(iter(b.backbone.parameters())).detach().clone()

    def closeness_to_b(model) -> float:  # 0 at model b, lower the further the merged weights are from it
        return -float((next(iter(model.backbone.parameters())).detach() - target).abs().sum())

    best, table = fit_weights([a, b], {}, step=0.25, scorers={"near-b": closeness_to_b}, log=lambda _: None)
    assert best == (0.0, 1.0) and set(table[(0.5, 0.5)]) == {"near-b"}


def test_pipeline_general_checks_join_the_merge_fit_on_their_dev_splits(tmp_path, tiny_model):
    cfg = PipelineConfig()
    cfg.prep.sources, cfg.eval.tasks = ["debian"], ["sts-b", "long-text", "beir"]
    scorers = general_scorers(cfg)
    assert set(scorers) == {"sts-b/dev", "long-text/dev"}
    assert scorers["long-text/dev"](tiny_model) == pytest.approx(
        evaluate_long_text_dims(tiny_model, None, "dev")[tiny_model.dim]["cosine_spearman"], abs=1e-4)
    assert scorers["sts-b/dev"](tiny_model) == pytest.approx(evaluate_sts(tiny_model, "dev")["cosine_spearman"],
                                                             abs=1e-4)
    cfg.prep.sources, cfg.eval.tasks = ["stsb"], ["sts-b", "beir"]  # STS-B trained on: no longer a general check
    assert general_scorers(cfg) == {}


def test_report_shows_the_long_text_check_beside_sts_b(tmp_path):
    for stage, (sts, long) in {"base": (0.82, 0.73), "stage2": (0.81, 0.70)}.items():
        (tmp_path / "eval" / stage).mkdir(parents=True)
        results = {"sts-b": {"cosine_spearman": sts}, "long-text": {"cosine_spearman": long},
                   "beir/x": {"ndcg@10": 0.5}}
        (tmp_path / "eval" / stage / "results.json").write_text(json.dumps({"results": results}))
    text = write_report(tmp_path, general_check=True).read_text()
    assert "General check for long texts" in text and "base 0.7300 -> final 0.7000 (-0.0300)" in text
    assert "| long-text | cosine_spearman | 0.7300 | 0.7000 |" in text and "long-text -0.0300" in text
