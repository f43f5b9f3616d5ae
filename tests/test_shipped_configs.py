"""Every config the project ships loads and validates under the schema of the command that reads it, so a renamed
key or a broken rule between keys fails here, not on a user's first run."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.mine import MineConfig
from data_prep.prep import PrepConfig
from gte_model.core.config import load_config
from train.app.pipeline import PipelineConfig
from train.config import TrainConfig
from train.mlm_config import MLMConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SCHEMAS = {
    "quickstart.yaml": PipelineConfig, "distill.yaml": PipelineConfig, "domain.yaml": PipelineConfig,
    "from_scratch.yaml": PipelineConfig, "pretrain.yaml": TrainConfig, "finetune.yaml": TrainConfig,
    "finetune_cpu.yaml": TrainConfig, "tiny.yaml": TrainConfig, "prep.yaml": PrepConfig, "mine.yaml": MineConfig,
    "mlm.yaml": MLMConfig,
}
# what the config's own header says to pass on the command line
REQUIRED = {"mine.yaml": ["input_dir=data/pairs", "out_dir=data/mined"]}


def test_every_shipped_config_has_a_schema_here():
    assert sorted(p.name for p in CONFIGS.glob("*.yaml")) == sorted(SCHEMAS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_shipped_config_loads_and_validates(name):
    cfg = load_config(SCHEMAS[name], CONFIGS / name, REQUIRED.get(name, []))
    if name == "distill.yaml":  # the teacher is tuned, and stage 2 reads it from the run's own cache
        assert cfg.run.tune_teacher and cfg.stage2.teacher.model.endswith("teacher_ft/export")
        assert cfg.stage2.teacher.cache_dir.endswith("teacher_cache") and cfg.stage2.loss.distill_weight > 0
