"""Output in the shared "pairs dir" format: Parquet shards per source and split, BEIR held-out sets, manifest.

  <out>/<source>/train-00000.parquet ...   <out>/<source>/heldout-00000.parquet ...
  <out>/beir/<source>/{corpus.jsonl, queries.jsonl, qrels/test.tsv}
  <out>/manifest.json  ({"format": "gte-pairs/1", "sources": {...}, ...stats})
  <out>/_COMPLETE      written last: its presence (with the same config hash) makes a re-run a no-op
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

FORMAT = "gte-pairs/1"
MARKER = "_COMPLETE"
SCHEMA = pa.schema([
    ("query", pa.string()),
    ("positive", pa.string()),
    ("negatives", pa.list_(pa.string())),
    ("source", pa.string()),
    ("key", pa.string()),
])


class ShardWriter:
    """Appends records to <out>/<source>/<split>-NNNNN.parquet, starting a new shard every `rows_per_shard` rows."""

    def __init__(self, out_dir: Path, source: str, split: str, rows_per_shard: int) -> None:
        self.out_dir, self.source, self.split = Path(out_dir), source, split
        self.rows_per_shard = rows_per_shard
        self.files: list[str] = []
        self.rows = 0
        self._buffer: list[dict] = []

    def add(self, record: dict) -> None:
        self._buffer.append(record)
        self.rows += 1
        if len(self._buffer) >= self.rows_per_shard:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        rel = f"{self.source}/{self.split}-{len(self.files):05d}.parquet"
        (self.out_dir / self.source).mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(self._buffer, schema=SCHEMA)
        pq.write_table(table, self.out_dir / rel)
        self.files.append(rel)
        self._buffer = []

    def close(self) -> dict:
        self._flush()
        return {"files": list(self.files), "rows": self.rows}


def _doc_id(text: str) -> str:
    return "d" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _query_id(text: str) -> str:
    return "q" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def write_beir(folder: Path, records: list[dict]) -> dict:
    """corpus = distinct held-out positives, queries = distinct held-out queries, qrels = each (query, positive).

    -> {"queries": n, "corpus": n, "qrels": n}
    """
    corpus: dict[str, str] = {}
    queries: dict[str, str] = {}
    qrels: dict[tuple[str, str], None] = {}
    for rec in records:
        doc_id, query_id = _doc_id(rec["positive"]), _query_id(rec["query"])
        corpus.setdefault(doc_id, rec["positive"])
        queries.setdefault(query_id, rec["query"])
        qrels[(query_id, doc_id)] = None
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc_id, text in corpus.items():
            fh.write(json.dumps({"_id": doc_id, "title": "", "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as fh:
        for query_id, text in queries.items():
            fh.write(json.dumps({"_id": query_id, "text": text}, ensure_ascii=False) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for query_id, doc_id in qrels:
            fh.write(f"{query_id}\t{doc_id}\t1\n")
    return {"queries": len(queries), "corpus": len(corpus), "qrels": len(qrels)}


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_complete(out_dir: Path, digest: str) -> bool:
    marker = Path(out_dir) / MARKER
    return marker.is_file() and marker.read_text().strip() == digest


def write_manifest(out_dir: Path, sources: dict, stats: dict) -> Path:
    path = Path(out_dir) / "manifest.json"
    manifest = {"format": FORMAT, "sources": sources, **stats}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False))
    tmp.replace(path)
    return path


def mark_complete(out_dir: Path, digest: str) -> None:
    (Path(out_dir) / MARKER).write_text(digest + "\n")
