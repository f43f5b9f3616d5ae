"""Rows from a pairs dir: fetched by index, negatives sampled deterministically, clear errors naming the file."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gte_model.core.pairs import PairsFormatError
from gte_model.core.record import RECORD_FILE, Record, write_record
from tests.train.tinydata import SOURCES, write_tiny_pairs
from train.data import DataError, PairsData, sample_negatives


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs"))


def test_sizes_and_rows_match_the_parquet_shards(pairs, tmp_path):
    data = PairsData(pairs, cache_dir=tmp_path, num_negatives=2)
    assert data.train_sizes() == {name: n for name, (n, _, _) in SOURCES.items()}
    table = pq.read_table(pairs / "beta" / "train-00000.parquet").to_pylist()
    batch = data.train_batch("beta", [5, 0, 63], seed=1, step=7)
    assert batch.queries == [table[i]["query"] for i in (5, 0, 63)]
    assert batch.positives == [table[i]["positive"] for i in (5, 0, 63)]
    assert all(len(n) == 2 and set(n) <= set(table[i]["negatives"]) for n, i in zip(batch.negatives, (5, 0, 63)))


def test_source_subset_and_unknown_source(pairs, tmp_path):
    assert PairsData(pairs, ["gamma"], cache_dir=tmp_path, heldout=False).names == ["gamma"]
    with pytest.raises(DataError, match=r"\['delta'\] not in .*manifest.json"):
        PairsData(pairs, ["delta"], cache_dir=tmp_path)


def test_negative_sampling_is_deterministic_and_fresh_per_step():
    first = sample_negatives(20, 3, seed=0, step=4, source="a", row=9, where="x")
    assert first == sample_negatives(20, 3, seed=0, step=4, source="a", row=9, where="x")
    assert len(set(first)) == 3 and all(0 <= i < 20 for i in first)
    draws = {tuple(sample_negatives(20, 3, seed=0, step=s, source="a", row=9, where="x")) for s in range(10)}
    assert len(draws) > 5


def test_fewer_negatives_than_asked_are_cycled():
    assert sorted(sample_negatives(2, 4, 0, 0, "s", 0, "x")) == [0, 0, 1, 1]


def test_empty_negatives_list_names_the_row_and_the_fix():
    with pytest.raises(DataError, match=r"row 3 has an empty negatives list.*data.num_negatives=0"):
        sample_negatives(0, 1, 0, 0, "s", 3, "manifest")


def test_missing_manifest_is_named(tmp_path):
    with pytest.raises(PairsFormatError, match=rf"{tmp_path}/manifest.json does not exist"):
        PairsData(tmp_path)


def test_a_pairs_dir_without_its_completion_record_is_refused(tmp_path):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    (pairs / RECORD_FILE).unlink()  # what an interrupted `gte prep` / `gte mine` leaves
    with pytest.raises(PairsFormatError, match="unfinished pairs dir .*re-run that command"):
        PairsData(pairs)


def _finished_copy(pairs, tmp_path, manifest: dict) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    (tmp_path / RECORD_FILE).write_text((pairs / RECORD_FILE).read_text())


def test_missing_shard_is_named(pairs, tmp_path):
    manifest = json.loads((pairs / "manifest.json").read_text())
    manifest["sources"]["alpha"]["train"]["files"] = ["alpha/train-99999.parquet"]
    _finished_copy(pairs, tmp_path, manifest)
    with pytest.raises(DataError, match=r"alpha/train-99999.parquet is listed in .* but does not exist"):
        PairsData(tmp_path)


def test_rows_with_fewer_negatives_than_asked_are_refused_unless_repeating_is_allowed(tmp_path):
    (tmp_path / "s").mkdir()
    rows = [{"query": f"q{i}", "positive": f"p{i}", "negatives": ["n1", "n2", "n3"][: 1 + i % 3]} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "s" / "train.parquet")
    manifest = {"format": "gte-pairs/1", "sources": {"s": {"train": {"files": ["s/train.parquet"], "rows": 6},
                                                           "heldout": {"files": [], "rows": 0}}}}
    write_record(tmp_path, Record("mine", 0))
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"4 rows hold fewer than data.num_negatives=3 .*fewest: 1.*repeat_negatives"):
        PairsData(tmp_path, cache_dir=tmp_path / "c", num_negatives=3)
    data = PairsData(tmp_path, cache_dir=tmp_path / "c", num_negatives=3, repeat_negatives=True)
    assert data.train_batch("s", [0], seed=0, step=0).negatives == [["n1", "n1", "n1"]]


def test_missing_negatives_column_names_the_file_and_the_fix(tmp_path):
    (tmp_path / "s").mkdir()
    pq.write_table(pa.Table.from_pylist([{"query": "a", "positive": "b"}] * 4), tmp_path / "s" / "train.parquet")
    manifest = {"format": "gte-pairs/1", "sources": {"s": {"train": {"files": ["s/train.parquet"], "rows": 4},
                                                           "heldout": {"files": [], "rows": 0}}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    write_record(tmp_path, Record("prep", 0))
    assert PairsData(tmp_path, cache_dir=tmp_path / "c").heldout_sizes() == {"s": 0}
    with pytest.raises(DataError, match=r"s/train.parquet has no column\(s\) \['negatives'\].*gte mine"):
        PairsData(tmp_path, cache_dir=tmp_path / "c", num_negatives=1)
