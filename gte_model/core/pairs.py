"""The pairs dir: the one format every stage reads and writes (prep writes it, mining rewrites it with negatives,
training and evaluation read it). This module is its only owner.

  <dir>/manifest.json          {"format": "gte-pairs/1", "sources": {name: {"train": {"files", "rows", "sha256"},
                                "heldout": {"files", "rows", "sha256"}, "beir": folder,
                                "dev": {...} (when prep cut one: split.dev_fraction)}}, ...stats}
                               sha256: each file's, recorded when the dir is finished and checked by readers
                               (dirs written before it was added have none and are read as before)
  <dir>/<source>/{train,heldout,dev}-NNNNN.parquet   columns: SCHEMA (+ teacher_scores when mined with a teacher);
                               dev: training's validation rows, by key apart from train and held-out
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
    file_sha256,
    folder_digest,
    is_complete,
    write_record,
)

FORMAT = "gte-pairs/1"
DEV_SPLIT = "dev"
SPLITS = ("train", "heldout", DEV_SPLIT)  # the shard splits of a source
SHA256 = "sha256"  # in a split entry: the sha256 of each of its files, in `files` order (written by finish)
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
    """Fingerprint of a pairs dir's content. When its manifest records each shard's sha256 (every dir written since
    they were added): `shards-sha256,<source>=<digest>,...`, a digest per source of its splits' row counts and shard
    sha256s, so an identical copy (`cp -r`) or an identical rebuild is the same data wherever it lives, and a change
    names its source. Older dirs: the manifest's sha256 and the size + mtime of every shard (a copy that keeps no
    file times reads as changed; re-run the step that wrote the dir to get content digests)."""
    root = Path(root)
    try:
        sources = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8")).get("sources", {})
        # dev only where there is one, so a dir written before dev splits keeps its digest
        parts = {name: [e.get(split) or {} for split in SPLITS if split != DEV_SPLIT or split in e]
                 for name, e in sorted(sources.items())}
    except (OSError, ValueError, AttributeError):
        parts = {}
    if parts and all(SHA256 in p or not p.get("files") for ps in parts.values() for p in ps):
        per_source = (f"{name}={digest_json([[p.get('rows'), p.get(SHA256, [])] for p in ps])[:16]}"
                      for name, ps in parts.items())
        return ",".join(["shards-sha256", *per_source])
    files = sorted(f for ps in parts.values() for p in ps for f in p.get("files", []))
    shards = [(f, file_fingerprint(resolve(root, f))) for f in files]
    return f"{folder_digest(root, (MANIFEST_FILE,))},shards={digest_json(shards)}"


def digest_note(old: object, new: object) -> str:
    """Why two fingerprints of manifest_digest differ, where the digests alone do not say it ('' otherwise)."""
    if not (isinstance(old, str) and isinstance(new, str)):
        return ""
    if old.startswith(MANIFEST_FILE) and new.startswith(MANIFEST_FILE) and old.split(",")[0] == new.split(",")[0]:
        return ("the manifest is the same but its shards' sizes or modification times differ: this pairs dir has no "
                "shard sha256s (written before they were added), so a copy that kept no file times (cp -r) reads "
                "as changed; copy it again with `cp -a` (times kept) to continue")
    return ""


def check_shards(files: list[Path], part: dict, where: str) -> None:
    """Every shard of a split entry ({"files", "rows", "sha256"}) holds the bytes it was written with; `files` are
    its files, resolved. See check_shard."""
    for i, path in enumerate(files):
        check_shard(path, part, i, where)


def check_shard(path: Path, part: dict, i: int, where: str) -> None:
    """Shard i of a split entry holds the bytes it was written with: its sha256 equals the one the manifest recorded
    (one read of the file). A manifest without sha256s (written before they were added) is trusted on its footers
    and row counts alone, as it was then."""
    digests = part.get(SHA256)
    if digests is None:
        return
    if not isinstance(digests, list) or len(digests) != len(part.get("files", [])):
        raise PairsFormatError(f"{where}: lists {len(part.get('files', []))} files but {SHA256} holds "
                               f"{len(digests) if isinstance(digests, list) else digests!r}; the manifest was edited: "
                               "re-run the `gte prep`/`gte mine` that wrote it")
    if not path.is_file():
        raise PairsFormatError(f"{path} is listed in {where} but does not exist; restore it or re-run the "
                               "`gte prep`/`gte mine` that wrote this pairs dir")
    if file_sha256(path) != digests[i]:
        raise PairsFormatError(f"{path}: its bytes differ from the sha256 recorded for it ({where}.{SHA256}[{i}]): "
                               "a damaged, edited or replaced shard; restore it or re-run the `gte prep`/`gte mine` "
                               "that wrote this pairs dir")


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
    # a test set (gte prep split.heldout_fraction=1.0) has held-out BEIR sets and no train rows: evaluated, not trained
    if not any(int(e.get("train", {}).get("rows", 0)) or e.get("beir") for e in sources.values()):
        raise PairsFormatError(f"{root}: no source has a training row; nothing was written as complete")
    sources = {name: _with_digests(Path(root), entry) for name, entry in sources.items()}
    path = write_json(Path(root) / MANIFEST_FILE, {"format": FORMAT, "sources": sources, **extra})
    write_record(root, record)
    return path


def _with_digests(root: Path, entry: dict) -> dict:
    """A manifest entry whose splits record the sha256 of each of their files, in `files` order."""
    out = dict(entry)
    for split in SPLITS:
        part = entry.get(split)
        if isinstance(part, dict) and "files" in part:
            out[split] = {**part, SHA256: [file_sha256(resolve(root, f)) for f in part["files"]]}
    return out


def fit_examples(dirs: list[str], rows: int, key: str, purpose: str,
                 split: str = "train") -> dict[str, tuple[list[str], list[str]]]:
    """`rows` evenly spaced rows of the `split` (train, or dev: rows never trained on) of every source of each pairs
    dir: {"<dir name>/<source>": (queries, positives)}. key: the config key or argument naming dirs; purpose: what
    the rows are for (error messages)."""
    tasks = {}
    for folder in dirs:
        manifest = read_manifest(folder, key=key)
        for source, entry in manifest["sources"].items():
            part = entry.get(split, {})
            files = part.get("files", [])
            if not files:
                continue
            first = resolve(Path(folder), files[0])
            check_shard(first, part, 0, f"{Path(folder) / MANIFEST_FILE} sources.{source}.{split}")
            table = pq.read_table(first, columns=["query", "positive"])
            pick = sorted({int(i) for i in range(0, table.num_rows, max(1, table.num_rows // rows))})[:rows]
            table = table.take(pick)
            tasks[f"{Path(folder).name}/{source}"] = (table["query"].to_pylist(), table["positive"].to_pylist())
    if not tasks:
        how = " (gte prep split.dev_fraction cuts one)" if split == DEV_SPLIT else ""
        raise UserError(f"{key}={dirs}: no source with {split} rows to {purpose}{how}")
    return tasks
