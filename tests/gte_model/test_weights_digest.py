"""What identifies a model's weights (issue 22): gte_model.load.weights_digest, the one definition that training
(model.init_from) and mining (model, filter.model, teacher.model) record: the bytes of every file the loader reads."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoModel

from gte_model.assets import ModelLoadError
from gte_model.core.record import folder_digest
from gte_model.export import export_model
from gte_model.load import weight_files, weights_digest
from gte_model.rotate import rotated


def test_a_single_file_export_keeps_the_digest_older_records_hold(tmp_path, tiny_model):
    folder = export_model(tiny_model, tmp_path / "model")
    assert weights_digest(folder) == folder_digest(folder, ("model.safetensors",))  # no rebuild after an upgrade


def test_a_sharded_checkpoint_is_its_index_and_every_shard(tmp_path, tiny_model):
    folder = export_model(tiny_model, tmp_path / "model")
    AutoModel.from_pretrained(str(folder)).save_pretrained(str(folder), max_shard_size="40KB")
    (folder / "model.safetensors").unlink()
    files = weight_files(folder)
    assert files[0].name == "model.safetensors.index.json" and len(files) > 2
    before = weights_digest(folder)
    assert before.startswith("model.safetensors.index.json:sha256=")
    data = bytearray(files[-1].read_bytes())
    data[-1] ^= 1  # one bit of the last shard's last tensor
    files[-1].write_bytes(bytes(data))
    assert weights_digest(folder) != before
    files[-1].unlink()
    with pytest.raises(ModelLoadError, match=rf"{files[0]}: names missing shards \['{files[-1].name}'\]"):
        weights_digest(folder)


def test_a_rotated_export_differs_from_its_unrotated_weights(tmp_path, tiny_model):
    plain = export_model(tiny_model, tmp_path / "plain")
    dim = tiny_model.backbone.config.hidden_size
    turned = export_model(rotated(tiny_model, np.eye(dim, dtype=np.float32)[::-1].copy()), tmp_path / "turned")
    assert weights_digest(turned).startswith(weights_digest(plain) + ",rotation:sha256=")
