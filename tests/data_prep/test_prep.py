"""End to end: two small user sources -> a valid pairs dir (manifest, shards, BEIR), decontaminated, key-split."""

from __future__ import annotations

import json

import pytest

from data_prep.prep import PrepConfig, main, prep
from gte_model.core.config import load_config
from gte_model.core.record import StaleOutput
from tests.data_prep.helpers import PREP_OVERRIDES, prep_config, prep_files_arg, shard_rows, write_prep_sources

pytestmark = pytest.mark.integration


def test_prep_of_two_sources_writes_valid_manifest_and_beir(tmp_path):
    planted = write_prep_sources(tmp_path)
    out = prep(prep_config(tmp_path, tmp_path / "pairs", **{"dedup.match": "{faq: positive}"}))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "gte-pairs/1" and set(manifest["sources"]) == {"faq", "notes"}
    for name, entry in manifest["sources"].items():
        train, heldout = shard_rows(out, entry["train"]["files"]), shard_rows(out, entry["heldout"]["files"])
        assert len(train) == entry["train"]["rows"] > 0 and len(heldout) == entry["heldout"]["rows"] > 0
        assert not {r["key"] for r in train} & {r["key"] for r in heldout}
        assert set(train[0]) == {"query", "positive", "negatives", "source", "key"}
        beir = out / entry["beir"]
        corpus = {json.loads(x)["_id"] for x in (beir / "corpus.jsonl").read_text().splitlines()}
        queries = {json.loads(x)["_id"] for x in (beir / "queries.jsonl").read_text().splitlines()}
        qrels = (beir / "qrels" / "test.tsv").read_text().splitlines()
        assert qrels[0] == "query-id\tcorpus-id\tscore" and len(queries) <= 12
        assert all(q in queries and d in corpus for q, d, _ in (line.split("\t") for line in qrels[1:]))
        stats = manifest["stats"][name]
        assert stats["train"] == entry["train"]["rows"] and stats["heldout_pairs"] == entry["heldout"]["rows"]
    faq_train = shard_rows(out, manifest["sources"]["faq"]["train"]["files"])
    assert planted not in {r["query"] for r in faq_train}
    assert manifest["stats"]["faq"]["decontaminated"] >= 1
    assert manifest["stats"]["faq"]["near_dups_within"] == 1
    assert (out / "report.md").exists() and (out / "lengths.png").stat().st_size > 0
    assert manifest["peak_rss_mb"]["main"] > 0 and "alpha" in manifest


def test_rerun_of_a_complete_output_is_a_noop_and_other_config_is_refused(tmp_path):
    write_prep_sources(tmp_path)
    cfg = prep_config(tmp_path, tmp_path / "pairs")
    out = prep(cfg)
    before = (out / "manifest.json").stat().st_mtime_ns
    assert main([f"out_dir={out}", prep_files_arg(tmp_path), *PREP_OVERRIDES]) == 0
    assert (out / "manifest.json").stat().st_mtime_ns == before
    with pytest.raises(StaleOutput, match=r"seed \(0 -> 5\).*overwrite=true"):
        prep(prep_config(tmp_path, out, seed=5))


@pytest.mark.slow
def test_output_is_identical_whatever_the_process_count(tmp_path):
    write_prep_sources(tmp_path)
    one = prep(prep_config(tmp_path, tmp_path / "one", num_proc=1, batch_size=16))
    two = prep(prep_config(tmp_path, tmp_path / "two", num_proc=2, batch_size=16))
    m1, m2 = (json.loads((o / "manifest.json").read_text()) for o in (one, two))
    assert m1["sources"] == m2["sources"] and m1["stats"] == m2["stats"]
    for entry in m1["sources"].values():
        for split in ("train", "heldout"):
            assert shard_rows(one, entry[split]["files"]) == shard_rows(two, entry[split]["files"])
        qrels = [(o / entry["beir"] / "qrels" / "test.tsv").read_text() for o in (one, two)]
        assert qrels[0] == qrels[1]


def test_invalid_config_lists_every_problem(tmp_path):
    from gte_model.core.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(PrepConfig, None, ["sources=[debain]", "on_error=ignore", f"out_dir={tmp_path}"])
    assert "debain" in str(err.value) and "on_error=ignore: choose one of raise, skip" in str(err.value)
