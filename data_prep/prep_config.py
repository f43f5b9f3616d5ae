"""The `gte prep` config schema and its validation: every problem a later step would reject, in override spelling.

`PrepConfig.validate()` reads nothing but the config and the file system's answer to "does this path exist" and
changes nothing, so `gte prep`, `gte run` and tests all get the same list of problems before any work starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from data_prep import paths
from data_prep.clean import LengthBounds
from data_prep.dedup import DedupConfig
from data_prep.documents import DocumentsConfig
from data_prep.engine import ENGINE_HINT, ENGINES, RayConfig
from data_prep.readers import FORMATS, TEXT_FORMATS, format_problem
from data_prep.sources import BUILTIN_SOURCES, DEDUP_ON
from data_prep.split import SplitConfig
from gte_model.core.config import bounded, field_problems

MATCH_MODES = ("pair", "positive")


@dataclass
class FileSource:
    """A user file (or saved `datasets` folder) and which of its columns hold what."""

    name: str = ""  # source name in the output (rows with a `source` column value use that instead)
    path: str = ""  # a local path or an fsspec URL (s3://..., memory://...; data_prep.paths)
    # jsonl | csv | tsv | parquet | hf_disk | auto (from the name)
    format: str = bounded("auto", choices=(*FORMATS, "auto"))
    query: str = "query"  # the column holding the query text
    positive: str = "positive"  # the column holding the relevant document
    negatives: str | None = None  # a column holding a list of hard-negative texts; unset: none
    source: str | None = None  # a column naming each row's source (overrides name); unset: every row is `name`
    key: str | None = None  # unset: the query text is the key
    strip_html: bool = False  # remove HTML tags and entities while cleaning
    # pairs: rows are (query, positive) pairs (the columns above); documents: rows, or the .txt/.md/.html files of
    # a folder, are documents turned into pairs by query makers (the `documents` section; data_prep.documents)
    kind: str = bounded("pairs", choices=("pairs", "documents"))
    documents: DocumentsConfig = field(default_factory=DocumentsConfig)  # kind=documents only


@dataclass
class DecontamConfig:
    enabled: bool = True  # drop training pairs that match an evaluation text (the sources below)
    stsb_test: bool = True  # the STS Benchmark test sentences are evaluation texts
    heldout: bool = True  # every source's held-out queries and positives are evaluation texts
    # MinHash Jaccard at or above which a training text counts as the evaluation text
    threshold: float = bounded(0.8, gt=0, le=1)
    extra_files: list[str] = field(default_factory=list)  # plain text files, one evaluation text per line


@dataclass
class PrepConfig:
    out_dir: str = "data/pairs"  # a local folder or an fsspec URL (built locally, then uploaded; data_prep.paths)
    sources: list[str] = field(default_factory=lambda: list(BUILTIN_SOURCES))  # built-in source names
    files: list[FileSource] = field(default_factory=list)  # user data
    # Cap on cleaned pairs per source name; "default" applies to every source not named. Built-in sources are
    # read in key-hash order, so a cap takes a uniform sample; user files keep their first pairs. 0 = none.
    max_pairs: dict[str, int] = field(default_factory=dict)
    length: LengthBounds = field(default_factory=LengthBounds)
    dedup: DedupConfig = field(default_factory=DedupConfig)
    decontaminate: DecontamConfig = field(default_factory=DecontamConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    seed: int = 0  # the split seed
    # worker processes for cleaning and MinHash (engine=local); the output does not depend on it
    num_proc: int = bounded(1, ge=1)
    # local | ray (data_prep.engine); the output does not depend on it
    engine: str = bounded("local", choices=ENGINES, hint=ENGINE_HINT)
    ray: RayConfig = field(default_factory=RayConfig)  # engine=ray only: the cluster and how many workers
    # raise | skip: what a malformed user row does (skips are counted in the report)
    on_error: str = bounded("raise", choices=("raise", "skip"))
    batch_size: int = bounded(2000, ge=1)  # records per worker task
    rows_per_shard: int = bounded(100_000, ge=1)  # rows per output Parquet shard
    overwrite: bool = False  # rebuild the output even when it is complete (or was built from another config)

    def validate(self) -> list[str]:
        """Every problem, one line each (`key=value: problem; fix`); [] when the config is sound. Pure."""
        return (field_problems(self) + _sources_problems(self) + _files_problems(self) + _cap_problems(self)
                + _length_problems(self.length) + _dedup_problems(self)
                + _decontam_problems(self.decontaminate) + _run_problems(self))


def iter_config_sources(cfg: PrepConfig) -> Iterator[tuple[str, FileSource | None]]:
    """(name, None) for each built-in source, then (name, spec) for each user file, in config order."""
    for name in cfg.sources:
        yield name, None
    for spec in cfg.files:
        yield spec.name, spec


def source_cap(cfg: PrepConfig, name: str) -> int | None:
    """The max_pairs cap of a source (its own, else `default`), None when uncapped."""
    return cfg.max_pairs.get(name, cfg.max_pairs.get("default"))


def dedup_by_positive(cfg: PrepConfig, name: str) -> bool:
    """Whether duplicates of this source are judged on the positive alone (else on the whole pair)."""
    return cfg.dedup.match.get(name, DEDUP_ON.get(name, "pair")) == "positive"


def known_source_names(cfg: PrepConfig) -> list[str] | None:
    """Every name a per-source key may use: the configured sources and every built-in one (a key for a built-in
    source left out of `sources` is harmless); None when a file takes names from a `source` column (unknowable)."""
    if any(spec.source for spec in cfg.files):
        return None
    return list(dict.fromkeys([*(name for name, _ in iter_config_sources(cfg)), *BUILTIN_SOURCES]))


# ---- the checks, one group per part of the config --------------------------------------------------------------
def _sources_problems(cfg: PrepConfig) -> list[str]:
    errors = []
    unknown = [s for s in cfg.sources if s not in BUILTIN_SOURCES]
    if unknown:
        errors.append(f"sources={unknown}: unknown built-in source(s){_did_you_mean(unknown[0], BUILTIN_SOURCES)}; "
                      f"choose from {', '.join(BUILTIN_SOURCES)} (user data goes under files)")
    if not cfg.sources and not cfg.files:
        errors.append("sources=[] and files=[]: nothing to prepare; name a built-in source or add a file")
    return errors


def _files_problems(cfg: PrepConfig) -> list[str]:
    errors = []
    for i, spec in enumerate(cfg.files):
        where = f"files.{i}"
        if not spec.name or not spec.path:
            errors.append(f"{where}: set both name and path (got name={spec.name!r}, path={spec.path!r})")
        if spec.name and ("/" in spec.name or "\\" in spec.name or spec.name.startswith(".")):
            errors.append(f"{where}.name={spec.name!r}: a source name becomes a folder name; use letters, digits, "
                          "'_' or '-' (no '/', no leading '.')")
        if spec.name in BUILTIN_SOURCES and spec.name in cfg.sources:
            errors.append(f"{where}.name={spec.name!r}: also a built-in source in `sources`; choose another name")
        if spec.kind == "documents":
            errors += spec.documents.problems(f"{where}.documents")
        if spec.path and not paths.exists(spec.path):
            errors.append(f"{where}.path={spec.path}: does not exist; check the path")
        elif spec.path and spec.format in TEXT_FORMATS and Path(spec.path).is_dir():
            errors.append(f"{where}.path={spec.path}: is a folder, but format={spec.format} reads one file; name the "
                          "file, or set format=hf_disk for a folder written by datasets' save_to_disk")
        elif spec.path and spec.format == "auto":
            problem = format_problem(spec.path)
            if problem:
                errors.append(f"{where}.path={spec.path}: {problem}; set {where}.format")
    return errors


def _cap_problems(cfg: PrepConfig) -> list[str]:
    errors = []
    s = cfg.split
    if s.heldout_fraction < 1 and s.heldout_fraction + s.dev_fraction > 1:
        errors.append(f"split.dev_fraction={s.dev_fraction}: with split.heldout_fraction={s.heldout_fraction} the dev "
                      "and held-out key ranges would overlap; keep their sum <= 1")
    for name, cap in cfg.max_pairs.items():
        if cap < 0:
            errors.append(f"max_pairs.{name}={cap}: must be >= 0 (a cap on cleaned pairs; leave it out for no cap)")
    errors += _unknown_names("max_pairs", [k for k in cfg.max_pairs if k != "default"], known_source_names(cfg))
    return errors


def _length_problems(b: LengthBounds) -> list[str]:
    errors = []
    for side in ("query", "positive"):
        lo, hi = getattr(b, f"{side}_min_tokens"), getattr(b, f"{side}_max_tokens")
        if hi >= 1 and lo > hi:
            errors.append(f"length.{side}_min_tokens={lo} > length.{side}_max_tokens={hi}: every pair would be "
                          f"dropped; lower the min or raise the max")
    return errors


def _dedup_problems(cfg: PrepConfig) -> list[str]:
    d, errors = cfg.dedup, []
    bad = {k: v for k, v in d.match.items() if v not in MATCH_MODES}
    if bad:
        errors.append(f"dedup.match={bad}: each value must be pair or positive")
    errors += _unknown_names("dedup.match", list(d.match), known_source_names(cfg))
    return errors


def _decontam_problems(d: DecontamConfig) -> list[str]:
    errors = []
    for i, name in enumerate(d.extra_files):
        if not Path(name).is_file():
            errors.append(f"decontaminate.extra_files.{i}={name}: does not exist (or is not a file); check the path")
    return errors


def _run_problems(cfg: PrepConfig) -> list[str]:
    errors = []
    if not cfg.out_dir:
        errors.append("out_dir is not set: pass out_dir=<folder for the pairs dir>")
    return errors


def _unknown_names(key: str, names: list[str], known: list[str] | None) -> list[str]:
    if known is None:
        return []
    return [f"{key}.{name}: no source is named {name!r}{_did_you_mean(name, known)}; the sources are "
            f"{', '.join(known) or '(none)'}" for name in names if name not in known]


def _did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""
