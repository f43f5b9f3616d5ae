"""A user's own test file becomes a BEIR set (`gte prep ... split.heldout_fraction=1.0`), `gte eval --data` scores
it, training on it is refused by name, and `gte run` scores extra sets (eval.extra) beside prep's own."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.train.tinydata import ROOT, subprocess_env
from train.app.cli import main as gte


def _write_test_file(path: Path, n: int) -> Path:
    # two positives for every tenth query: a BEIR query may have several relevant documents
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"q": f"which word follows w{i} here", "p": f"the word after w{i} is w{i + 1} today"})
                     + "\n")
            if i % 10 == 0:
                fh.write(json.dumps({"q": f"which word follows w{i} here", "p": f"w{i} is followed by w{i + 1}"})
                         + "\n")
    return path


def _prep_test_set(src: Path, out: Path, *extra: str) -> int:
    return gte(["prep", "configs/prep.yaml", "sources=[]", f"out_dir={out}", "num_proc=1",
                f"files=[{{name: faq, path: {src}, query: q, positive: p}}]", "split.heldout_fraction=1.0", *extra])


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_heldout_fraction_one_turns_a_whole_test_file_into_a_beir_set(tmp_path):
    src = _write_test_file(tmp_path / "test.jsonl", 60)
    out = tmp_path / "faq-test"
    # the cap on held-out queries is for a split; a whole-file test set keeps every query
    assert _prep_test_set(src, out, "split.max_heldout_queries=10") == 0
    beir = out / "beir" / "faq"
    queries = [json.loads(line) for line in _lines(beir / "queries.jsonl")]
    corpus = [json.loads(line) for line in _lines(beir / "corpus.jsonl")]
    qrels = _lines(beir / "qrels" / "test.tsv")
    assert len(queries) == 60 and len(corpus) == 66
    assert qrels[0].split("\t") == ["query-id", "corpus-id", "score"] and len(qrels) == 1 + 66
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["sources"]["faq"]["train"]["rows"] == 0 and manifest["sources"]["faq"]["beir"] == "beir/faq"


def test_gte_eval_scores_the_test_set_and_training_on_it_is_refused(tmp_path, capsys):
    out = tmp_path / "faq-test"
    assert _prep_test_set(_write_test_file(tmp_path / "test.jsonl", 30), out) == 0
    assert gte(["eval", "tiny", "--data", str(out), "--tasks", "beir", "--out", str(tmp_path / "eval")]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert 0 <= results["beir/faq"]["ndcg@10"] <= 1
    capsys.readouterr()
    assert gte(["train", "configs/tiny.yaml", f"data.train_dir={out}", f"run.dir={tmp_path / 'run'}"]) == 2
    assert "faq" in capsys.readouterr().err


def test_gte_run_refuses_an_extra_set_that_does_not_exist(tmp_path, capsys):
    assert gte(["run", "configs/quickstart.yaml", f"run.dir={tmp_path / 'qs'}",
                f"eval.extra=[{tmp_path / 'nowhere'}]"]) == 2
    assert f"eval.extra.0={tmp_path / 'nowhere'}: does not exist" in capsys.readouterr().err


@pytest.mark.slow
def test_gte_run_scores_extra_sets_beside_the_prep_sets(tmp_path):
    test_set = tmp_path / "faq-test"
    assert _prep_test_set(_write_test_file(tmp_path / "test.jsonl", 30), test_set) == 0
    plain_beir = shutil.copytree(test_set / "beir" / "faq", tmp_path / "support")  # a bare BEIR folder
    run_dir = tmp_path / "qs"
    tiny = ["prep.sources=[pydocs]", "prep.max_pairs.default=200", "prep.split.heldout_fraction=0.2",
            "prep.split.max_heldout_queries=20", "prep.num_proc=1", "stage1.model.init_from=tiny",
            "stage1.data.val_rows=0", "stage1.train.global_batch_size=8", "stage1.train.chunk_size=8",
            "stage1.train.chunk_tokens=0", "stage1.train.grad_cache=false", "stage1.train.max_steps=2",
            "stage1.train.precision=fp32", "stage1.optim.warmup_steps=0", "stage1.log.wandb=off",
            "mine.max_queries_per_source=40", "mine.embed.bf16=false", "mine.negatives.fill=random",
            "stage2.data.val_rows=0", "stage2.train.global_batch_size=8", "stage2.train.chunk_size=16",
            "stage2.train.max_steps=2", "stage2.train.precision=fp32", "stage2.optim.warmup_steps=0",
            "stage2.log.wandb=off", "merge.models=[]", "rotate.rows=0", "eval.tasks=[beir]", "eval.bf16=false",
            "eval.beir_sources=[]", "eval.teacher=", "eval.dims=[]", f"eval.extra=[{test_set},{plain_beir}]"]
    run = subprocess.run([sys.executable, "-m", "train.app.cli", "run", "configs/quickstart.yaml",
                          f"run.dir={run_dir}", *tiny], cwd=ROOT, env=subprocess_env(), capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    for model in ("base", "stage1", "stage2"):
        results = json.loads((run_dir / "eval" / model / "results.json").read_text())["results"]
        assert {"beir/pydocs", "beir/faq", "beir/support"} <= set(results), (model, sorted(results))
    assert "beir/support" in (run_dir / "report.md").read_text()


def test_an_extra_set_named_like_a_prep_set_is_refused_naming_both(tmp_path):
    from gte_model.core.config import ConfigError, load_config
    from train.app.pipeline import PipelineConfig, evaluation_sets

    prepped = tmp_path / "faq-test"
    assert _prep_test_set(_write_test_file(tmp_path / "test.jsonl", 20), prepped) == 0
    twin = shutil.copytree(prepped / "beir" / "faq", tmp_path / "other" / "faq")
    cfg = load_config(PipelineConfig, None, [f"run.dir={tmp_path / 'qs'}", f"eval.extra=[{prepped}]"])
    cfg.prep.out_dir = str(prepped)  # as if the pipeline's prep had written it
    cfg.eval.extra = [str(tmp_path / "support")]
    shutil.copytree(twin, tmp_path / "support")
    assert set(evaluation_sets(cfg)) == {"faq", "support"}
    cfg.eval.extra = [str(twin)]
    with pytest.raises(ConfigError, match=r"eval.extra.0=.*other/faq: its set 'faq' has the name of another"):
        evaluation_sets(cfg)
