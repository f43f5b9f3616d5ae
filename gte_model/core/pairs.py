"""The pairs dir: the one format every stage reads and writes (prep writes it, mining rewrites it with negatives,
training and evaluation read it). This module is its only owner.

  <dir>/manifest.json          {"format": "gte-pairs/1", "sources": {name: {"train": {"files", "rows"},
                                "heldout": {"files", "rows"}, "beir": folder}}, ...stats}
  <dir>/<source>/{train,heldout}-NNNNN.parquet   columns: SCHEMA (+ teacher_scores when mined with a teacher)
  <dir>/beir/<source>/{corpus.jsonl, queries.jsonl, qrels/test.tsv}   the held-out retrieval set
  <dir>/gte_record.json        the completion record (gte_model.core.record), written last: readers require it
Paths in a manifest are relative to its folder or absolute.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gte_model.core.atomic import write_json
from gte_model.core.errors import UserError
from gte_model.core.record import (
    RECORD_FILE,
    Record,
    digest_json,
    file_fingerprint,
    folder_digest,
    is_complete,
    write_record,
)

FORMAT = "gte-pairs/1"
MANIFEST_FILE = "manifest.json"
PAIRS_KINDS = ("prep", "mine")  # completion records that make a folder a finished pairs dir
TEXT_COLUMNS = ("query", "positive")
SCHEMA = pa.schema([
    ("query", pa.string()),
    ("positive", pa.string()),
    ("negatives", pa.list_(pa.string())),
    ("source", pa.string()),
    ("key", pa.string()),
])
# Mined with a teacher: its cosine of the positive, then of each negative, per row (float32).
SCORES_COLUMN = "teacher_scores"
SCORED_SCHEMA = SCHEMA.append(pa.field(SCORES_COLUMN, pa.list_(pa.float32())))


class PairsFormatError(UserError):
    """A folder that is not a readable, finished pairs dir; the message names the file and the fix."""


# ---- reading --------------------------------------------------------------------------------------------------
def read_manifest(root: str | Path, key: str = "data.train_dir", require_complete: bool = True) -> dict:
    """manifest.json of a finished pairs dir, checked for the format and a non-empty `sources` map."""
    root = Path(root)
    path = root / MANIFEST_FILE
    if not path.is_file():
        raise PairsFormatError(
            f"{key}={root}: {path} does not exist; point {key} at a pairs dir written by `gte prep` or `gte mine`"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PairsFormatError(f"{path}: not valid JSON ({exc}); re-run the `gte prep`/`gte mine` that wrote it")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise PairsFormatError(f"{path}: format={got!r}, expected {FORMAT!r}; write it with `gte prep`")
    if not isinstance(manifest.get("sources"), dict) or not manifest["sources"]:
        raise PairsFormatError(f"{path}: lists no sources (key 'sources' is missing or empty); re-run `gte prep`")
    if require_complete and not is_complete(root, PAIRS_KINDS):
        raise PairsFormatError(
            f"{key}={root}: unfinished pairs dir (no {RECORD_FILE}: the `gte prep`/`gte mine` that wrote it was "
            "interrupted or failed); re-run that command to finish it"
        )
    return manifest


def resolve(root: str | Path, name: str) -> Path:
    """A manifest path: relative to the manifest's folder, or absolute."""
    path = Path(name)
    return path if path.is_absolute() else Path(root) / path


def beir_dirs(root: str | Path, key: str = "--data") -> dict[str, Path]:
    """Source name -> BEIR folder, for every source of a pairs dir that has a held-out set."""
    manifest = read_manifest(root, key)
    return {name: resolve(root, e["beir"]) for name, e in manifest["sources"].items() if e.get("beir")}


def manifest_digest(root: str | Path) -> str:
    """Fingerprint of a pairs dir: its manifest and the size + mtime of every shard it lists, so a rebuilt or
    edited dir differs even where its manifest reads the same."""
    root = Path(root)
    try:
        sources = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8")).get("sources", {})
        files = sorted(f for e in sources.values() for split in ("train", "heldout")
                       for f in (e.get(split) or {}).get("files", []))
    except (OSError, ValueError, AttributeError):
        files = []
    shards = [(f, file_fingerprint(resolve(root, f))) for f in files]
    return f"{folder_digest(root, (MANIFEST_FILE,))},shards={digest_json(shards)}"


# ---- writing --------------------------------------------------------------------------------------------------
class ShardWriter:
    """Appends records to <out>/<source>/<split>-NNNNN.parquet, starting a new shard every `rows_per_shard` rows."""

    def __init__(self, out_dir: Path, source: str, split: str, rows_per_shard: int,
                 schema: pa.Schema = SCHEMA) -> None:
        self.out_dir, self.source, self.split, self.schema = Path(out_dir), source, split, schema
        self.rows_per_shard = rows_per_shard
        self.files: list[str] = []
        self.rows = 0
        self._buffer: list[dict] = []

    def add(self, record: dict) -> None:
        self._buffer.append(record)
        self.rows += 1
        if len(self._buffer) >= self.rows_per_shard:
            self._flush()

    def add_table(self, table: pa.Table) -> None:
        """Write one shard from a table with the schema's columns (the caller sizes it)."""
        self._flush()
        self._write(table.select(self.schema.names).cast(self.schema))
        self.rows += table.num_rows

    def _flush(self) -> None:
        if self._buffer:
            self._write(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self._buffer = []

    def _write(self, table: pa.Table) -> None:
        rel = f"{self.source}/{self.split}-{len(self.files):05d}.parquet"
        (self.out_dir / self.source).mkdir(parents=True, exist_ok=True)
        pq.write_table(table, self.out_dir / rel)
        self.files.append(rel)

    def close(self) -> dict:
        self._flush()
        return {"files": list(self.files), "rows": self.rows}


def doc_id(text: str) -> str:
    return "d" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def query_id(text: str) -> str:
    return "q" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def write_beir(folder: Path, records: list[dict]) -> dict:
    """corpus = distinct held-out positives, queries = distinct held-out queries, qrels = each (query, positive).
    -> {"queries": n, "corpus": n, "qrels": n}"""
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[tuple[str, str], None] = {}
    for rec in records:
        d, q = doc_id(rec["positive"]), query_id(rec["query"])
        corpus.setdefault(d, rec["positive"])
        queries.setdefault(q, rec["query"])
        qrels[(q, d)] = None
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for d, text in corpus.items():
            fh.write(json.dumps({"_id": d, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for q, text in queries.items():
            fh.write(json.dumps({"_id": q, "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for q, d in qrels:
            fh.write(f"{q}\t{d}\t1\n")
    return {"queries": len(queries), "corpus": len(corpus), "qrels": len(qrels)}


def finish(root: str | Path, sources: dict, extra: dict, record: Record) -> Path:
    """Write manifest.json, then the completion record: the pairs dir is readable from this moment on."""
    if not any(int(e.get("train", {}).get("rows", 0)) for e in sources.values()):
        raise PairsFormatError(f"{root}: no source has a training row; nothing was written as complete")
    path = write_json(Path(root) / MANIFEST_FILE, {"format": FORMAT, "sources": sources, **extra})
    write_record(root, record)
    return path
