"""What `gte mine` reads and writes besides vectors: a source's train rows, extra corpus files, mined shards.

The pairs-dir format itself (manifest, schema, shard names, completion record) is gte_model.core.pairs; this module
only applies it. Every expected failure is a UserError naming the file (and line) and the fix.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.readers import text_lines
from gte_model.core import pairs
from gte_model.core.errors import UserError

EXTRA_SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass
class PairRows:
    """The train rows of one source, column-wise."""

    queries: list[str]
    positives: list[str]
    keys: list[str]

    def __len__(self) -> int:
        return len(self.queries)

    def take(self, idx: Sequence[int] | np.ndarray) -> PairRows:
        idx = [int(i) for i in idx]
        return PairRows([self.queries[i] for i in idx], [self.positives[i] for i in idx], [self.keys[i] for i in idx])


def train_rows(entry: dict) -> int:
    """The train rows a manifest entry lists."""
    return int(entry.get("train", {}).get("rows", 0))


def read_train(in_dir: Path, entry: dict, name: str) -> PairRows:
    """Every train row of one source (empty when it has none)."""
    tables, part = [], entry.get("train", {})
    files = [pairs.resolve(in_dir, rel) for rel in part.get("files", [])]
    pairs.check_shards(files, part, f"{in_dir / pairs.MANIFEST_FILE} sources.{name}.train")
    for path in files:
        try:
            tables.append(pq.read_table(path, columns=["query", "positive", "key"]))
        except (OSError, pa.ArrowException) as exc:
            raise pairs.PairsFormatError(
                f"{path}: train shard of source {name!r} cannot be read ({_first_line(exc)}); re-run the "
                f"`gte prep` that wrote input_dir={in_dir}") from None
    if not tables:
        return PairRows([], [], [])
    table = pa.concat_tables(tables)
    return PairRows(*(table.column(c).to_pylist() for c in ("query", "positive", "key")))


def read_extra_corpus(paths: Sequence[str]) -> list[str]:
    """Extra documents: .txt (one per line), .jsonl ({"text": ...}, BEIR corpus style) or .parquet (text/positive)."""
    texts: list[str] = []
    for i, raw in enumerate(paths):
        path, key = Path(raw), f"extra_corpus.{i}={raw}"
        if not path.is_file():
            raise UserError(f"{key}: does not exist (or is not a file); check the path")
        if path.suffix == ".txt":
            texts += [line.strip() for line in _utf8(path, key).splitlines() if line.strip()]
        elif path.suffix == ".jsonl":
            texts += _jsonl_texts(path)
        elif path.suffix == ".parquet":
            texts += _parquet_texts(path)
        else:
            raise UserError(f"{key}: unknown file type; use .txt (a doc per line), .jsonl ('text') or .parquet")
    return texts


def _utf8(path: Path, key: str) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8; save {key.split('=')[0]} as UTF-8 text") from None


def _jsonl_texts(path: Path) -> list[str]:
    texts = []
    for n, line, problem in text_lines(path):
        if problem is not None:
            raise UserError(f"{path}:{n}: {problem}")
        if not line.strip():
            continue
        try:
            texts.append(str(json.loads(line)["text"]))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{path}:{n}: not a JSON object with a 'text' field ({exc}); fix that line") from None
    return texts


def _parquet_texts(path: Path) -> list[str]:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise UserError(f"{path}: cannot be read as Parquet ({_first_line(exc)}); check the file") from None
    column = next((c for c in ("text", "positive") if c in table.column_names), None)
    if column is None:
        raise UserError(f"{path}: needs a 'text' or 'positive' column; it has {table.column_names}")
    return [t for t in table.column(column).to_pylist() if t]


def write_source(out: Path, name: str, rows: PairRows, negatives: list[list[str]], keep: np.ndarray, entry: dict,
                 in_dir: Path, rows_per_shard: int, scores: list[list[float]] | None = None,
                 copy_heldout: bool = False) -> dict:
    """Write the kept rows as <out>/<name>/train-NNNNN.parquet; the manifest entry (held-out/dev/BEIR -> the input's,
    or, with copy_heldout (an input that is a temporary copy of a remote one), copies inside out).
    scores: the teacher's [positive, *negatives] per row, written as the teacher_scores column."""
    schema = pairs.SCORED_SCHEMA if scores is not None else pairs.SCHEMA
    writer = pairs.ShardWriter(out, name, "train", rows_per_shard, schema)
    idx = np.flatnonzero(keep)
    for start in range(0, len(idx), rows_per_shard):
        part = idx[start : start + rows_per_shard]
        columns = {
            "query": [rows.queries[i] for i in part],
            "positive": [rows.positives[i] for i in part],
            "negatives": [negatives[i] for i in part],
            "source": [name] * len(part),
            "key": [rows.keys[i] for i in part],
        }
        if scores is not None:
            columns[pairs.SCORES_COLUMN] = [scores[i] for i in part]
        writer.add_table(pa.table(columns, schema=schema))
    result: dict = {"train": writer.close()}
    refer = functools.partial(_copied, out) if copy_heldout else _absolute
    for split in ("heldout", pairs.DEV_SPLIT):  # kept as the input's: stage 2 validates on the same dev rows
        if split in entry:
            result[split] = {**entry[split], "files": [refer(in_dir, f) for f in entry[split].get("files", [])]}
    if entry.get("beir"):
        result["beir"] = refer(in_dir, entry["beir"])
    return result


def _absolute(in_dir: Path, rel: str) -> str:
    # The mined dir lives elsewhere: its manifest points at the input's held-out files by absolute path.
    return str(pairs.resolve(in_dir, rel).resolve())


def _copied(out: Path, in_dir: Path, rel: str) -> str:
    """Copy an input file or folder to the same relative place in out; -> that relative path (an absolute one is
    kept as it is)."""
    if Path(rel).is_absolute():
        return rel
    src, dst = pairs.resolve(in_dir, rel), out / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return rel


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
