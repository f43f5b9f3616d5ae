"""The model card's Hub metadata (gte_model.card): front matter that YAML reads, model-index from the pipeline's own
evaluation results, base_model, license, datasets by name, the recipe, the rotation and ONNX sections; and
`gte export --push` refusing in one line where it cannot upload."""

from __future__ import annotations

import json

import pytest
import yaml

from gte_model.card import render_card
from gte_model.core.errors import UserError
from gte_model.export import export_main, export_model, update_eval_results
from tests.conftest import make_tiny_model


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_front_matter_holds_the_hub_metadata_and_the_evaluation_results(tmp_path):
    (tmp_path / "pairs").mkdir()
    (tmp_path / "pairs" / "manifest.json").write_text(json.dumps({"sources": {"gcide": {}, "debian": {}}}))
    meta = {"name": "my-gte", "base_model": "all-MiniLM-L6-v2", "dim": 384, "pooling": "mean", "rotated": True,
            "train_config": {"data": {"train_dir": str(tmp_path / "pairs"), "sources": []},
                             "optim": {"lr": 3e-5}, "loss": {"kind": "gte", "temperature": 0.02}},
            "eval_results": {"beir/debian": {"ndcg@10": 0.93801, "mrr@10": 0.9, "queries": 199},
                             "beir/debian@128": {"ndcg@10": 0.9}, "beir/debian@int8": {"ndcg@10": 0.93},
                             "sts-b": {"cosine_spearman": 0.82}},
            "onnx": {"files": {"fp32": "onnx/model.onnx", "int8": "onnx/model_qint8.onnx"}}}
    card = render_card(meta)
    front = _front_matter(card)
    assert front["pipeline_tag"] == "sentence-similarity" and front["library_name"] == "sentence-transformers"
    assert front["base_model"] == "sentence-transformers/all-MiniLM-L6-v2" and front["license"] == "apache-2.0"
    assert front["datasets"] == ["debian", "gcide"]  # every source of the manifest the run trained on
    (entry,) = front["model-index"]
    assert entry["name"] == "my-gte"
    results = {(r["task"]["type"], r["dataset"]["name"]): {m["type"]: m["value"] for m in r["metrics"]}
               for r in entry["results"]}
    # full-dim float results only: the truncated and quantized rows stay in the table, the counts out
    assert results == {("Retrieval", "debian"): {"ndcg_at_10": 0.938, "mrr_at_10": 0.9},
                       ("STS", "sts-b"): {"cosine_spearman": 0.82}}
    assert "| beir/debian@int8 | ndcg@10 | 0.9300 |" in card
    assert "| optim.lr | 3e-05 |" in card and "| loss.kind | \"gte\" |" in card
    assert "## The rotation" in card and "truncate_dim=128" in card
    assert "## ONNX" in card and "'file_name': 'onnx/model_qint8.onnx'" in card


def test_a_local_base_model_gets_no_hub_id_nor_a_guessed_license(tmp_path):
    front = _front_matter(render_card({"base_model": "/data/my-model", "dim": 32}))
    assert "base_model" not in front and "license" not in front and "model-index" not in front


def test_exported_card_gets_model_index_once_gte_eval_writes_results(tmp_path):
    out = export_model(make_tiny_model(tmp_path), tmp_path / "tiny-gte")
    front = _front_matter((out / "README.md").read_text())
    assert front["license"] == "apache-2.0" and "model-index" not in front  # a preset: random weights, our license
    update_eval_results(out, {"beir/toy": {"ndcg@10": 0.5, "queries": 2}})
    front = _front_matter((out / "README.md").read_text())
    assert front["model-index"][0]["name"] == "tiny-gte"
    assert front["model-index"][0]["results"][0]["metrics"] == [{"type": "ndcg_at_10", "value": 0.5}]


def test_push_offline_keeps_the_export_and_says_how_to_push_later(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "export"
    with pytest.raises(UserError, match=rf"--push me/gte: HF_HUB_OFFLINE is set.*`hf upload me/gte {out}`"):
        export_main(["tiny", str(out), "--push", "me/gte"])
    assert (out / "model.safetensors").is_file()  # the export is complete before the upload is tried


def test_push_without_a_token_says_so_in_one_line(tmp_path, monkeypatch):
    from gte_model.hub import push_folder

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # huggingface_hub reads HF_HUB_OFFLINE and the token file's place once, at import (tests import it offline)
    monkeypatch.setattr("huggingface_hub.is_offline_mode", lambda: False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(UserError, match=r"--push me/gte: no Hugging Face token \(HF_TOKEN, or `hf auth login`\)"):
        push_folder(tmp_path, "me/gte")
