"""Reading and writing the shared pairs-dir format for `gte mine` (manifest.json + parquet shards).

Format (see the project README): manifest {"format": "gte-pairs/1", "sources": {name: {"train": {"files", "rows"},
"heldout": {"files", "rows"}, "beir": folder}}}; parquet columns query, positive, negatives (list<string>), source,
key. Paths in a manifest are relative to its folder or absolute.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PAIRS_FORMAT = "gte-pairs/1"
PAIRS_SCHEMA = pa.schema(
    [
        ("query", pa.string()),
        ("positive", pa.string()),
        ("negatives", pa.list_(pa.string())),
        ("source", pa.string()),
        ("key", pa.string()),
    ]
)


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


def read_manifest(in_dir: Path) -> dict:
    path = Path(in_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: input_dir must be a pairs dir written by `gte prep`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != PAIRS_FORMAT or not isinstance(manifest.get("sources"), dict):
        raise ValueError(f"{path}: format {manifest.get('format')!r} is not {PAIRS_FORMAT!r} with a 'sources' map")
    return manifest


def resolve(in_dir: Path, file: str) -> Path:
    p = Path(file)
    return p if p.is_absolute() else (Path(in_dir) / p).resolve()


def read_train(in_dir: Path, entry: dict, name: str) -> PairRows:
    files = [resolve(in_dir, f) for f in entry.get("train", {}).get("files", [])]
    if not files:
        raise ValueError(f"source {name!r} in {in_dir}/manifest.json lists no train files")
    tables = [pq.read_table(f, columns=["query", "positive", "key"]) for f in files]
    table = pa.concat_tables(tables)
    return PairRows(*(table.column(c).to_pylist() for c in ("query", "positive", "key")))


def read_extra_corpus(paths: Sequence[str]) -> list[str]:
    """Extra documents: .txt (one per line), .jsonl ({"text": ...}, BEIR corpus style) or .parquet (text/positive)."""
    texts: list[str] = []
    for raw in paths:
        path = Path(raw)
        if path.suffix == ".txt":
            texts += [line.strip() for line in path.read_text().splitlines() if line.strip()]
        elif path.suffix == ".jsonl":
            with path.open() as fh:
                for n, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            texts.append(str(json.loads(line)["text"]))
                        except (json.JSONDecodeError, KeyError) as exc:
                            raise ValueError(f"{path}:{n}: not a JSON object with a 'text' field ({exc})") from exc
        elif path.suffix == ".parquet":
            table = pq.read_table(path)
            column = next((c for c in ("text", "positive") if c in table.column_names), None)
            if column is None:
                raise ValueError(f"{path}: needs a 'text' or 'positive' column; it has {table.column_names}")
            texts += [t for t in table.column(column).to_pylist() if t]
        else:
            raise ValueError(f"extra_corpus file {path}: use .txt (a doc per line), .jsonl ('text') or .parquet")
    return texts


def write_source(out: Path, name: str, rows: PairRows, negatives: list[list[str]], keep: np.ndarray, entry: dict,
                 in_dir: Path, rows_per_shard: int) -> dict:
    """Write the kept rows as <out>/<name>/train-NNNNN.parquet; the manifest entry (held-out/BEIR -> the input's)."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("train-*.parquet"):  # a killed earlier run may have left more shards
        old.unlink()
    idx = np.flatnonzero(keep)
    files = []
    for shard, start in enumerate(range(0, max(len(idx), 1), rows_per_shard)):
        part = idx[start : start + rows_per_shard]
        table = pa.table(
            {
                "query": [rows.queries[i] for i in part],
                "positive": [rows.positives[i] for i in part],
                "negatives": [negatives[i] for i in part],
                "source": [name] * len(part),
                "key": [rows.keys[i] for i in part],
            },
            schema=PAIRS_SCHEMA,
        )
        rel = f"{name}/train-{shard:05d}.parquet"
        pq.write_table(table, out / rel)
        files.append(rel)
    result: dict = {"train": {"files": files, "rows": int(len(idx))}}
    if "heldout" in entry:
        held = entry["heldout"]
        result["heldout"] = {**held, "files": [str(resolve(in_dir, f)) for f in held.get("files", [])]}
    if entry.get("beir"):
        result["beir"] = str(resolve(in_dir, entry["beir"]))
    return result
