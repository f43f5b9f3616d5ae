"""Streaming readers for user data: JSONL, CSV/TSV, Parquet and `datasets` folders saved with save_to_disk.

Each reader yields batches of records {query, positive, negatives, source, key} built through a `FieldMap`, holding
one batch at a time (line iteration for text formats, pyarrow batch iteration for Parquet/Arrow), so a file larger
than memory streams through. Text files are read as bytes and decoded line by line, so a line that is not UTF-8 is
a malformed row like any other. A malformed row raises `ReaderError("file:line: problem; fix")`; with
`on_error="skip"` it is skipped and counted in `ReadStats` (the prep report lists the counts and first problems).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gte_model.core.errors import UserError

FORMATS = ("jsonl", "csv", "tsv", "parquet", "hf_disk")
TEXT_FORMATS = ("jsonl", "csv", "tsv")  # read line by line from one file
_SUFFIXES = ((".jsonl", "jsonl"), (".json", "jsonl"), (".csv", "csv"), (".tsv", "tsv"), (".parquet", "parquet"))
_SKIP_HINT = "fix that row, or set on_error=skip to skip and count malformed rows"
_LONE_CR = re.compile(r"(?<=\r)(?!\n)")  # a line break of old Mac files, which text mode also splits on


class ReaderError(UserError, ValueError):
    """A user file that cannot be read as configured; the message starts with `file:line:` for a bad row."""


class RowProblem(ValueError):
    """One malformed row (the reader adds the file and line, and skips it under on_error=skip)."""


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


def format_problem(path: str | Path) -> str | None:
    """Why the format of `path` cannot be told from its name, None when it can."""
    path = Path(path)
    if path.is_dir() or any(path.name.lower().endswith(suffix) for suffix, _ in _SUFFIXES):
        return None
    return "cannot tell the format from the name (known endings: .jsonl .json .csv .tsv .parquet, or a folder)"


def detect_format(path: str | Path) -> str:
    path = Path(path)
    if path.is_dir():
        return "hf_disk"
    name = path.name.lower()
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    raise ReaderError(f"{path}: {format_problem(path)}; set format to one of {', '.join(FORMATS)}")


def to_record(row: dict, fields: FieldMap, default_source: str) -> dict:
    """Map one raw row to a record; raises RowProblem naming the field on a missing or mistyped value."""
    out = {}
    for name in ("query", "positive"):
        column = getattr(fields, name)
        if column not in row or row[column] is None:
            raise RowProblem(f"missing field {column!r} (the {name} column)")
        if not isinstance(row[column], str):
            kind = type(row[column]).__name__
            raise RowProblem(f"field {column!r} (the {name} column) is {kind}, expected a string")
        out[name] = _text(row[column], f"field {column!r} (the {name} column)")
    out["negatives"] = [_text(neg, f"field {fields.negatives!r} (the negatives column)")
                        for neg in _negatives(row, fields)]
    source = row.get(fields.source) if fields.source else None
    out["source"] = _text(str(source), f"field {fields.source!r} (the source column)") if source else default_source
    key = row.get(fields.key) if fields.key else None
    if fields.key and key is None:
        raise RowProblem(f"missing field {fields.key!r} (the key column)")
    if key is None:
        key = "q:" + hashlib.blake2b(out["query"].encode(), digest_size=8).hexdigest()
    out["key"] = _text(str(key), f"field {fields.key!r} (the key column)")
    return out


def _text(value: str, what: str) -> str:
    """`value`, or a RowProblem when it holds a lone surrogate: a JSON escape such as \\ud800 decodes to a code point
    that is no character, which no UTF-8 writer (Parquet, tokenizers) accepts, so it would fail far from its row."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RowProblem(f"{what} holds a lone surrogate at character {exc.start + 1} (an escape such as \\ud800 "
                         "that is no character)") from None
    return value


def _negatives(row: dict, fields: FieldMap) -> list[str]:
    if not fields.negatives:
        return []
    value = row.get(fields.negatives)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.startswith("[") else [value]
        except json.JSONDecodeError as exc:
            raise RowProblem(f"field {fields.negatives!r} (the negatives column) starts with '[' but is not a JSON "
                             f"list ({exc.msg})") from None
    if value is not None and (not isinstance(value, list) or not all(isinstance(v, str) for v in value)):
        raise RowProblem(f"field {fields.negatives!r} (the negatives column) is not a list of strings")
    return list(value or [])


