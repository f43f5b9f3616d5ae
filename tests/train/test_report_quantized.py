"""The pipeline report (train.app.report) shows the final model's int8 / binary retrieval results beside the
truncation table and in report.png, from the results.json files `gte run` writes (planted here)."""

from __future__ import annotations

import json

from train.app.pipeline import PipelineConfig
from train.app.report import write_report


def _plant(root, stage: str, results: dict) -> None:
    folder = root / "eval" / stage
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"results": {k: {"ndcg@10": v} for k, v in results.items()}}))


def test_report_has_a_quantized_table_for_the_final_model_beside_the_truncation_table(tmp_path):
    _plant(tmp_path, "stage1", {"beir/a": 0.6, "beir/b": 0.4, "beir/a@16": 0.5, "beir/b@16": 0.3})
    _plant(tmp_path, "merged", {
        "beir/a": 0.8, "beir/b": 0.6, "beir/a@16": 0.7, "beir/b@16": 0.5,
        "beir/a@int8": 0.78, "beir/b@int8": 0.58, "beir/a@16+int8": 0.66, "beir/b@16+int8": 0.5,
        "beir/a@binary": 0.7, "beir/b@binary": 0.5, "beir/a@16+binary": 0.6, "beir/b@16+binary": 0.4,
    })
    report = (write_report(tmp_path, rotated=True)).read_text()
    truncated = report.index("### Truncated embeddings")
    quantized = report.index("### Quantized embeddings")
    assert truncated < quantized
    # the truncation table keeps float dims only: stage 1 and the final model, full and 16
    assert "| merged (final, rotated) | 0.7000 | 0.6000 (85.7%) |" in report[truncated:quantized]
    rows = [line for line in report[quantized:].splitlines() if line.startswith("| merged")]
    # means over the two sets, each share of the float full-dim mean 0.7 (hand computed)
    assert rows == [
        "| merged (final, rotated) | float32 | 0.7000 (100.0%) | 0.6000 (85.7%) |",
        "| merged (final, rotated) | int8 | 0.6800 (97.1%) | 0.5800 (82.9%) |",
        "| merged (final, rotated) | binary (rescored) | 0.6000 (85.7%) | 0.5000 (71.4%) |",
    ]
    assert "| stage 1 |" not in report[quantized:report.index("## Wall time")]  # scored in float only
    assert (tmp_path / "report.png").stat().st_size > 0  # the figure draws the int8 / binary lines too


def test_report_without_quantized_results_has_no_quantized_table(tmp_path):
    _plant(tmp_path, "stage2", {"beir/a": 0.8, "beir/a@16": 0.7})
    report = write_report(tmp_path).read_text()
    assert "### Truncated embeddings" in report and "Quantized" not in report


def test_eval_quantize_names_a_precision_and_needs_retrieval():
    cfg = PipelineConfig()
    cfg.eval.quantize, cfg.eval.tasks = ["int8", "int4"], ["sts-b"]
    problems = [p for p in cfg.validate() if p.startswith("eval.quantize")]
    assert problems == [
        "eval.quantize=['int8', 'int4']: 'int4' is not a precision; choose from int8, binary",
        "eval.quantize=['int8', 'int4']: scores retrieval only and eval.tasks has no beir; add beir to eval.tasks "
        "or set eval.quantize=[]",
    ]
