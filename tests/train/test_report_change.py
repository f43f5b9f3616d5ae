"""The pipeline report says which held-out sets and general checks the final model gained or lost on."""

from __future__ import annotations

import json

from train.app.report import write_report


def _plant(root, stage: str, results: dict) -> None:
    folder = root / "eval" / stage
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"results": results}))


def test_report_lists_what_the_final_model_gained_and_lost_against_the_base(tmp_path):
    _plant(tmp_path, "base", {"sts-b": {"cosine_spearman": 0.82}, "beir/a": {"ndcg@10": 0.5},
                              "beir/b": {"ndcg@10": 0.7}, "beir/c": {"ndcg@10": 0.4}, "beir/a@64": {"ndcg@10": 0.1}})
    _plant(tmp_path, "merged", {"sts-b": {"cosine_spearman": 0.815}, "beir/a": {"ndcg@10": 0.56},
                                "beir/b": {"ndcg@10": 0.69}, "beir/c": {"ndcg@10": 0.4},
                                "beir/a@64": {"ndcg@10": 0.3}})
    report = write_report(tmp_path, general_check=True).read_text()
    assert ("Final model against the base: gained on beir/a +0.0600; lost on sts-b -0.0050, beir/b -0.0100."
            in report)