def read_records(path: str | Path, fields: FieldMap, source: str, fmt: str = "auto", on_error: str = "raise",
                 batch_size: int = 10_000, stats: ReadStats | None = None) -> Iterator[list[dict]]:
    """Yield batches of records from one user file or saved `datasets` folder."""
    if on_error not in ("raise", "skip"):
        raise ReaderError(f"on_error={on_error!r}: use raise (stop at the first bad row) or skip (count and skip)")
    path = Path(path)
    if not path.exists():
        raise ReaderError(f"{path}: does not exist (source {source!r}); check the path in files")
    fmt = detect_format(path) if fmt == "auto" else fmt
    stats = stats if stats is not None else ReadStats()
    batch: list[dict] = []
    for line, row in iter_rows(path, fmt):
        try:
            if isinstance(row, Exception):
                raise row
            record = to_record(row, fields, source)
        except RowProblem as exc:
            problem = f"{path}:{line}: {exc}"
            if on_error == "raise":
                raise ReaderError(f"{problem}; {_SKIP_HINT}") from None
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


def iter_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict | RowProblem]]:
    """(line or row number, raw row or the RowProblem that row has) of one file or saved folder in format `fmt`."""
    rows = {"jsonl": _jsonl_rows, "csv": _csv_rows, "tsv": _csv_rows, "parquet": _parquet_rows,
            "hf_disk": _hf_rows}.get(fmt)
    if rows is None:
        raise ReaderError(f"{path}: format={fmt!r}; use one of {', '.join(FORMATS)} or auto")
    if fmt in TEXT_FORMATS and path.is_dir():
        raise ReaderError(f"{path}: is a folder, but format={fmt} reads one file; name the file, or use "
                          "format=hf_disk for a folder written by datasets' save_to_disk")
    return rows(path, fmt)


# ---- text formats: bytes in, one decoded line at a time ---------------------------------------------------------
def text_lines(path: Path) -> Iterator[tuple[int, str, RowProblem | None]]:
    """(line number, text, problem) per line: the text keeps its line ending; a line that is not UTF-8 comes with
    its problem (and the text decoded with replacement characters). A leading byte-order mark is dropped."""
    line_no = 0
    with open(path, "rb") as fh:
        for raw in fh:
            if line_no == 0 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            problem = None
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                text = raw.decode("utf-8", errors="replace")
                problem = RowProblem(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                                     "save the file as UTF-8")
            for part in _LONE_CR.split(text) if "\r" in text else (text,):
                if part:
                    line_no += 1
                    yield line_no, part, problem


def _jsonl_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict | Exception]]:
    for line_no, line, problem in text_lines(path):
        if problem is not None:
            yield line_no, problem
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield line_no, RowProblem(f"invalid JSON ({exc.msg} at column {exc.colno})")
            continue
        yield line_no, row if isinstance(row, dict) else RowProblem("a line is not a JSON object")


def _csv_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict | Exception]]:
    csv.field_size_limit(sys.maxsize)
    bad: dict[int, RowProblem] = {}  # line number -> why it is not UTF-8

    def lines() -> Iterator[str]:
        for line_no, text, problem in text_lines(path):
            if problem is not None:
                bad[line_no] = problem
            yield text

    reader = csv.reader(lines(), delimiter="\t" if fmt == "tsv" else ",")
    header = next(reader, None)
    if header is None:
        return
    last = reader.line_num  # a row spans the lines (last, reader.line_num]
    if bad:
        line = min(bad)
        raise ReaderError(f"{path}:{line}: the header is {bad[line]}; the header cannot be skipped")
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            values = RowProblem(f"not valid {fmt.upper()} ({exc})")
        first, last = last + 1, reader.line_num
        broken = next((bad.pop(n) for n in range(first, last + 1) if n in bad), None)
        if broken is not None or isinstance(values, RowProblem):
            yield first, broken or values
        elif not values:
            continue
        elif len(values) != len(header):
            yield first, RowProblem(f"{len(values)} columns, the header has {len(header)}")
        else:
            yield first, dict(zip(header, values))


# ---- columnar formats ---------------------------------------------------------------------------------------------
def _parquet_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.dataset as ds

    # A row's "line" is its 1-based row number in the file (or the folder's files in order).
    row_no = 0
    try:
        for batch in ds.dataset(str(path), format="parquet").to_batches(batch_size=8192):
            for row in batch.to_pylist():
                row_no += 1
                yield row_no, row
    except (pa.ArrowException, OSError) as exc:
        raise ReaderError(f"{path}: cannot be read as Parquet after row {row_no} ({_first_line(exc)}); "
                          "check format and the file") from None


def _hf_rows(path: Path, fmt: str) -> Iterator[tuple[int, dict]]:
    from datasets import load_from_disk

    try:
        data = load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise ReaderError(f"{path}: not a folder written by datasets' save_to_disk ({_first_line(exc)}); "
                          "set format to the file's format") from None
    parts = [data[name] for name in sorted(data.keys())] if hasattr(data, "keys") else [data]  # DatasetDict: splits
    row_no = 0
    for part in parts:
        for batch in part.iter(batch_size=8192):
            columns = list(batch)
            for values in zip(*(batch[c] for c in columns)):
                row_no += 1
                yield row_no, dict(zip(columns, values))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
