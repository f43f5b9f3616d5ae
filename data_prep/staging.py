"""Step 1 of `gte prep` (read + clean + hash + MinHash, in worker processes or Ray tasks) and the bookkeeping of
counts.

Records stream from each source in batches; the engine's workers (data_prep.engine: a process pool, or Ray tasks
under engine=ray) clean them and compute per-record hashes and signatures; the main process appends results in
submission order (so the output depends on neither `num_proc` nor the engine), writes the cleaned records to
staging Parquet shards and their MinHash signatures to raw files beside them (data_prep.signature_files), and keeps
only small fixed-size arrays per record in memory (46 bytes: hashes, lengths, source).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from data_prep import paths
from data_prep.clean import DROP_REASONS, LengthBounds, clean_record
from data_prep.dedup import DedupConfig, Signer
from data_prep.documents import document_batches
from data_prep.engine import Engine
from data_prep.prep_config import FileSource, PrepConfig, dedup_by_positive, iter_config_sources, source_cap
from data_prep.readers import FieldMap, ReadStats, read_records
from data_prep.signature_files import Signatures, SignatureWriter
from data_prep.sources import BUILTIN_SOURCES
from data_prep.split import key_hash
from gte_model.core.atomic import write_json
from gte_model.core.memory import peak_rss_mb, private_peak_mb
from gte_model.core.mixing import GTE_ALPHA, mixing_probabilities
from gte_model.core.pairs import ShardWriter
from gte_model.core.text import canonical, canonical_hash, hash64

FORMAT = 2  # of a stage folder (2: signatures in raw files beside the arrays); part of the folder's name
_SIGNERS: dict[tuple, Signer] = {}  # per process (pool worker, Ray worker): the permutations are built once


@dataclass
class Staged:
    """Cleaned records on disk (`files`, in record order) and one row per record in each array."""

    names: list[str] = field(default_factory=list)  # source names; source_ids index this list
    files: list[Path] = field(default_factory=list)
    counts: dict[str, Counter] = field(default_factory=dict)  # read / cleaning drops / over_cap / cleaned
    reader_stats: dict[str, dict] = field(default_factory=dict)
    source_ids: np.ndarray = None  # int32 [N]
    key_hash: np.ndarray = None  # uint64 [N] split position of the key
    q_hash: np.ndarray = None  # uint64 [N] canonical query
    p_hash: np.ndarray = None  # uint64 [N] canonical positive
    pair_hash: np.ndarray = None  # uint64 [N] canonical (query, positive)
    by_positive: np.ndarray = None  # bool [N] dedup on the positive alone
    sigs: Signatures = None  # MinHash signatures [N, num_perm] of queries and positives, on disk
    q_len: np.ndarray = None  # int32 [N] whitespace tokens
    p_len: np.ndarray = None  # int32 [N]


def _signer(cfg: DedupConfig) -> Signer:
    key = (cfg.num_perm, cfg.seed, cfg.shingle_words)
    if key not in _SIGNERS:
        _SIGNERS[key] = Signer(*key)
    return _SIGNERS[key]


def _pair_hash(query: str, positive: str) -> int:
    return hash64(canonical(query) + "\x1f" + canonical(positive))


def process_batch(task: tuple[list[dict], LengthBounds, bool, int, DedupConfig]) -> dict:
    """Worker (pool process or Ray task): clean a batch and compute its hashes and signatures."""
    records, bounds, strip_html, seed, dedup = task
    kept, drops = [], Counter()
    for rec in records:
        cleaned, why = clean_record(rec, bounds, strip_html)
        if cleaned is None:
            drops[(rec["source"], why)] += 1
        else:
            kept.append(cleaned)
    queries = [r["query"] for r in kept]
    positives = [r["positive"] for r in kept]
    u64 = np.uint64
    return {
        "records": kept,
        "drops": drops,
        "key_hash": np.array([key_hash(r["key"], seed) for r in kept], dtype=u64),
        "q_hash": np.array([canonical_hash(q) for q in queries], dtype=u64),
        "p_hash": np.array([canonical_hash(p) for p in positives], dtype=u64),
        "pair_hash": np.array([_pair_hash(q, p) for q, p in zip(queries, positives)], dtype=u64),
        "q_sig": _signer(dedup).signatures(queries),
        "p_sig": _signer(dedup).signatures(positives),
        "q_len": np.array([len(q.split()) for q in queries], dtype=np.int32),
        "p_len": np.array([len(p.split()) for p in positives], dtype=np.int32),
    }


def hash_and_sign(texts: list[str], cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Canonical hashes uint64 [N] and signatures uint32 [N, num_perm] of texts, in this process."""
    signer = Signer(cfg.num_perm, cfg.seed, cfg.shingle_words)
    return np.array([canonical_hash(t) for t in texts], dtype=np.uint64), signer.signatures(texts)


