"""The dev split (split.dev_fraction): cut by key, apart from train and from the held-out test sets; mining keeps it;
training validates on it, never on the held-out rows."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.prep import prep
from data_prep.prep_config import PrepConfig
from data_prep.split import SplitConfig, assign_dev, assign_heldout, key_hash
from tests.data_prep.helpers import prep_config, write_prep_sources


def _keys_of(out, entry: dict, split: str) -> set[str]:
    return {r["key"] for f in entry.get(split, {}).get("files", []) for r in pq.read_table(out / f).to_pylist()}


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(st.sampled_from([f"k{i}" for i in range(60)]), min_size=1, max_size=150),
       heldout=st.floats(0.0, 0.6), dev=st.floats(0.0, 0.4), seed=st.integers(0, 2**31))
def test_no_key_is_both_dev_and_held_out(keys, heldout, dev, seed):
    cfg = SplitConfig(heldout_fraction=heldout, max_heldout_queries=None, dev_fraction=dev)
    kh = np.array([key_hash(k, seed) for k in keys], dtype=np.uint64)
    everything = np.ones(len(keys), bool)
    held, dev_mask = assign_heldout(kh, kh, everything, cfg), assign_dev(kh, everything, cfg)
    assert not {k for k, h in zip(keys, held) if h} & {k for k, d in zip(keys, dev_mask) if d}


def test_prep_writes_a_dev_split_sharing_no_key_with_train_or_the_held_out_set(tmp_path):
    write_prep_sources(tmp_path)
    out = tmp_path / "pairs"
    prep(prep_config(tmp_path, out, **{"split.dev_fraction": 0.3}))
    manifest = json.loads((out / "manifest.json").read_text())
    dev_rows = 0
    for entry in manifest["sources"].values():
        train, held, dev = (_keys_of(out, entry, s) for s in ("train", "heldout", "dev"))
        dev_rows += entry["dev"]["rows"]
        assert dev and held and not dev & held and not dev & train and not held & train
        queries = {json.loads(line)["text"] for line in (out / entry["beir"] / "queries.jsonl").open()}
        dev_queries = {r["query"] for f in entry["dev"]["files"] for r in pq.read_table(out / f).to_pylist()}
        assert not dev_queries & queries  # the BEIR test set holds no dev query
    assert dev_rows > 0


def test_dev_and_held_out_fractions_that_would_overlap_are_refused():
    cfg = PrepConfig(split=SplitConfig(heldout_fraction=0.7, dev_fraction=0.4))
    assert any("split.dev_fraction=0.4" in e and "overlap" in e for e in cfg.validate())


def test_training_validates_on_the_dev_rows_and_never_the_held_out_rows(tmp_path):
    from tests.train.tinydata import write_tiny_pairs
    from train.data import PairsData

    pairs = write_tiny_pairs(tmp_path / "pairs")
    manifest = json.loads((pairs / "manifest.json").read_text())
    data = PairsData(pairs, cache_dir=tmp_path / "cache")
    for source, entry in manifest["sources"].items():
        dev = [r["query"] for f in entry["dev"]["files"] for r in pq.read_table(pairs / f).to_pylist()]
        assert data.heldout_sizes()[source] == len(dev)
        assert data.heldout_batch(source, list(range(len(dev)))).queries == dev
        del entry["dev"]  # a pairs dir written before dev splits: nothing to validate on, not the test rows
    (pairs / "manifest.json").write_text(json.dumps(manifest))
    assert set(PairsData(pairs, cache_dir=tmp_path / "cache2", verify_shards=False).heldout_sizes().values()) == {0}
