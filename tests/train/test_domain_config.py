"""configs/domain.yaml: documents in, one `gte run`; the config is sound as shipped and its prep reads documents."""

from __future__ import annotations

from pathlib import Path

from gte_model.core.config import load_config
from train.app.pipeline import PipelineConfig

ROOT = Path(__file__).resolve().parents[2]


def test_domain_config_is_valid_and_reads_documents_held_out_by_document():
    cfg = load_config(PipelineConfig, ROOT / "configs" / "domain.yaml", [f"run.dir={ROOT}/runs/domain-test"])
    assert cfg.validate() == []
    assert cfg.prep.sources == [] and [f.kind for f in cfg.prep.files] == ["documents"]
    assert set(cfg.prep.files[0].documents.makers) == {"title", "cloze", "crop"}
    assert cfg.mine.filter.enabled and cfg.mine.filter.model == cfg.stage1.model.init_from  # round trip: base
    assert cfg.merge.models == ["base", "stage2"] and "sts-b" in cfg.eval.tasks
