"""What `gte mine` does with its output folder and its input: atomic rebuilds that keep the embedding cache, the
completion record as the one answer to "already done?", and clear refusals of inputs it cannot mine."""

from __future__ import annotations

import json
import os

import pytest

from data_prep import mine_sources
from data_prep.mine import embed_cache_dir, mine, mine_record, model_digest
from gte_model.core.errors import UserError
from gte_model.core.pairs import PairsFormatError
from gte_model.core.record import RECORD_FILE, StaleOutput, read_record
from gte_model.export import export_model
from tests.conftest import make_tiny_model
from tests.data_prep.helpers import mine_config, read_rows, sentences, write_pairs_dir


def _files(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _leftovers(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# ---- finding 6: interrupted rebuilds, the cache, what mine may replace ----------------------------------------
def test_an_interrupted_overwrite_keeps_the_old_output_and_the_embedding_cache(tmp_path, pairs_dir, tiny_model,
                                                                               monkeypatch):
    cfg = mine_config(tmp_path, pairs_dir, "mined", **{"embed.cache_dir": ""})
    out = mine(cfg, tiny_model)
    before = _files(out)
    cache = embed_cache_dir(cfg)
    assert cache == tmp_path / ".mined.embed_cache" and any(cache.rglob("*.npy"))  # beside the output, not in it
    real_write = mine_sources.write_source
    calls = []

    def write_then_die(*args, **kwargs):
        calls.append(real_write(*args, **kwargs))
        raise KeyboardInterrupt  # killed after the first source's new shards were written

    monkeypatch.setattr(mine_sources, "write_source", write_then_die)
    cfg.overwrite, cfg.negatives.k = True, 2
    with pytest.raises(KeyboardInterrupt):
        mine(cfg, tiny_model)
    assert calls and _files(out) == before and not _leftovers(tmp_path)
    monkeypatch.setattr(mine_sources, "write_source", real_write)
    mine(cfg, tiny_model)
    stats = json.loads((out / "mine_stats.json").read_text())["sources"]
    assert all(s["embedded_texts"] == 0 and s["cached_texts"] > 0 for s in stats.values())  # the cache survived
    assert max(len(r["negatives"]) for r in read_rows(out)) == 2


@pytest.mark.parametrize("overwrite", [False, True])
def test_mine_never_replaces_a_folder_it_did_not_write(tmp_path, pairs_dir, tiny_model, overwrite):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "todo.txt").write_text("keep me")
    with pytest.raises(UserError, match=rf"out_dir={out}: the folder is not empty and was not written by gte"):
        mine(mine_config(tmp_path, pairs_dir, "notes", overwrite=overwrite), tiny_model)
    assert [p.name for p in out.iterdir()] == ["todo.txt"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_mine_never_replaces_a_prep_output(tmp_path, pairs_dir, tiny_model, overwrite):
    from data_prep.prep import prep
    from tests.data_prep.helpers import prep_config, write_prep_sources

    write_prep_sources(tmp_path)
    prepped = prep(prep_config(tmp_path, tmp_path / "prepped"))
    before = _files(prepped)
    with pytest.raises(UserError, match=r"out_dir=.*prepped: holds the output of `gte prep`, which `gte mine` never "
                                        r"replaces; nothing was deleted"):
        mine(mine_config(tmp_path, pairs_dir, "prepped", overwrite=overwrite), tiny_model)
    assert _files(prepped) == before


def test_mine_refuses_an_input_without_a_completion_record(tmp_path, pairs_dir, tiny_model):
    (pairs_dir / RECORD_FILE).unlink()  # what an interrupted prep (or a hand copy) leaves
    with pytest.raises(PairsFormatError, match=r"input_dir=.*unfinished pairs dir"):
        mine(mine_config(tmp_path, pairs_dir, "mined"), tiny_model)
    assert not (tmp_path / "mined").exists()


# ---- finding 4: "already done?" from the record ---------------------------------------------------------------
def test_mine_refuses_an_output_mined_from_another_version_of_its_input(tmp_path, pairs_dir, tiny_model):
    cfg = mine_config(tmp_path, pairs_dir, "mined", sources=["beta"])
    mine(cfg, tiny_model)
    write_pairs_dir(tmp_path / "pairs2", {"beta": list(zip(sentences(30, 5), sentences(30, 6)))})
    os.replace(pairs_dir, tmp_path / "old_pairs")
    os.replace(tmp_path / "pairs2", pairs_dir)  # the input rebuilt in place with other data
    with pytest.raises(StaleOutput, match=r"input input_dir .*overwrite=true"):
        mine(cfg, tiny_model)


def test_mine_overwrite_rebuilds_even_a_complete_output_of_the_same_config(tmp_path, pairs_dir, tiny_model):
    cfg = mine_config(tmp_path, pairs_dir, "mined", sources=["beta"])
    out = mine(cfg, tiny_model)
    os.utime(out / RECORD_FILE, ns=(0, 0))
    cfg.overwrite = True
    mine(cfg, tiny_model)
    assert (out / RECORD_FILE).stat().st_mtime_ns != 0 and read_record(out).kind == "mine"


def test_the_record_follows_the_model_weights_not_its_name(tmp_path, pairs_dir, tiny_model):
    folder = export_model(tiny_model, tmp_path / "model")
    first = model_digest(str(folder))
    assert first.startswith("model.safetensors:sha256=")
    assert model_digest("all-MiniLM-L6-v2") == "name:all-MiniLM-L6-v2"
    (tmp_path / "other").mkdir()
    export_model(make_tiny_model(tmp_path / "other", seed=1), folder, overwrite=True)  # retrained, same folder
    assert model_digest(str(folder)) != first
    cfg = mine_config(tmp_path, pairs_dir, "mined", model=str(folder))
    assert mine_record(cfg).inputs["model"] == model_digest(str(folder))
    cfg.index.num_threads, cfg.embed.batch_size = 3, 7  # speed only: the same record
    assert mine_record(cfg) == mine_record(mine_config(tmp_path, pairs_dir, "mined", model=str(folder)))


# ---- finding 8: nothing to mine -------------------------------------------------------------------------------
def test_mine_on_an_input_without_train_rows_says_so_before_loading_a_model(tmp_path):
    empty = write_pairs_dir(tmp_path / "pairs", {"alpha": []})
    cfg = mine_config(tmp_path, empty, "mined", model=str(tmp_path / "no_such_model"))
    with pytest.raises(UserError, match=r"input_dir=.*\['alpha'\] have no train rows to mine; re-run `gte prep`"):
        mine(cfg)
    assert not (tmp_path / "mined").exists()


def test_mine_skips_a_source_without_train_rows_and_mines_the_others(tmp_path, tiny_model):
    rows = list(zip(sentences(30, 5), sentences(30, 6)))
    pairs = write_pairs_dir(tmp_path / "pairs", {"alpha": rows})
    manifest = json.loads((pairs / "manifest.json").read_text())
    manifest["sources"]["empty"] = {"train": {"files": [], "rows": 0}, "heldout": {"files": [], "rows": 0}}
    (pairs / "manifest.json").write_text(json.dumps(manifest))
    out = mine(mine_config(tmp_path, pairs, "mined"), tiny_model)
    stats = json.loads((out / "mine_stats.json").read_text())["sources"]
    assert stats["empty"]["skipped"] == "has no train rows" and stats["alpha"]["queries_mined"] == 30
