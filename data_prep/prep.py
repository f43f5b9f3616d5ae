"""`gte prep CONFIG [key=value ...]`: raw corpora -> cleaned, deduplicated, decontaminated, key-split pairs.

  gte prep configs/prep.yaml                                   # every built-in source, all of it
  gte prep configs/prep.yaml out_dir=/tmp/pairs max_pairs.default=5000 num_proc=2   # a capped CPU run

Stages (counts of each go to the manifest and report.md):
  1. read + clean (worker processes): NFKC, whitespace, markup, token bounds, identical sides; MinHash signatures
  2. exact dedup, then near dedup (MinHash LSH), within and across sources, first occurrence kept
  3. split by key into train / held-out (held-out capped per source)
  4. decontaminate: drop train pairs whose query or positive matches an evaluation text
     (STS-B test sentences, every source's held-out texts, optional extra files)
  5. write Parquet shards, BEIR held-out sets, manifest.json, report.md + lengths.png, then the completion marker
Cleaned records wait on disk between stages, so memory holds per-record hashes and signatures, not texts.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_prep import stages
from data_prep.clean import LengthBounds
from data_prep.dedup import DedupConfig, EvalIndex, decontaminate, exact_dedup, near_dedup
from data_prep.readers import FORMATS
from data_prep.sources import BUILTIN_SOURCES, DEDUP_ON
from data_prep.split import SplitConfig, assign_heldout
from data_prep.write import (
    MARKER,
    ShardWriter,
    config_hash,
    is_complete,
    mark_complete,
    write_beir,
    write_manifest,
)
from gte_model.configio import config_to_dict, dump_config, load_config


@dataclass
class FileSource:
    """A user file (or saved `datasets` folder) and which of its columns hold what."""

    name: str = ""  # source name in the output (rows with a `source` column value use that instead)
    path: str = ""
    format: str = "auto"  # jsonl | csv | tsv | parquet | hf_disk | auto (from the name)
    query: str = "query"
    positive: str = "positive"
    negatives: str | None = None
    source: str | None = None
    key: str | None = None  # unset: the query text is the key
    strip_html: bool = False  # remove HTML tags and entities while cleaning


@dataclass
class DecontamConfig:
    enabled: bool = True
    stsb_test: bool = True  # the STS Benchmark test sentences are evaluation texts
    heldout: bool = True  # every source's held-out queries and positives are evaluation texts
    threshold: float = 0.8  # MinHash Jaccard at or above which a training text counts as the evaluation text
    extra_files: list[str] = field(default_factory=list)  # plain text files, one evaluation text per line


@dataclass
class PrepConfig:
    out_dir: str = "data/pairs"
    sources: list[str] = field(default_factory=lambda: list(BUILTIN_SOURCES))  # built-in source names
    files: list[FileSource] = field(default_factory=list)  # user data
    # Cap on cleaned pairs per source name; "default" applies to every source not named. Built-in sources are
    # read in key-hash order, so a cap takes a uniform sample; user files keep their first pairs.
    max_pairs: dict[str, int] = field(default_factory=dict)
    length: LengthBounds = field(default_factory=LengthBounds)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontaminate: DecontamConfig = field(default_factory=DecontamConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    seed: int = 0  # the split seed
    num_proc: int = 1  # worker processes for cleaning and MinHash; the output does not depend on it
    on_error: str = "raise"  # raise | skip: what a malformed user row does (skips are counted in the report)
    batch_size: int = 2000  # records per worker task
    rows_per_shard: int = 100_000
    overwrite: bool = False  # replace an existing output made with another config

    def validate(self) -> list[str]:
        errors = []
        unknown = [s for s in self.sources if s not in BUILTIN_SOURCES]
        if unknown:
            errors.append(f"sources={unknown}: unknown built-in source(s); choose from {', '.join(BUILTIN_SOURCES)} "
                          "(user data goes under files)")
        if not self.sources and not self.files:
            errors.append("sources=[] and files=[]: nothing to prepare; name a built-in source or add a file")
        for i, spec in enumerate(self.files):
            if not spec.name or not spec.path:
                errors.append(f"files.{i}: set both name and path (got name={spec.name!r}, path={spec.path!r})")
            if spec.format not in (*FORMATS, "auto"):
                errors.append(f"files.{i}.format={spec.format!r}: use one of {', '.join(FORMATS)} or auto")
        if self.on_error not in ("raise", "skip"):
            errors.append(f"on_error={self.on_error!r}: use raise or skip")
        if not 0.0 <= self.split.heldout_fraction < 1.0:
            errors.append(f"split.heldout_fraction={self.split.heldout_fraction}: must be in [0, 1)")
        for name in ("threshold",):
            for where, value in (("dedup", self.dedup.threshold), ("decontaminate", self.decontaminate.threshold)):
                if not 0.0 < value <= 1.0:
                    errors.append(f"{where}.{name}={value}: must be in (0, 1]")
        bad_on = {k: v for k, v in self.dedup.match.items() if v not in ("pair", "positive")}
        if bad_on:
            errors.append(f"dedup.match={bad_on}: each value must be pair or positive")
        if self.num_proc < 1:
            errors.append(f"num_proc={self.num_proc}: must be at least 1")
        return errors


def _dedup_by_positive(cfg: PrepConfig, name: str) -> bool:
    return cfg.dedup.match.get(name, DEDUP_ON.get(name, "pair")) == "positive"


def _prepare_out_dir(out: Path, digest: str, overwrite: bool) -> bool:
    """-> True when a complete output with this config already exists (nothing to do)."""
    if is_complete(out, digest):
        return True
    if out.exists() and any(out.iterdir()):
        ours = (out / "manifest.json").exists() or (out / ".work").exists() or (out / MARKER).exists()
        if (out / MARKER).exists() and not overwrite:
            raise FileExistsError(f"out_dir={out} holds a complete prep output made with another config; "
                                  "set overwrite=true to replace it or choose another out_dir")
        if not ours:
            raise FileExistsError(f"out_dir={out} is not empty and is not a prep output; choose an empty out_dir")
        shutil.rmtree(out)  # a partial or replaced output of ours: start clean
    out.mkdir(parents=True, exist_ok=True)
    return False


def _route(staged: stages.Staged, train: np.ndarray, heldout: np.ndarray, out: Path,
           rows_per_shard: int) -> tuple[dict, dict]:
    """Stream the staged records into train/held-out shards and BEIR sets. -> (manifest sources, beir sizes)"""
    writers: dict[tuple[str, str], ShardWriter] = {}
    heldout_records: dict[str, list[dict]] = {}
    index = 0
    for path in staged.files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
            for rec in batch.to_pylist():
                split = "train" if train[index] else "heldout" if heldout[index] else None
                index += 1
                if split is None:
                    continue
                key = (rec["source"], split)
                if key not in writers:
                    writers[key] = ShardWriter(out, rec["source"], split, rows_per_shard)
                writers[key].add(rec)
                if split == "heldout":
                    heldout_records.setdefault(rec["source"], []).append(rec)
    assert index == len(train), f"staged {index} records, expected {len(train)}"
    sources: dict[str, dict] = {}
    beir: dict[str, dict] = {}
    for name in staged.names:
        train_part = writers[(name, "train")].close() if (name, "train") in writers else {"files": [], "rows": 0}
        held_part = writers[(name, "heldout")].close() if (name, "heldout") in writers else {"files": [], "rows": 0}
        if not train_part["rows"] and not held_part["rows"]:
            continue
        sources[name] = {"train": train_part, "heldout": held_part}
        if heldout_records.get(name):
            beir[name] = write_beir(out / "beir" / name, heldout_records[name])
            sources[name]["beir"] = f"beir/{name}"
    return sources, beir


def _eval_index(cfg: PrepConfig, staged: stages.Staged, heldout: np.ndarray, signer_cfg: DedupConfig) -> EvalIndex:
    index = EvalIndex(signer_cfg, cfg.decontaminate.threshold)
    texts: list[str] = []
    if cfg.decontaminate.stsb_test:
        from data_prep.sources import stsb_test_sentences

        texts += stsb_test_sentences()
    for name in cfg.decontaminate.extra_files:
        texts += [line.strip() for line in Path(name).read_text(encoding="utf-8").splitlines() if line.strip()]
    if texts:
        hashes, sigs = stages.hash_and_sign(texts, signer_cfg)
        index.add(hashes, sigs)
    if cfg.decontaminate.heldout:
        index.add(staged.q_hash[heldout], staged.q_sig[heldout])
        index.add(staged.p_hash[heldout], staged.p_sig[heldout])
    return index


def prep(cfg: PrepConfig) -> Path:
    """Run every stage; -> the output folder (with manifest.json). A complete output of the same config is kept."""
    started = time.time()
    out = Path(cfg.out_dir)
    settings = config_to_dict(cfg)
    digest = config_hash({k: v for k, v in settings.items() if k not in ("num_proc", "overwrite")})
    if _prepare_out_dir(out, digest, cfg.overwrite):
        print(f"prep: {out} is complete for this config; nothing to do")
        return out
    timings: dict[str, float] = {}
    staged = stages.stage_all(cfg, out / ".work", _dedup_by_positive)
    timings["read_clean_minhash"] = time.time() - started
    n = len(staged.source_ids)
    num_sources = len(staged.names)
    keep = np.ones(n, dtype=bool)
    counts = {"exact": np.zeros((num_sources, 2), np.int64), "near": np.zeros((num_sources, 2), np.int64)}
    if cfg.dedup.exact:
        keep, counts["exact"] = exact_dedup(staged.source_ids, staged.p_hash, staged.pair_hash,
                                            staged.by_positive, keep, num_sources)
    if cfg.dedup.near:
        keep, counts["near"] = near_dedup(staged.q_sig, staged.p_sig, staged.source_ids, staged.by_positive,
                                          keep, num_sources, cfg.dedup)
    timings["dedup"] = time.time() - started - sum(timings.values())
    heldout = np.zeros(n, dtype=bool)
    for sid in range(num_sources):
        mine = staged.source_ids == sid
        heldout[mine] = assign_heldout(staged.key_hash[mine], staged.q_hash[mine], keep[mine], cfg.split)
    train = keep & ~heldout
    decontaminated = np.zeros(num_sources, np.int64)
    eval_texts = 0
    if cfg.decontaminate.enabled:
        index = _eval_index(cfg, staged, heldout, cfg.dedup)
        eval_texts = len(index)
        train, decontaminated = decontaminate(index, staged.q_hash, staged.p_hash, staged.q_sig, staged.p_sig,
                                              staged.source_ids, train, num_sources)
    timings["split_decontaminate"] = time.time() - started - sum(timings.values())
    sources, beir = _route(staged, train, heldout, out, cfg.rows_per_shard)
    timings["write"] = time.time() - started - sum(timings.values())
    stats = stages.source_stats(staged, counts, keep, heldout, train, decontaminated, beir)
    extra = {
        "stats": stats,
        "alpha": stages.alpha_sizes({name: s["train"]["rows"] for name, s in sources.items()}),
        "eval_texts": eval_texts,
        "readers": staged.reader_stats,
        "wall_time_s": round(time.time() - started, 1),
        "stage_seconds": {k: round(v, 1) for k, v in timings.items()},
        "peak_rss_mb": stages.peak_rss_mb(),
        "config": settings,
    }
    write_manifest(out, sources, extra)
    from data_prep.report import write_report

    write_report(out, json.loads((out / "manifest.json").read_text()), staged, train)
    shutil.rmtree(out / ".work", ignore_errors=True)
    mark_complete(out, digest)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(argv or [])
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    path, overrides = (None, argv) if "=" in argv[0] else (argv[0], argv[1:])
    cfg = load_config(PrepConfig, path, overrides)
    print(dump_config(cfg))
    out = prep(cfg)
    manifest = json.loads((out / "manifest.json").read_text())
    print((out / "report.md").read_text() if (out / "report.md").exists() else json.dumps(manifest["stats"]))
    return 0


def iter_config_sources(cfg: PrepConfig) -> Iterator[tuple[str, FileSource | None]]:
    """(name, None) for each built-in source, then (name, spec) for each user file, in config order."""
    for name in cfg.sources:
        yield name, None
    for spec in cfg.files:
        yield spec.name, spec


