"""Streaming readers for user data: JSONL, CSV/TSV, Parquet and `datasets` folders saved with save_to_disk.

Each reader yields batches of records {query, positive, negatives, source, key} built through a `FieldMap`, holding
one batch at a time (python line iteration for text formats, pyarrow batch iteration for Parquet/Arrow), so a file
larger than memory streams through. A malformed row raises `ReaderError("file:line: problem")`; with
`on_error="skip"` it is skipped and counted in `ReadStats` (the prep report lists the counts and first problems).
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("jsonl", "csv", "tsv", "parquet", "hf_disk")


class ReaderError(ValueError):
    """A malformed input row: the message starts with `file:line:`."""


@dataclass
class FieldMap:
    """Which column holds what. Unset key: the query text keys the pair (one query stays on one split side)."""

    query: str = "query"
    positive: str = "positive"
    negatives: str | None = None
    source: str | None = None
    key: str | None = None


@dataclass
class ReadStats:
    rows: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)  # the first few skipped problems, for the report


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        return "hf_disk"
    name = path.name.lower()
    for suffix, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"), (".tsv", "tsv"),
                        (".parquet", "parquet")):
        if name.endswith(suffix):
            return fmt
    raise ValueError(f"cannot tell the format of {path} from its name; set format to one of {', '.join(FORMATS)}")


def to_record(row: dict, fields: FieldMap, default_source: str) -> dict:
    """Map one raw row to a record; raises ValueError naming the field on a missing or mistyped value."""
    out = {}
    for name in ("query", "positive"):
        column = getattr(fields, name)
        if column not in row or row[column] is None:
            raise ValueError(f"missing field {column!r} (the {name} column)")
        if not isinstance(row[column], str):
            kind = type(row[column]).__name__
            raise ValueError(f"field {column!r} (the {name} column) is {kind}, expected a string")
        out[name] = row[column]
    negatives = []
    if fields.negatives:
        value = row.get(fields.negatives)
        if isinstance(value, str):
            value = json.loads(value) if value.startswith("[") else [value]
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
            raise ValueError(f"field {fields.negatives!r} (the negatives column) is not a list of strings")
        negatives = list(value or [])
    out["negatives"] = negatives
    source = row.get(fields.source) if fields.source else None
    out["source"] = str(source) if source else default_source
    key = row.get(fields.key) if fields.key else None
    if fields.key and key is None:
        raise ValueError(f"missing field {fields.key!r} (the key column)")
    if key is None:
        key = "q:" + hashlib.blake2b(out["query"].encode(), digest_size=8).hexdigest()
    out["key"] = str(key)
    return out


def read_records(path: str | Path, fields: FieldMap, source: str, fmt: str = "auto", on_error: str = "raise",
                 batch_size: int = 10_000, stats: ReadStats | None = None) -> Iterator[list[dict]]:
    """Yield batches of records from one user file or saved `datasets` folder."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r}; use 'raise' (stop at the first bad row) or 'skip' (count and skip)")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist (source {source!r})")
    fmt = detect_format(path) if fmt == "auto" else fmt
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "tsv": _csv_rows, "parquet": _parquet_rows,
            "hf_disk": _hf_rows}.get(fmt)
    if rows is None:
        raise ValueError(f"format={fmt!r} for {path}; use one of {', '.join(FORMATS)} or auto")
    stats = stats if stats is not None else ReadStats()
    batch: list[dict] = []
    for line, row in rows(path, fmt):
        try:
            if isinstance(row, Exception):
                raise row
            record = to_record(row, fields, source)
        except ValueError as exc:
            problem = f"{path}:{line}: {exc}"
            if on_error == "raise":
                raise ReaderError(problem + " (set on_error=skip to skip and count malformed rows)") from None
            stats.skipped += 1
            if len(stats.problems) < 10:
                stats.problems.append(problem)
            continue
        stats.rows += 1
        batch.append(record)
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _jsonl_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict | Exception]]:
    with open(path, encoding="utf-8", errors="strict") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield line_no, ValueError(f"invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            yield line_no, row if isinstance(row, dict) else ValueError("a line is not a JSON object")


def _csv_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict | Exception]]:
    csv.field_size_limit(sys.maxsize)
    delimiter = "\t" if fmt == "tsv" else ","
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            return
        for values in reader:
            line_no = reader.line_num
            if not values:
                continue
            if len(values) != len(header):
                yield line_no, ValueError(f"{len(values)} columns, the header has {len(header)}")
                continue
            yield line_no, dict(zip(header, values))


def _parquet_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    import pyarrow.dataset as ds

    # A row's "line" is its 1-based row number in the file (or the folder's files in order).
    row_no = 0
    for batch in ds.dataset(str(path), format="parquet").to_batches(batch_size=8192):
        for row in batch.to_pylist():
            row_no += 1
            yield row_no, row


def _hf_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    from datasets import load_from_disk

    data = load_from_disk(str(path))
    if hasattr(data, "keys"):  # a DatasetDict: read its splits in name order
        parts = [data[name] for name in sorted(data.keys())]
    else:
        parts = [data]
    row_no = 0
    for part in parts:
        for batch in part.iter(batch_size=8192):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                row_no += 1
                yield row_no, dict(zip(columns, values))
