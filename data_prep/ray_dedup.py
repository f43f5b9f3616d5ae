"""Near dedup and decontamination of `gte prep` under engine=ray: distributed, deciding exactly as data_prep.dedup.

Local near dedup walks the records in record order and drops a record when its positive shares an LSH band with
an earlier record that is still kept and `near_match` confirms it. The same decision, from the full edge list:
  1. band keys (map tasks over record-range blocks, each given its block's positive signatures only): each record's
     signature cut into the bands of the local LSH (`lsh_bands`: b bands of r rows), each band hashed to a 64-bit
     bucket key with its band number, the (key, id) rows partitioned by key;
  2. buckets (one reduce task per partition: a groupby on the key): every bucket of two or more records yields its
     (later, earlier) candidate pairs;
  3. confirm (tasks over blocks of the distinct candidate pairs, each given the signatures of its pairs' two ends):
     `near_match` keeps the pairs that are near duplicates;
  4. decide (here, over the confirmed pairs, by record id): for each later record in ascending order, the first
     confirmed earlier neighbour that is still kept makes it a duplicate. No step depends on partitioning.
A worker holds one block of records, one partition of (key, id) rows or one block of pairs, so its memory does
not grow with the input (the partitions and blocks multiply instead). The signatures stay in step 1's files
(data_prep.signature_files): the driver reads one block at a time for a task, and holds the candidate pairs (16
bytes each) and the per-record arrays of staging (46 bytes a record), not the signatures (512 bytes a record).
Decontamination checks each training record against the evaluation index on its own: record-range chunks go to
Ray tasks running `dedup.decontaminate`, and the chunks are put back in order.
"""

from __future__ import annotations

import numpy as np

from data_prep.dedup import DedupConfig, EvalIndex, decontaminate, lsh_bands, near_match
from data_prep.ray_support import import_ray, worker_peaks
from data_prep.signature_files import P_FILE, Signatures
from gte_model.core.memory import track_private_peak
from gte_model.core.text import mix64

_BLOCK_RECORDS = 50_000  # records per map block and per decontamination task
_BLOCK_PAIRS = 50_000  # candidate pairs per confirmation task


