"""`gte prep CONFIG [key=value ...]`: raw corpora -> cleaned, deduplicated, decontaminated, key-split pairs.

  gte prep configs/prep.yaml                                   # every built-in source, all of it
  gte prep configs/prep.yaml out_dir=/tmp/pairs max_pairs.default=5000 num_proc=2   # a capped CPU run
  gte prep configs/prep.yaml engine=ray ray.num_workers=2        # the same output, on Ray (data_prep.engine)

Steps (counts of each go to the manifest and report.md):
  1. read + clean (worker processes): NFKC, whitespace, markup, token bounds, identical sides; MinHash signatures
  2. exact dedup, then near dedup (MinHash LSH), within and across sources, first occurrence kept
  3. split by key into train / held-out (held-out capped per source)
  4. decontaminate: drop train pairs whose query or positive matches an evaluation text
     (STS-B test sentences, every source's held-out texts, optional extra files)
  5. write Parquet shards, BEIR held-out sets, report.md + lengths.png, manifest.json and the completion record
Cleaned records wait on disk between steps, so memory holds per-record hashes and signatures, not texts.
Under engine=ray, step 1 runs as Ray tasks, near dedup as a distributed band-bucket groupby and decontamination as
record-range tasks (data_prep.ray_dedup); every result is put back in record order, so the output is the same.

Step 1 stages each configured source into `.<out_dir name>.prep-stage/<config digest>/` beside out_dir, finished
sources marked last: a killed run's re-run reads only the sources not staged yet (same config and inputs), and a
finished run removes the folder. The output is built in a temp folder beside out_dir and renamed into place
(gte_model.core.atomic.build_dir): an interrupted run leaves the old output as it was, and a folder that is not an
earlier prep output (a model, a mined dir, user files) is never replaced. Its completion record
(gte_model.core.record) holds the config and a fingerprint of every input: a re-run with the same record does
nothing, one with another record is refused unless overwrite=true, which always rebuilds. An input inside out_dir
is refused (replacing out_dir would delete it). The run holds out_dir's lock (gte_model.core.lock) throughout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from data_prep import paths, staging
from data_prep.dedup import DedupConfig, EvalIndex, exact_dedup
from data_prep.engine import Engine, open_engine
from data_prep.prep_config import DecontamConfig, FileSource, PrepConfig, iter_config_sources
from data_prep.report import write_report
from data_prep.sources import source_fingerprint, stsb_test_sentences
from data_prep.split import assign_dev, assign_heldout
from gte_model.core import pairs
from gte_model.core.atomic import build_dir, check_replaceable
from gte_model.core.config import ConfigError, config_from_argv, config_to_dict, dump_config
from gte_model.core.errors import UserError, names_path
from gte_model.core.lock import hold
from gte_model.core.memory import private_peak_tracking
from gte_model.core.record import Record, check_done, defaults_of, file_fingerprint, flatten

PREP_VERSION = 1  # bump when the same config and inputs would give other output (cleaning, dedup, split rules)
# Keys that change speed or where the output lives, never its content: a finished output with other values is done.
NO_OUTPUT_EFFECT = frozenset({"out_dir", "num_proc", "batch_size", "overwrite", "engine", "ray"})

__all__ = ["DecontamConfig", "FileSource", "PrepConfig", "iter_config_sources", "main", "prep", "prep_record"]


class NoTrainingRows(UserError):
    """Every pair was skipped, dropped, held out or decontaminated: the message names the count that hit zero."""


def prep_record(cfg: PrepConfig) -> Record:
    """What a prep output is made of: its config (minus NO_OUTPUT_EFFECT) and a fingerprint of each input."""
    inputs = {f"sources.{name}": source_fingerprint(name) for name in cfg.sources}
    inputs |= {f"files.{i}.path": paths.fingerprint(spec.path) for i, spec in enumerate(cfg.files)}
    if cfg.decontaminate.enabled:
        if cfg.decontaminate.stsb_test:
            inputs["decontaminate.stsb_test"] = source_fingerprint("stsb_test")
        inputs |= {f"decontaminate.extra_files.{i}": file_fingerprint(p)
                   for i, p in enumerate(cfg.decontaminate.extra_files)}
    return Record("prep", PREP_VERSION, flatten(cfg, skip=NO_OUTPUT_EFFECT), inputs,
                  defaults=defaults_of(cfg, NO_OUTPUT_EFFECT))


def prep(cfg: PrepConfig) -> Path | str:
    """Run every step; -> the output folder (a finished pairs dir; its URL for a remote out_dir). An output with
    the same record is kept."""
    errors = cfg.validate()
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    if paths.is_remote(cfg.out_dir):
        return paths.build_remote(cfg.out_dir, lambda folder: prep(replace(cfg, out_dir=str(folder))))
    out = Path(paths.local(cfg.out_dir))
    _check_inputs_outside(cfg, out)
    with hold(out, "out_dir"):  # staging and building: a second prep of this out_dir refuses, naming this one
        return _prep(cfg, out)


def _check_inputs_outside(cfg: PrepConfig, out: Path) -> None:
    """Refuse an input file inside out_dir (or out_dir inside an input folder): the rebuild replaces out_dir whole."""
    named = [(f"files.{i}.path", spec.path) for i, spec in enumerate(cfg.files)]
    named += [(f"decontaminate.extra_files.{i}", p) for i, p in enumerate(cfg.decontaminate.extra_files)]
    where = out.resolve()
    for key, path in named:
        if paths.is_remote(path):
            continue
        inp = Path(paths.local(path)).resolve()
        if inp == where or where in inp.parents or inp in where.parents:
            raise UserError(f"{key}={path}: is inside out_dir={cfg.out_dir} (or around it), which prep replaces "
                            "whole; nothing was deleted; move the input out of out_dir, or choose another out_dir")


def _prep(cfg: PrepConfig, out: Path) -> Path:
    # the kind only, before any work: whether an earlier prep output is rebuilt is its record's call (check_done)
    check_replaceable(out, "out_dir", "gte prep", overwrite=True)
    want = prep_record(cfg)
    if not cfg.overwrite and check_done(out, want, "overwrite"):
        print(f"gte prep: {out} is complete for this config and these inputs; nothing to do", file=sys.stderr)
        return out
    stage_root = out.parent / f".{out.name}.prep-stage"  # step 1's per-source results: what a killed run keeps
    identity = json.dumps([want.kind, want.version, want.config, want.inputs, staging.FORMAT], sort_keys=True,
                          default=str)
    stage_dir = stage_root / hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()
    for old in stage_root.glob("*"):  # staged under another config or other inputs: of no use now
        if old != stage_dir:
            shutil.rmtree(old, ignore_errors=True)
    with (open_engine(cfg.engine, cfg.ray, cfg.num_proc) as engine, private_peak_tracking(),
          build_dir(out, "gte prep", "out_dir", overwrite=True) as tmp):
        manifest = _build(cfg, tmp, stage_dir, engine)
        pairs.finish(tmp, manifest.pop("sources"), manifest, want)
    shutil.rmtree(stage_root, ignore_errors=True)
    return out


def _build(cfg: PrepConfig, out: Path, stage_dir: Path, engine: Engine) -> dict:
    """Steps 1-5 into `out` (step 1 through `stage_dir`, kept when a run is killed; steps 1, 2 and 4 on `engine`);
    -> the manifest (sources + stats) for `pairs.finish`."""
    steps = staging.Steps()
    with names_path(stage_dir):  # a full disk while staging names the stage folder (the build names out_dir)
        staged = staging.stage_all(cfg, stage_dir, engine)
    steps.done("read_clean_minhash")
    n, num_sources = len(staged.source_ids), len(staged.names)
    keep = np.ones(n, dtype=bool)
    counts = {"exact": np.zeros((num_sources, 2), np.int64), "near": np.zeros((num_sources, 2), np.int64)}
    if cfg.dedup.exact:
        keep, counts["exact"] = exact_dedup(staged.source_ids, staged.p_hash, staged.pair_hash,
                                            staged.by_positive, keep, num_sources)
    if cfg.dedup.near:
        keep, counts["near"] = engine.near_dedup(staged.sigs, staged.source_ids, staged.by_positive, keep,
                                                 num_sources, cfg.dedup)
    steps.done("dedup")
    heldout, dev = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    for sid in range(num_sources):
        rows = staged.source_ids == sid
        heldout[rows] = assign_heldout(staged.key_hash[rows], staged.q_hash[rows], keep[rows], cfg.split)
        dev[rows] = assign_dev(staged.key_hash[rows], keep[rows], cfg.split) & ~heldout[rows]
    train = keep & ~heldout & ~dev
    decontaminated = np.zeros(num_sources, np.int64)
    eval_texts = 0
    if cfg.decontaminate.enabled:
        index = _eval_index(cfg, staged, heldout, cfg.dedup)
        eval_texts = len(index)
        train, decontaminated = engine.decontaminate(index, staged.q_hash, staged.p_hash, staged.sigs,
                                                     staged.source_ids, train, num_sources)
    steps.done("split_decontaminate")
    # split.heldout_fraction=1.0 asks for a test set: no train rows is the point, no held-out rows is not
    if not train.any() and (cfg.split.heldout_fraction < 1 or not heldout.any()):
        stats = staging.source_stats(staged, counts, keep, heldout, train, decontaminated, {})
        raise NoTrainingRows(f"out_dir={cfg.out_dir}: {staging.no_train_rows(stats, staged.reader_stats)}")
    sources, beir = _route(staged, train, heldout, dev, out, cfg.rows_per_shard)
    steps.done("write")
    stats = staging.source_stats(staged, counts, keep, heldout, train, decontaminated, beir)
    manifest = {
        "sources": sources,
        "stats": stats,
        "alpha": staging.alpha_sizes({name: s["train"]["rows"] for name, s in sources.items()}),
        "eval_texts": eval_texts,
        "readers": staged.reader_stats,
        **steps.manifest(engine),
        "config": config_to_dict(cfg),
    }
    write_report(out, {"format": pairs.FORMAT, **manifest}, staged, train)
    return manifest


def _route(staged: staging.Staged, train: np.ndarray, heldout: np.ndarray, dev: np.ndarray, out: Path,
           rows_per_shard: int) -> tuple[dict, dict]:
    """Stream the staged records into train/held-out/dev shards and BEIR sets (of the held-out rows). -> (manifest
    sources, beir sizes)"""
    writers: dict[tuple[str, str], pairs.ShardWriter] = {}
    heldout_records: dict[str, list[dict]] = {}
    index = 0
    for path in staged.files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=8192):
            for rec in batch.to_pylist():
                split = "train" if train[index] else "heldout" if heldout[index] else "dev" if dev[index] else None
                index += 1
                if split is None:
                    continue
                key = (rec["source"], split)
                if key not in writers:
                    writers[key] = pairs.ShardWriter(out, rec["source"], split, rows_per_shard)
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
        if (name, "dev") in writers:
            sources[name]["dev"] = writers[(name, "dev")].close()
        if heldout_records.get(name):
            beir[name] = pairs.write_beir(out / "beir" / name, heldout_records[name])
            sources[name]["beir"] = f"beir/{name}"
    return sources, beir


def _eval_index(cfg: PrepConfig, staged: staging.Staged, heldout: np.ndarray, signer_cfg: DedupConfig) -> EvalIndex:
    index = EvalIndex(signer_cfg, cfg.decontaminate.threshold)
    texts: list[str] = []
    if cfg.decontaminate.stsb_test:
        texts += stsb_test_sentences()
    for i, name in enumerate(cfg.decontaminate.extra_files):
        texts += _eval_lines(Path(name), f"decontaminate.extra_files.{i}")
    if texts:
        hashes, sigs = staging.hash_and_sign(texts, signer_cfg)
        index.add(hashes, sigs)
    if cfg.decontaminate.heldout:
        q_sig, p_sig = staged.sigs.rows(np.flatnonzero(heldout))
        index.add(staged.q_hash[heldout], q_sig)
        index.add(staged.p_hash[heldout], p_sig)
    return index


def _eval_lines(path: Path, key: str) -> list[str]:
    """The non-blank lines of an evaluation-text file, or a UserError naming the file, the line and the fix."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{key}={path}: cannot be read ({exc.strerror}); check the path") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UserError(f"{path}:{line}: not valid UTF-8; save {key} as UTF-8 text, one evaluation text per line"
                        ) from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> int:
    """`gte prep [CONFIG.yaml] [key=value ...]`; expected failures raise UserError (the `gte` CLI prints one line)."""
    cfg = config_from_argv(PrepConfig, argv, __doc__)
    if cfg is None:
        return 0
    print(dump_config(cfg))
    out = prep(cfg)
    report = Path(out) / "report.md"
    print(report.read_text() if isinstance(out, Path) and report.is_file() else f"-> {out}")
    return 0
