"""What a training run is made of, as `gte train` sees it (issue 21 findings 12, 14, 15; issue 22's weights identity):
an identical copy of its data is the same data, a damaged shard is refused, a sharded starting model that changes
is noticed, and a pairs dir too small for one batch is refused in one line instead of a traceback."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest
from safetensors.torch import load_file, save_file

from tests.train.tinydata import train_tiny, write_tiny_pairs

SHORT = ("train.max_steps=3", "train.checkpoint_every=0", "train.eval_every=0", "optim.warmup_steps=1",
         "data.val_rows=0")


pytestmark = pytest.mark.usefixtures("one_thread")


def train(run_dir, pairs, *overrides) -> int:
    return train_tiny(run_dir, pairs, *SHORT, *overrides)


def test_a_finished_run_is_the_same_run_on_an_identical_copy_of_its_data_and_continues_on_it(tmp_path, capsys):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    assert train(tmp_path / "run", pairs) == 0
    copy = shutil.copytree(pairs, tmp_path / "copy", copy_function=shutil.copy)  # `cp -r`: new file times
    capsys.readouterr()
    assert train(tmp_path / "run", copy) == 0
    assert "finished already" in capsys.readouterr().out
    assert train(tmp_path / "run", copy, "train.max_steps=5") == 0  # continued, not refused
    assert "(step 3)" in capsys.readouterr().out


def test_a_shard_damaged_after_prep_is_refused_before_training(tmp_path, capsys):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    shard = pairs / "beta" / "train-00000.parquet"
    table = pq.read_table(shard)
    texts = table.column("query").to_pylist()
    texts[5] = texts[5][::-1]  # same rows, same schema, other words: a valid file, the wrong content
    pq.write_table(table.set_column(0, "query", [texts]), shard)
    assert train(tmp_path / "run", pairs) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gte train: {shard}: its bytes differ from the sha256 recorded for it") and "\n" not in err
    assert not (tmp_path / "run" / "export").exists()


def _sharded_model(folder):
    """A tiny exported model whose weights are a sharded checkpoint: model.safetensors.index.json + shards."""
    from transformers import AutoModel

    from gte_model.export import export_model
    from tests.conftest import make_tiny_model

    folder.mkdir()
    export = export_model(make_tiny_model(folder, seed=2), folder / "init")
    AutoModel.from_pretrained(str(export)).save_pretrained(str(export), max_shard_size="40KB")
    (export / "model.safetensors").unlink(missing_ok=True)
    shards = sorted(export.glob("model-*.safetensors"))
    assert (export / "model.safetensors.index.json").is_file() and len(shards) > 1
    return export, shards


def test_a_changed_sharded_starting_model_is_noticed(tmp_path, capsys):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    init, shards = _sharded_model(tmp_path / "model")
    assert train(tmp_path / "run", pairs, f"model.init_from={init}") == 0
    tensors = load_file(shards[-1])
    save_file({k: v + 0.01 for k, v in tensors.items()}, shards[-1], metadata={"format": "pt"})  # retrained
    capsys.readouterr()
    assert train(tmp_path / "run", pairs, f"model.init_from={init}") == 2
    err = capsys.readouterr().err
    assert "input model.init_from (model.safetensors.index.json:sha256=" in err
    assert "point model.init_from back at what the run started from" in err


def test_a_source_smaller_than_one_batch_is_refused_in_one_line(tmp_path, capsys):
    pairs = write_tiny_pairs(tmp_path / "pairs")  # sources of 96, 64 and 48 train rows
    assert train(tmp_path / "run", pairs, "train.global_batch_size=64", "train.chunk_size=16") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gte train: data.train_dir={pairs}: source(s) {{'gamma': 48}} hold fewer train rows than "
                          "train.global_batch_size=64") and "data.sources=" in err and "\n" not in err
