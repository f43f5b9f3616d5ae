"""Tiny inputs for the prep and mining tests: user files for `gte prep`, finished pairs dirs for `gte mine`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.mine import MineConfig, NegativesConfig
from data_prep.prep import PREP_VERSION, PrepConfig
from data_prep.sources import stsb_test_sentences
from gte_model.core import pairs
from gte_model.core.config import load_config
from gte_model.core.record import Record
from gte_model.embed_config import EmbedConfig
from tests.conftest import WORDS

PREP_WORDS = [f"w{i}" for i in range(300)]


# ---- prep ------------------------------------------------------------------------------------------------------
def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(PREP_WORDS) for _ in range(n))


def write_prep_sources(folder: Path) -> str:
    """faq.jsonl (a planted near duplicate and a planted STS-B test sentence) and notes.jsonl; -> the planted one."""
    rng = random.Random(0)
    faq = [{"question": f"question {i} " + _text(rng, 4), "answer": _text(rng, 20), "id": f"f{i // 2}"}
           for i in range(80)]
    faq.append({"question": "a planted near duplicate", "answer": faq[3]["answer"] + " extra", "id": "dup"})
    planted = stsb_test_sentences()[7]
    faq.append({"question": planted, "answer": _text(rng, 12), "id": "leak"})
    notes = [{"title": f"note {i} " + _text(rng, 3), "body": _text(rng, 30)} for i in range(50)]
    (folder / "faq.jsonl").write_text("".join(json.dumps(r) + "\n" for r in faq))
    (folder / "notes.jsonl").write_text("".join(json.dumps(r) + "\n" for r in notes))
    return planted


def prep_files_arg(folder: Path) -> str:
    return (f"files=[{{name: faq, path: {folder}/faq.jsonl, query: question, positive: answer, key: id}},"
            f"{{name: notes, path: {folder}/notes.jsonl, query: title, positive: body}}]")


PREP_OVERRIDES = ["sources=[]", "split.heldout_fraction=0.3", "split.max_heldout_queries=12",
                  "length.positive_min_tokens=3"]


def prep_config(folder: Path, out: Path, **extra) -> PrepConfig:
    """The two files of `write_prep_sources` (already written in `folder`) -> out."""
    overrides = [*PREP_OVERRIDES, f"out_dir={out}", prep_files_arg(folder), *[f"{k}={v}" for k, v in extra.items()]]
    return load_config(PrepConfig, None, overrides)


# ---- mining ----------------------------------------------------------------------------------------------------
def sentences(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9))) for _ in range(n)]


def write_pairs_dir(folder: Path, sources: dict[str, list[tuple[str, str]]], heldout_rows: int = 3) -> Path:
    """A finished pairs dir in the shared format: train parquet per source, a held-out file and a BEIR folder entry,
    manifest and completion record."""
    entries = {}
    for name, rows in sources.items():
        (folder / name).mkdir(parents=True)
        (folder / "beir" / name).mkdir(parents=True)
        entries[name] = {"beir": f"beir/{name}"}
        for split, part in (("train", rows), ("heldout", rows[:heldout_rows])):
            table = pa.table({"query": [q for q, _ in part], "positive": [p for _, p in part],
                              "negatives": [[] for _ in part], "source": [name] * len(part),
                              "key": [f"k{i}" for i in range(len(part))]}, schema=pairs.SCHEMA)
            pq.write_table(table, folder / name / f"{split}-00000.parquet")
            entries[name][split] = {"files": [f"{name}/{split}-00000.parquet"] if part else [], "rows": len(part)}
    if not any(e["train"]["rows"] for e in entries.values()):  # pairs.finish refuses that: write it by hand
        (folder / pairs.MANIFEST_FILE).write_text(json.dumps({"format": pairs.FORMAT, "sources": entries}))
        (folder / "gte_record.json").write_text(json.dumps({"kind": "prep", "version": PREP_VERSION}))
        return folder
    pairs.finish(folder, entries, {}, Record("prep", PREP_VERSION))
    return folder


def mine_config(tmp_path: Path, pairs_dir: Path, out: str, **over) -> MineConfig:
    cfg = MineConfig(input_dir=str(pairs_dir), out_dir=str(tmp_path / out),
                     negatives=NegativesConfig(k=4, rank_min=1, rank_max=20, margin=0.0, max_score=0.999),
                     embed=EmbedConfig(batch_size=32, max_seq_len=32, bf16=False, shard_size=64,
                                       cache_dir=str(tmp_path / f"cache-{out}")))
    for key, value in over.items():
        obj = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, leaf, value)
    assert not cfg.validate(), cfg.validate()
    return cfg


def shard_rows(out: Path, files: list[str]) -> list[dict]:
    return [r for f in files for r in pq.read_table(out / f).to_pylist()]


def read_rows(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = []
    for entry in manifest["sources"].values():
        for f in entry["train"]["files"]:
            rows += pq.read_table(out / f).to_pylist()
    return rows
