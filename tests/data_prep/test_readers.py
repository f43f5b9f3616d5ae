from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_prep.readers import FieldMap, ReaderError, ReadStats, read_records


def _rows(batches):
    return [r for b in batches for r in b]


def test_jsonl_reader_maps_fields_and_defaults_key_to_query_hash(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"q": "what is a cat", "a": "a small animal", "neg": ["a dog"]}) + "\n")
    rows = _rows(read_records(path, FieldMap(query="q", positive="a", negatives="neg"), "mine"))
    assert rows[0]["query"] == "what is a cat" and rows[0]["positive"] == "a small animal"
    assert rows[0]["negatives"] == ["a dog"] and rows[0]["source"] == "mine"
    assert rows[0]["key"].startswith("q:")


def test_malformed_jsonl_line_raises_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "a b", "positive": "c d"}\n{"query": "x", "positive": \n')
    with pytest.raises(ReaderError, match=rf"^{path}:2: invalid JSON"):
        _rows(read_records(path, FieldMap(), "s"))


def test_missing_field_is_named_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "a b", "positive": "c d"}\n\n{"question": "x", "positive": "y"}\n')
    with pytest.raises(ReaderError, match=rf"{path}:3: missing field 'query'"):
        _rows(read_records(path, FieldMap(), "s"))


def test_skip_option_counts_malformed_lines(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "a", "positive": "b"}\nnot json\n{"query": 3, "positive": "b"}\n'
                    '{"query": "c", "positive": "d"}\n')
    stats = ReadStats()
    rows = _rows(read_records(path, FieldMap(), "s", on_error="skip", stats=stats))
    assert [r["query"] for r in rows] == ["a", "c"]
    assert stats.skipped == 2 and stats.rows == 2
    assert stats.problems[0].startswith(f"{path}:2:") and "field 'query'" in stats.problems[1]


def test_tsv_row_with_wrong_column_count_reports_its_line(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("query\tpositive\tid\na b\tc d\t1\ne f\tg h\n")
    with pytest.raises(ReaderError, match=rf"{path}:3: 2 columns, the header has 3"):
        _rows(read_records(path, FieldMap(key="id"), "s"))


def test_csv_reader_streams_in_batches_with_key_column(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("query,positive,id\n" + "".join(f"q {i},p {i},{i % 3}\n" for i in range(25)))
    batches = list(read_records(path, FieldMap(key="id"), "s", batch_size=10))
    assert [len(b) for b in batches] == [10, 10, 5]
    assert batches[0][4]["key"] == "1"


def test_parquet_and_saved_dataset_readers_agree(tmp_path):
    from datasets import Dataset

    data = {"question": ["q1", "q2"], "answer": ["a one", "a two"], "src": ["x", "y"]}
    pq.write_table(pa.table(data), tmp_path / "d.parquet")
    Dataset.from_dict(data).save_to_disk(str(tmp_path / "ds"))
    fields = FieldMap(query="question", positive="answer", source="src")
    from_parquet = _rows(read_records(tmp_path / "d.parquet", fields, "s"))
    from_disk = _rows(read_records(tmp_path / "ds", fields, "s"))
    assert from_parquet == from_disk
    assert [r["source"] for r in from_parquet] == ["x", "y"]


def test_parquet_wrong_type_reports_row_number(tmp_path):
    pq.write_table(pa.table({"query": ["a", "b"], "positive": ["c", None]}), tmp_path / "d.parquet")
    with pytest.raises(ReaderError, match=r"d.parquet:2: missing field 'positive'"):
        _rows(read_records(tmp_path / "d.parquet", FieldMap(), "s"))
