from __future__ import annotations

import json
import re

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


# ---- finding 9: bytes that are not UTF-8 are a malformed row like any other ------------------------------------
BAD_UTF8 = {
    "jsonl": b'{"query": "a b", "positive": "c d"}\n{"query": "caf\xe9", "positive": "x y"}\n'
             b'{"query": "e f", "positive": "g h"}\n',
    "csv": b'query,positive\na b,c d\n"caf\xe9 line one\nline two",x y\ne f,g h\n',
    "tsv": b"query\tpositive\na b\tc d\ncaf\xe9\tx y\ne f\tg h\n",
}


@pytest.mark.parametrize("fmt", list(BAD_UTF8))
def test_a_line_that_is_not_utf8_names_file_and_line_and_can_be_skipped(tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    path.write_bytes(BAD_UTF8[fmt])
    line = 2 if fmt == "jsonl" else 3
    with pytest.raises(ReaderError, match=rf"^{path}:{line}: not valid UTF-8 \(byte 0xe9 at column \d+\); save the "
                                          r"file as UTF-8; fix that row, or set on_error=skip"):
        _rows(read_records(path, FieldMap(), "s"))
    stats = ReadStats()
    rows = _rows(read_records(path, FieldMap(), "s", on_error="skip", stats=stats))
    assert [r["query"] for r in rows] == ["a b", "e f"]
    assert stats.skipped == 1 and stats.problems[0].startswith(f"{path}:{line}: not valid UTF-8")


def test_a_byte_order_mark_and_old_mac_line_ends_read_like_plain_lines(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"query": "a b", "positive": "c d"}\r{"query": "e f", "positive": "g h"}\r\n')
    assert [r["query"] for r in _rows(read_records(path, FieldMap(), "s"))] == ["a b", "e f"]
    csv_path = tmp_path / "bom.csv"
    csv_path.write_bytes(b'\xef\xbb\xbfquery,positive\r\na b,"c\r\nd"\r\ne f,g h\r\n')
    assert [(r["query"], r["positive"]) for r in _rows(read_records(csv_path, FieldMap(), "s"))] == [
        ("a b", "c\r\nd"), ("e f", "g h")]


def test_reader_failures_are_user_errors(tmp_path):
    from gte_model.core.errors import UserError

    with pytest.raises(UserError, match=r"does not exist \(source 's'\); check the path"):
        _rows(read_records(tmp_path / "missing.jsonl", FieldMap(), "s"))
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(UserError, match=r"data.txt: cannot tell the format from the name.*set format"):
        _rows(read_records(tmp_path / "data.txt", FieldMap(), "s"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(UserError, match=r"bad.parquet: cannot be read as Parquet"):
        _rows(read_records(tmp_path / "bad.parquet", FieldMap(), "s"))


@pytest.mark.parametrize("row, field", [
    ('{"id": "2", "query": "bad \\ud800 one", "positive": "c d"}', "'query' (the query column)"),
    ('{"id": "2", "query": "x y", "positive": "c d", "negs": ["ok", "bad \\udfff"]}',
     "'negs' (the negatives column)"),
    ('{"id": "k\\ud83d", "query": "x y", "positive": "c d"}', "'id' (the key column)"),
])
def test_a_lone_surrogate_names_file_line_and_field_and_can_be_skipped(tmp_path, row, field):
    path = tmp_path / "data.jsonl"
    path.write_text('{"id": "1", "query": "a b", "positive": "c d"}\n' + row + "\n")
    fields = FieldMap(negatives="negs", key="id")
    with pytest.raises(ReaderError, match=rf"^{path}:2: field {re.escape(field)} holds a lone surrogate at "
                                          r"character \d+ .*; fix that row, or set on_error=skip"):
        _rows(read_records(path, fields, "s"))
    stats = ReadStats()
    rows = _rows(read_records(path, fields, "s", on_error="skip", stats=stats))
    assert [r["query"] for r in rows] == ["a b"]
    assert stats.skipped == 1 and stats.problems[0].startswith(f"{path}:2: field {field} holds a lone surrogate")


def test_prep_skips_a_row_with_a_lone_surrogate_or_stops_in_one_line(tmp_path, capsys):
    from train.app.cli import main as gte

    rows = [json.dumps({"q": f"question {i} w{i}", "p": f"the answer {i} is w{i} and w{i + 1}"}) for i in range(40)]
    rows.insert(5, '{"q": "a lone \\ud800 surrogate", "p": "the answer is here today"}')
    path = tmp_path / "notes.jsonl"
    path.write_text("\n".join(rows) + "\n")
    args = ["prep", "configs/prep.yaml", "sources=[]", "decontaminate.enabled=false",
            f"files=[{{name: notes, path: {path}, query: q, positive: p}}]"]
    assert gte([*args, f"out_dir={tmp_path / 'skip'}", "on_error=skip"]) == 0
    manifest = json.loads((tmp_path / "skip" / "manifest.json").read_text())
    assert manifest["readers"]["notes"]["skipped"] == 1 and manifest["readers"]["notes"]["rows"] == 40
    capsys.readouterr()
    assert gte([*args, f"out_dir={tmp_path / 'raise'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gte prep: {path}:6: field 'q' (the query column) holds a lone surrogate")
    assert "\n" not in err