def _batches(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _order_key(rec: dict) -> bytes:
    # Fixed salt, independent of the split seed: a capped sample must not favour held-out keys.
    return hashlib.blake2b(("order\x1f" + rec["key"]).encode(), digest_size=8).digest()


def _spec_batches(cfg: PrepConfig, name: str, spec: FileSource | None, stats: ReadStats) -> Iterator[list[dict]]:
    if spec is None:
        records = BUILTIN_SOURCES[name]()
        if source_cap(cfg, name) is not None:
            records = sorted(records, key=_order_key)
        for batch in _batches(records, cfg.batch_size):
            stats.rows += len(batch)
            yield batch
        return
    if spec.kind == "documents":
        yield from document_batches(spec.path, spec.documents, name, spec.format, cfg.seed, cfg.on_error,
                                    cfg.batch_size, stats)
        return
    fields = FieldMap(spec.query, spec.positive, spec.negatives, spec.source, spec.key)
    yield from read_records(spec.path, fields, name, spec.format, cfg.on_error, cfg.batch_size, stats)


def stage_all(cfg: PrepConfig, work_dir: Path, engine: Engine) -> Staged:
    """Step 1 over every configured source, its batches mapped by `engine` -> Staged (cleaned records written under
    work_dir).

    work_dir outlives a killed run (prep keeps it beside out_dir, named by the config and inputs): each configured
    source is staged into its own folder whose `done.json` is written last, so a re-run loads the sources already
    staged and reads only the rest. The state after a source (names, counts, caps) is saved with it, so loading it
    equals staging it again."""
    staged = Staged(sigs=Signatures(cfg.dedup.num_perm))
    parts: dict[str, list] = {k: [] for k in ("source_ids", "key_hash", "q_hash", "p_hash", "pair_hash",
                                                "by_positive", "q_len", "p_len")}
    with engine.workers():
        for unit, (name, spec) in enumerate(iter_config_sources(cfg)):
            folder = work_dir / f"source-{unit:03d}"
            if (folder / "done.json").is_file():
                _load_unit(folder, staged, parts)
                print(f"gte prep: {name}: step 1 reused from {folder} (staged by an earlier run)", file=sys.stderr)
                continue
            shutil.rmtree(folder, ignore_errors=True)  # a source a killed run left half-staged starts over
            if spec is not None:  # a remote file is copied into the work folder and read from there
                spec = replace(spec, path=paths.fetch(spec.path, work_dir / "inputs" / name))
            start = {key: len(chunks) for key, chunks in parts.items()}
            writer = ShardWriter(folder, "staged", "clean", cfg.rows_per_shard)
            sig_writer = SignatureWriter(folder)
            stats = ReadStats()
            tasks = ((batch, cfg.length, bool(spec and spec.strip_html), cfg.seed, cfg.dedup)
                     for batch in _spec_batches(cfg, name, spec, stats))
            for result in engine.ordered_map(process_batch, tasks):
                if _absorb(cfg, staged, result, writer, sig_writer, parts) and not (spec and spec.source):
                    break  # the cap of this source is reached
            writer.close()
            staged.sigs.add_part(sig_writer.close(), folder)
            staged.files += [folder / rel for rel in writer.files]
            staged.reader_stats[name] = {"rows": stats.rows, "skipped": stats.skipped, "problems": stats.problems}
            _save_unit(folder, staged, parts, start, writer.files)
    for key, chunks in parts.items():
        setattr(staged, key, np.concatenate(chunks) if chunks else np.zeros(0, np.uint64))
    staged.source_ids = staged.source_ids.astype(np.int32)
    staged.by_positive = staged.by_positive.astype(bool)
    return staged


def _save_unit(folder: Path, staged: Staged, parts: dict, start: dict, files: list[str]) -> None:
    """One staged source: its arrays (what it appended to `parts`; its signatures are on disk already), then the
    state after it, `done.json` last."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {key: np.concatenate(chunks[start[key]:]) for key, chunks in parts.items() if chunks[start[key]:]}
    with open(folder / "arrays.npz", "wb") as fh:
        np.savez(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())
    state = {"files": files, "signature_rows": staged.sigs.parts[-1][0], "names": staged.names,
             "reader_stats": staged.reader_stats, "counts": {name: dict(c) for name, c in staged.counts.items()}}
    write_json(folder / "done.json", state)


def _load_unit(folder: Path, staged: Staged, parts: dict) -> None:
    state = json.loads((folder / "done.json").read_text())
    with np.load(folder / "arrays.npz") as arrays:
        for key in arrays.files:
            parts[key].append(arrays[key])
    staged.files += [folder / rel for rel in state["files"]]
    staged.sigs.add_part(state["signature_rows"], folder)
    staged.names = state["names"]
    staged.reader_stats = state["reader_stats"]
    staged.counts = {name: Counter(c) for name, c in state["counts"].items()}


def _absorb(cfg: PrepConfig, staged: Staged, result: dict, writer: ShardWriter, sig_writer: SignatureWriter,
            parts: dict) -> bool:
    """Append one batch result, honouring per-source caps. -> True when a cap was hit."""
    for (source, why), count in result["drops"].items():
        staged.counts.setdefault(source, Counter())[why] += count
    take, capped = [], False
    for i, rec in enumerate(result["records"]):
        name = rec["source"]
        if name not in staged.counts:
            staged.counts[name] = Counter()
        if name not in staged.names:
            staged.names.append(name)
        counts, cap = staged.counts[name], source_cap(cfg, name)
        if cap is not None and counts["cleaned"] >= cap:
            counts["over_cap"] += 1
            capped = True
            continue
        counts["cleaned"] += 1
        take.append(i)
        writer.add(rec)
    for name in {r["source"] for r in result["records"]} | {s for s, _ in result["drops"]}:
        staged.counts.setdefault(name, Counter())
        if name not in staged.names:
            staged.names.append(name)
    idx = np.array(take, dtype=np.int64)
    sources = [staged.names.index(result["records"][i]["source"]) for i in take]
    parts["source_ids"].append(np.array(sources, dtype=np.int32))
    parts["by_positive"].append(np.array([dedup_by_positive(cfg, staged.names[s]) for s in sources], dtype=bool))
    for key in ("key_hash", "q_hash", "p_hash", "pair_hash", "q_len", "p_len"):
        parts[key].append(result[key][idx])
    sig_writer.add(result["q_sig"][idx], result["p_sig"][idx])
    return capped


def source_stats(staged: Staged, counts: dict, keep: np.ndarray, heldout: np.ndarray, train: np.ndarray,
                 decontaminated: np.ndarray, beir: dict) -> dict:
    """Per-source counts before and after each filter, for the manifest and the report."""
    out = {}
    for sid, name in enumerate(staged.names):
        mine = staged.source_ids == sid
        c = staged.counts.get(name, Counter())
        dropped = {why: int(c[why]) for why in DROP_REASONS if c[why]}
        cleaned = int(mine.sum())
        out[name] = {
            "read": cleaned + sum(dropped.values()) + int(c["over_cap"]),
            "dropped_cleaning": dropped,
            "over_cap": int(c["over_cap"]),
            "cleaned": cleaned,
            "exact_dups_within": int(counts["exact"][sid, 0]),
            "exact_dups_across": int(counts["exact"][sid, 1]),
            "near_dups_within": int(counts["near"][sid, 0]),
            "near_dups_across": int(counts["near"][sid, 1]),
            "after_dedup": int((keep & mine).sum()),
            "heldout_pairs": int((heldout & mine).sum()),
            "heldout_beir": beir.get(name, {"queries": 0, "corpus": 0, "qrels": 0}),
            "decontaminated": int(decontaminated[sid]),
            "train": int((train & mine).sum()),
        }
    return out


def alpha_sizes(sizes: dict[str, int], alpha: float = GTE_ALPHA) -> dict:
    """Train sizes and the mixing probabilities the sampler draws with at this alpha (gte_model.core.mixing)."""
    used = {name: n for name, n in sizes.items() if n > 0}
    p = mixing_probabilities(list(used.values()), alpha) if used else []
    return {"alpha": alpha, "sizes": sizes, "probabilities": {k: round(float(x), 6) for k, x in zip(used, p)}}


class Steps:
    """Wall seconds of each prep step and the peak resident memory (MiB) when it ended, for the manifest."""

    def __init__(self) -> None:
        self.started = self.last = time.time()  # private memory: sampled while prep runs (private_peak_tracking)
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float] = {}
        self.peak_private_mb: dict[str, float] = {}

    def done(self, name: str) -> None:
        now = time.time()
        self.seconds[name] = round(now - self.last, 1)
        self.peak_rss_mb[name] = peak_rss_mb()  # the peak so far: the step that raises it is the one that needs it
        self.peak_private_mb[name] = private_peak_mb()
        self.last = now

    def manifest(self, engine: Engine) -> dict:
        worker_rss, worker_private = engine.worker_peak_mb()
        return {
            "wall_time_s": round(time.time() - self.started, 1),
            "step_seconds": dict(self.seconds),
            "step_peak_rss_mb": dict(self.peak_rss_mb),
            "step_peak_private_mb": dict(self.peak_private_mb),
            # this process and the largest worker (cleaning and MinHash run in pool processes or Ray workers)
            "peak_rss_mb": {"main": peak_rss_mb(), "largest_worker": worker_rss},
            # without the shared pages a process only mapped (Ray's object store); a pool worker's is not measured
            "peak_private_mb": {"main": private_peak_mb(), **({"largest_worker": worker_private} if worker_private
                                                             else {})},
        }


def no_train_rows(stats: dict, readers: dict) -> str:
    """Why no training pair is left, from the first count that fell to zero: `<cause> (<counts>); <fix>`."""
    rows = sum(r["rows"] for r in readers.values())
    skipped = sum(r["skipped"] for r in readers.values())

    def total(key: str) -> int:
        return sum(s[key] for s in stats.values())

    if rows == 0 and skipped == 0:
        cause = f"no input rows ({', '.join(readers) or 'no source'} yielded nothing: empty files?)"
        fix = "check the paths and contents of files, or add sources"
    elif rows == 0:
        first = next((p for r in readers.values() for p in r["problems"]), "?")
        cause = f"all {skipped} rows were malformed and skipped under on_error=skip (first: {first})"
        fix = "fix those rows, or the column names under files (query, positive)"
    elif total("cleaned") == 0 and total("over_cap"):
        cause, fix = "max_pairs caps every source at 0", "raise max_pairs, or leave it out for no cap"
    elif total("cleaned") == 0:
        reasons: Counter = Counter()
        for s in stats.values():
            reasons.update(s["dropped_cleaning"])
        cause = f"cleaning dropped every pair ({', '.join(f'{why} {n}' for why, n in reasons.most_common())})"
        fix = "loosen the length bounds (length.*_min_tokens, length.*_max_tokens) or check which columns files name"
    elif total("heldout_pairs") >= total("after_dedup"):
        cause = f"all {total('after_dedup')} pairs left after dedup went to the held-out split"
        fix = "lower split.heldout_fraction or split.max_heldout_queries, or add data"
    else:
        cause = f"decontamination removed all {total('decontaminated')} remaining training pairs"
        fix = ("turn off the evaluation texts that match them (decontaminate.stsb_test, decontaminate.heldout, "
               "decontaminate.extra_files) or decontaminate.enabled, or add data")
    counts = (f"read {rows}, malformed {skipped}, cleaned {total('cleaned')}, after dedup {total('after_dedup')}, "
              f"held out {total('heldout_pairs')}, decontaminated {total('decontaminated')}")
    return f"no training pairs: {cause} ({counts}); {fix}"