def near_dedup_ray(engine, sigs: Signatures, source_ids: np.ndarray, by_positive: np.ndarray,
                   keep: np.ndarray, num_sources: int, cfg: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """dedup.near_dedup on Ray: -> (keep mask, counts [num_sources, 2] within/across), equal to the local ones.
    engine: the data_prep.engine.RayEngine calling (its session, ordered_map and workers' peaks)."""
    ray, num_workers = engine.ray, engine.num_workers
    bands, rows = lsh_bands(cfg)
    blocks = _ranges(len(keep))
    parts = max(num_workers, len(blocks))
    mapper = ray.remote(num_returns=parts + 1)(_band_partitions)
    mapped, window = [], 2 * num_workers
    for i, (a, b) in enumerate(blocks):  # one block of signatures read at a time, `window` map tasks in flight
        ids = a + np.flatnonzero(keep[a:b])
        mapped.append(mapper.remote(ids, sigs.rows(ids, files=(P_FILE,))[0], bands, rows, parts))
        if i >= window:
            engine.record_peaks(ray.get(mapped[i - window][-1]))
    for m in mapped[-window:]:
        engine.record_peaks(ray.get(m[-1]))
    reduce_tasks = ([m[p] for m in mapped] for p in range(parts))
    found = list(engine.ordered_map(_bucket_pairs, reduce_tasks))
    del mapped
    candidates = np.unique(np.concatenate(found), axis=0) if found else np.zeros((0, 2), np.int64)  # (later, earlier)
    tasks = (_confirm_task(candidates[a:a + _BLOCK_PAIRS], sigs, by_positive)
             for a in range(0, len(candidates), _BLOCK_PAIRS))
    confirmed = list(engine.ordered_map(_confirmed, tasks, cfg.threshold))
    edges = np.concatenate(confirmed) if confirmed else np.zeros((0, 2), np.int64)
    return keep_first(edges if len(edges) else None, keep, source_ids, num_sources)


def _ranges(n: int) -> list[tuple[int, int]]:
    """Record ranges [a, b) of _BLOCK_RECORDS covering n records: the map blocks and the decontamination chunks."""
    return [(a, min(a + _BLOCK_RECORDS, n)) for a in range(0, n, _BLOCK_RECORDS)]


def _band_partitions(ids: np.ndarray, p_sig: np.ndarray, bands: int, rows: int, parts: int) -> list:
    """Record ids [B] and their positive signatures [B, num_perm] -> `parts` arrays of (bucket key, id) rows,
    partitioned by key (the map side of the groupby), and this worker's memory peaks. A bucket key hashes one band
    of a signature with its number."""
    track_private_peak()
    p_sig = p_sig.astype(np.uint64)
    keys = []
    for band in range(bands):
        h = np.full(len(ids), mix64(np.uint64(band)), dtype=np.uint64)
        for col in range(band * rows, (band + 1) * rows):
            h = mix64(h ^ p_sig[:, col])
        keys.append(h)
    rows_kv = np.stack([np.concatenate(keys), np.tile(ids, bands).astype(np.uint64)], axis=1)  # [B * bands, 2]
    part = rows_kv[:, 0] % np.uint64(parts)
    return [rows_kv[part == p] for p in range(parts)] + [worker_peaks()]


def _bucket_pairs(refs: list) -> np.ndarray:
    """The reduce side: the (key, id) rows of one partition from every map block -> [E, 2] distinct (later,
    earlier) pairs of records that share a bucket."""
    kv = np.concatenate(import_ray().get(refs))
    kv = kv[np.lexsort((kv[:, 1], kv[:, 0]))]
    starts = np.flatnonzero(np.r_[True, kv[1:, 0] != kv[:-1, 0]])
    pairs = []
    for start, stop in zip(starts, np.r_[starts[1:], len(kv)]):
        if stop - start > 1:
            ids = np.unique(kv[start:stop, 1]).astype(np.int64)
            pairs += [(ids[a], ids[b]) for a in range(1, len(ids)) for b in range(a)]
    return np.unique(np.array(pairs, dtype=np.int64).reshape(-1, 2), axis=0)


def _confirm_task(pairs: np.ndarray, sigs: Signatures, by_positive: np.ndarray) -> tuple:
    """A block of candidate pairs with the signatures of their ends (rows 2i: later, 2i + 1: earlier), read from
    disk for this block only."""
    q_sig, p_sig = sigs.rows(pairs.ravel())
    return pairs, q_sig, p_sig, by_positive[pairs[:, 0]]


def _confirmed(task: tuple, threshold: float) -> np.ndarray:
    """Candidate pairs [P, 2] with the signatures of their ends (rows 2i: later, 2i + 1: earlier) and the later
    record's by_positive flag -> the pairs `near_match` confirms."""
    pairs, q_sig, p_sig, later_by_positive = task
    by_positive = np.repeat(later_by_positive, 2)  # near_match reads the later record's flag only
    keep = [near_match(2 * i, 2 * i + 1, q_sig, p_sig, by_positive, threshold) for i in range(len(pairs))]
    return pairs[np.array(keep, dtype=bool)]


def keep_first(edges: np.ndarray | None, keep: np.ndarray, source_ids: np.ndarray, num_sources: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """edges [E, 2] (later, earlier) sorted -> (keep mask, counts [num_sources, 2]): in record order, a record with
    a confirmed earlier neighbour still kept is dropped; its first such neighbour says within or across sources."""
    keep = keep.copy()
    counts = np.zeros((num_sources, 2), dtype=np.int64)
    if edges is None:
        return keep, counts
    starts = np.flatnonzero(np.r_[True, edges[1:, 0] != edges[:-1, 0]])
    for start, stop in zip(starts, np.r_[starts[1:], len(edges)]):
        later = edges[start, 0]
        kept = [j for j in edges[start:stop, 1] if keep[j]]
        if kept:
            keep[later] = False
            counts[source_ids[later], 0 if source_ids[later] == source_ids[kept[0]] else 1] += 1
    return keep, counts


def decontaminate_ray(engine, index: EvalIndex, q_hash: np.ndarray, p_hash: np.ndarray,
                      sigs: Signatures, source_ids: np.ndarray, train: np.ndarray, num_sources: int
                      ) -> tuple[np.ndarray, np.ndarray]:
    """dedup.decontaminate over record-range chunks in Ray tasks (engine: the RayEngine calling) -> (train mask,
    drops per source)."""
    chunks = ((q_hash[a:b], p_hash[a:b], *sigs.range(a, b), source_ids[a:b], train[a:b])
              for a, b in _ranges(len(train)))
    masks, counts = [], np.zeros(num_sources, dtype=np.int64)
    for mask, c in engine.ordered_map(_decontaminate_chunk, chunks, index, num_sources):
        masks.append(mask)
        counts += c
    return (np.concatenate(masks) if masks else train.copy()), counts


def _decontaminate_chunk(chunk: tuple, index: EvalIndex, num_sources: int) -> tuple[np.ndarray, np.ndarray]:
    return decontaminate(index, *chunk, num_sources)
