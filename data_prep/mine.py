"""Hard-negative mining: a pairs dir of (query, positive) -> a pairs dir of (query, positive, negatives) triples.

  gte mine configs/mine.yaml input_dir=data/pairs out_dir=data/mined
  CPU smoke run:  gte mine configs/mine.yaml input_dir=data/pairs out_dir=/tmp/mined max_queries_per_source=2000
  On Ray:         gte mine configs/mine.yaml input_dir=data/pairs out_dir=data/mined engine=ray ray.num_workers=4

engine=ray (data_prep.ray_mine) embeds the cache's missing shards on a pool of actors and searches query chunks in
Ray tasks; both steps are keyed by shard and chunk, so the output is the same as engine=local's.

Per source (negatives come from the same source's documents, so a WordNet query never gets a GCIDE definition of
the same word as a "negative"):
  1. corpus = unique positives of the train split (+ `extra_corpus` files), embedded once through the on-disk
     cache (gte_model.embed_cache: resumable, shared by re-runs and by the consistency filter; it lives beside
     out_dir as `.<out name>.embed_cache` unless embed.cache_dir says otherwise);
  2. queries embedded with the query prompt; faiss finds the top rank_max (+ a pad) docs per query, in chunks
     (data_prep.knn: exact below index.ivf_threshold docs, IVF above); candidates re-ranked by exact scores;
  3. keep ranks [rank_min, rank_max); drop the positive, any other positive of the same query and any text equal
     to them after case/whitespace folding, repeats of a better-ranked candidate, scores above `max_score`
     (likely paraphrases) and scores within `margin` of the positive's (likely false negatives);
  4. sample k per query by a hashed priority seeded by (query, positive, seed): the choice for a row depends
     only on that row, never on chunking, thread count or row order;
  5. write shards, mine_stats.json, manifest.json (held-out and BEIR entries point at the input's) and the
     completion record, in a temp folder renamed over out_dir at the end: an interrupted run (overwrite=true
     included) leaves the old output intact. The record holds the config, the input's manifest digest and the
     model's weights digest: a re-run with the same record does nothing; another is refused unless overwrite=true.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from data_prep import paths
from data_prep.engine import ray_session
from data_prep.filter import consistency_filter
from data_prep.knn import (
    IndexConfig,
    Shard,
    build_shards,
    exact_scores,
    index_kind,
    pair_scores,
    rank_candidates,
    search_shards,
    set_threads,
)
from data_prep.mine_config import MineConfig, NegativesConfig
from data_prep.mine_io import PairRows, read_extra_corpus, read_train, train_rows, write_source
from data_prep.ray_mine import RayEncoder, ray_map_build, ray_map_chunks
from gte_model import GTEModel, load_model
from gte_model.core import pairs
from gte_model.core.atomic import build_dir, check_replaceable, write_json
from gte_model.core.config import ConfigError, config_from_argv, dump_config
from gte_model.core.errors import UserError
from gte_model.core.lock import hold
from gte_model.core.memory import peak_rss_mb
from gte_model.core.record import Record, check_done, defaults_of, file_fingerprint, flatten
from gte_model.core.text import content_hash64, fold_hash64, mix64
from gte_model.embed_cache import Encoder, embed_cached, resolve_prompt
from gte_model.fingerprint import model_fingerprint
from gte_model.load import weights_digest

MINE_VERSION = 1  # bump when the same config and inputs would give other output (selection or sampling rules)
# Settings that change speed, resources or where the output lives, never its content: a finished run with other
# values is still done.
NO_OUTPUT_EFFECT = frozenset({
    *(f"{p}{k}" for p in ("", "filter.") for k in ("embed.batch_size", "embed.cache_dir", "embed.shard_size",
                                                  "index.num_threads", "index.query_chunk")),
    "teacher.batch_size", "teacher.cache_dir", "teacher.shard_size",
    "out_dir",
    "overwrite",
    "engine",
    "ray",
})


class NothingMined(UserError):
    """No source kept a row: the message says which filter emptied them and which key to change."""


# ---- selection (pure: vectors and ids in, ids out) ----------------------------------------------------------
def select_negatives(
    queries: np.ndarray,
    docs: np.ndarray,
    cand_ids: np.ndarray,
    pos_ids: np.ndarray,
    row_seeds: np.ndarray,
    doc_norm: np.ndarray,
    doc_hash: np.ndarray,
    neg: NegativesConfig,
    blocked: dict[int, np.ndarray] | None = None,
    teacher: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[list[np.ndarray], Counter]:
    """Negatives for b rows: queries [b, dim], docs [n, dim], faiss candidates cand_ids [b, r] (-1 = none),
    pos_ids [b], row_seeds [b] uint64, doc_norm / doc_hash [n] uint64 (folded-text / exact-text hashes),
    blocked {row: folded hashes of the other positives of that row's query}, teacher (its query vectors [b, dt],
    doc vectors [n, dt]) or None. -> doc ids per row (rank order), and counts of window candidates dropped per
    reason."""
    ids, scores = rank_candidates(queries, docs, cand_ids)  # [b, r] best first, ties by id
    ids, scores = ids[:, neg.rank_min : neg.rank_max], scores[:, neg.rank_min : neg.rank_max]  # [b, w]
    pos_score = pair_scores(queries, docs, pos_ids)  # [b]
    valid = ids >= 0
    norm = np.where(valid, doc_norm[np.maximum(ids, 0)], np.uint64(0))  # [b, w]
    is_pos = valid & (norm == doc_norm[pos_ids][:, None])
    for row, hashes in (blocked or {}).items():
        is_pos[row] |= valid[row] & np.isin(norm[row], hashes)
    drops = {
        "positive": is_pos,
        "duplicate": valid & _repeats(norm),
        "ceiling": valid & (scores > neg.max_score),
        "margin": valid & (scores > pos_score[:, None] - neg.margin),
    }
    bars = teacher_bars(teacher, pos_ids, neg)  # [b] or None
    if bars is not None:
        drops["teacher"] = valid & (exact_scores(teacher[0], teacher[1], ids) >= bars[:, None])
    counts: Counter = Counter(window_candidates=int(valid.sum()))
    dropped = np.zeros_like(valid)
    for reason, mask in drops.items():  # each candidate is counted under its first reason only
        counts[f"dropped_{reason}"] += int((mask & ~dropped).sum())
        dropped |= mask
    chosen = _sample(ids, valid & ~dropped, row_seeds, doc_hash, neg)
    if neg.fill == "random":
        for row in (r for r, c in enumerate(chosen) if len(c) < neg.min_negatives):
            taken = {int(doc_norm[i]) for i in (*chosen[row].tolist(), int(pos_ids[row]))}
            taken |= {int(h) for h in (blocked or {}).get(row, ())}  # the query's other positives
            vet = None if bars is None else (teacher[0][row], teacher[1], bars[row])
            extra = _random_fill(queries[row], docs, pos_score[row], row_seeds[row], doc_norm, taken, neg, vet)
            chosen[row] = np.concatenate([chosen[row], extra[: neg.k - len(chosen[row])]])
            counts["filled_rows"] += 1
    return chosen, counts


def teacher_bars(teacher: tuple[np.ndarray, np.ndarray] | None, pos_ids: np.ndarray,
                 neg: NegativesConfig) -> np.ndarray | None:
    """[b] the teacher score at or above which a candidate is too close to the positive to be a negative:
    min(teacher_ratio x teacher(q, positive), teacher(q, positive) - teacher_margin). None without a teacher."""
    if teacher is None:
        return None
    pos = pair_scores(teacher[0], teacher[1], pos_ids)  # [b]
    return np.minimum(neg.teacher_ratio * pos, pos - neg.teacher_margin)


def _random_fill(query: np.ndarray, docs: np.ndarray, pos_score: float, row_seed: np.uint64, doc_norm: np.ndarray,
                 taken: set[int], neg: NegativesConfig, vet: tuple | None = None) -> np.ndarray:
    """Up to k random doc ids (seeded by the row) scored below pos_score - margin and max_score (and, with
    vet = (teacher query vector, teacher docs, bar), scored below the bar by the teacher), none of them folding to
    a text in `taken` (the row's positives and negatives) or repeated: for a row whose window kept none."""
    rng = np.random.default_rng(int(row_seed))
    cand = rng.choice(len(docs), size=min(len(docs), 8 * neg.k + 32), replace=False)
    scores = exact_scores(query[None], docs, cand[None])[0]  # [c], as the window's scores
    vetoed = np.zeros(len(cand), dtype=bool)
    if vet is not None:
        vetoed = exact_scores(vet[0][None], vet[1], cand[None])[0] >= vet[2]
    out, seen = [], set(taken)
    for i, score, veto in zip(cand.tolist(), scores.tolist(), vetoed.tolist()):
        h = int(doc_norm[i])
        if h in seen or score > pos_score - neg.margin or score > neg.max_score or veto:
            continue
        seen.add(h)
        out.append(i)
        if len(out) == neg.k:
            break
    return np.array(out, dtype=np.int64)


def _sample(ids: np.ndarray, keep: np.ndarray, row_seeds: np.ndarray, doc_hash: np.ndarray,
            neg: NegativesConfig) -> list[np.ndarray]:
    """k of the kept window candidates ids [b, w] per row, returned in rank order."""
    if neg.strategy == "random":  # a hashed key per (row, doc): uniform without replacement, order-free
        priority = mix64(row_seeds[:, None] ^ doc_hash[np.maximum(ids, 0)])  # [b, w] uint64
    else:
        priority = np.broadcast_to(np.arange(ids.shape[1], dtype=np.uint64), ids.shape)
    priority = np.where(keep, priority, np.iinfo(np.uint64).max)
    pick = np.sort(np.argsort(priority, axis=1, kind="stable")[:, : neg.k], axis=1)  # [b, k] columns, rank order
    chosen, ok = np.take_along_axis(ids, pick, axis=1), np.take_along_axis(keep, pick, axis=1)
    return [c[m] for c, m in zip(chosen, ok)]


def _repeats(values: np.ndarray) -> np.ndarray:
    """[b, w] True where the value already appeared earlier in its row."""
    order = np.argsort(values, axis=1, kind="stable")  # equal values keep column order: the first stays unmarked
    ordered = np.take_along_axis(values, order, axis=1)
    rep_sorted = np.zeros(values.shape, dtype=bool)
    rep_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    out = np.empty_like(rep_sorted)
    np.put_along_axis(out, order, rep_sorted, axis=1)
    return out


def mine_embedded(
    queries: np.ndarray, docs: np.ndarray, pos_ids: np.ndarray, row_seeds: np.ndarray, doc_norm: np.ndarray,
    doc_hash: np.ndarray, neg: NegativesConfig, index_cfg: IndexConfig, blocked: dict[int, np.ndarray] | None = None,
    teacher: tuple[np.ndarray, np.ndarray] | None = None,
    map_chunks: Callable | None = None,
    map_build: Callable | None = None,
) -> tuple[list[np.ndarray], Counter]:
    """Mine every row from vectors: queries [N, dim] (a row each), docs [n, dim] -> doc ids per row, counts.
    teacher: its query vectors [N, dt] (a row each) and doc vectors [n, dt], or None.

    map_chunks(fn, tasks, shards, *shared) -> fn(task, shards, *shared) per task in order, and map_build(fn, tasks)
    -> fn(task) per task in order (default: here, one after another; engine=ray: Ray tasks). Each chunk's rows
    depend on that chunk alone and each shard on its docs alone, so the result does not depend on them."""
    shards = build_shards(docs, index_cfg, map_build)
    counts: Counter = Counter({f"index_{index_kind(s.index)}": 1 for s in shards})
    counts["index_shards"] = len(shards)
    chunk = index_cfg.query_chunk
    tasks = ((queries[start : start + chunk], pos_ids[start : start + chunk], row_seeds[start : start + chunk],
              {r - start: h for r, h in (blocked or {}).items() if start <= r < start + chunk},
              None if teacher is None else teacher[0][start : start + chunk])
             for start in range(0, len(queries), chunk))
    t_docs = None if teacher is None else teacher[1]
    out: list[np.ndarray] = []
    for negs, c in (map_chunks or _map_here)(mine_chunk, tasks, shards, docs, doc_norm, doc_hash, neg, chunk, t_docs):
        out += negs
        counts += c
    return out, counts


def mine_chunk(task: tuple, shards: list[Shard], docs: np.ndarray, doc_norm: np.ndarray, doc_hash: np.ndarray,
               neg: NegativesConfig, query_chunk: int, teacher_docs: np.ndarray | None = None
               ) -> tuple[list[np.ndarray], Counter]:
    """One chunk of rows (queries [c, dim], pos_ids, row_seeds, blocked by chunk row, the teacher's query vectors
    [c, dt] or None) -> negatives, counts. teacher_docs: the teacher's doc vectors [n, dt] (None without one)."""
    queries, pos_ids, row_seeds, blocked, teacher_queries = task
    cands = search_shards(shards, queries, neg.rank_max + neg.search_pad, query_chunk)  # [c, shards x (max + pad)]
    vet = None if teacher_queries is None else (teacher_queries, teacher_docs)
    return select_negatives(queries, docs, cands, pos_ids, row_seeds, doc_norm, doc_hash, neg, blocked, vet)


def _map_here(fn: Callable, tasks, *shared) -> Iterator:
    return (fn(task, *shared) for task in tasks)


# ---- one source -----------------------------------------------------------------------------------------------
def row_seeds_of(queries: list[str], positives: list[str], seed: int) -> np.ndarray:
    """[N] uint64: a row's sampling seed, from its own text only (so order- and chunk-independent)."""
    return mix64(content_hash64([q + "\x1f" + p for q, p in zip(queries, positives)]) ^ mix64(seed))


def sample_rows(rows: PairRows, cap: int, seed: int) -> PairRows:
    """At most `cap` rows (0 = all): those with the smallest seeded hash, kept in input order."""
    if cap <= 0 or len(rows) <= cap:
        return rows
    priority = row_seeds_of(rows.queries, rows.positives, seed + 1)
    return rows.take(np.sort(np.argsort(priority, kind="stable")[:cap]))


def sample_corpus(positives: list[str], cap: int, seed: int) -> list[str]:
    """The unique positives of a source, or the `cap` of them with the smallest seeded hash (0 = all)."""
    unique = list(dict.fromkeys(positives))
    if cap <= 0 or len(unique) <= cap:
        return unique
    priority = row_seeds_of(unique, unique, seed + 2)
    return [unique[i] for i in np.sort(np.argsort(priority, kind="stable")[:cap])]


@dataclass
class Workers:
    """Where embedding and search run: here (the defaults) or on Ray (data_prep.ray_mine); never what they give."""

    pool: RayEncoder | None = None  # embedding actors (engine=ray)
    map_chunks: Callable | None = None  # mine_embedded's map over query chunks
    map_build: Callable | None = None  # mine_embedded's map over index shards

    def encoder(self, model) -> Encoder | None:
        """embed_cache.embed_cached's encoder for `model` (None = in this process)."""
        return None if self.pool is None else self.pool.of(model)


@contextlib.contextmanager
def workers_of(cfg: MineConfig) -> Iterator[Workers]:
    """Workers for cfg.engine: engine=ray holds a Ray session (data_prep.engine) while mining runs."""
    if cfg.engine != "ray":
        yield Workers()
        return
    with ray_session(cfg.ray):
        pool = RayEncoder(cfg.ray.num_workers)
        try:
            yield Workers(pool, ray_map_chunks(cfg.ray.num_workers), ray_map_build(cfg.ray.num_workers))
        finally:
            pool.close()


def mine_source(rows: PairRows, extra: list[str], model, cfg: MineConfig, cache_dir: Path,
                teacher: GTEModel | None = None, workers: Workers | None = None) -> tuple[list, list | None, dict]:
    """Negative texts per row (a list each), the teacher's scores per row ([positive, *negatives]; None without a
    teacher) and this source's stats."""
    workers = workers or Workers()
    docs = list(dict.fromkeys([*rows.positives, *extra]))  # exact-unique, first-seen order
    doc_id = {t: i for i, t in enumerate(docs)}
    pos_ids = np.array([doc_id[p] for p in rows.positives], dtype=np.int64)
    uniq_q = list(dict.fromkeys(rows.queries))
    q_index = {q: i for i, q in enumerate(uniq_q)}
    q_rows = np.array([q_index[q] for q in rows.queries], dtype=np.int64)  # [N]: each row's unique query
    doc_emb = embed_cached(model, docs, cfg.embed, resolve_prompt(model, cfg.embed.doc_prompt, "document"), cache_dir,
                           encoder=workers.encoder(model))
    q_emb = embed_cached(model, uniq_q, cfg.embed, resolve_prompt(model, cfg.embed.query_prompt, "query"), cache_dir,
                         encoder=workers.encoder(model))
    vectors = None
    if teacher is not None:  # the same cache: the teacher's namespace is its own
        t = cfg.teacher
        t_cache = t.cache_dir or cache_dir
        t_docs = embed_cached(teacher, docs, t, resolve_prompt(teacher, t.doc_prompt, "document"), t_cache,
                              encoder=workers.encoder(teacher))
        t_q = embed_cached(teacher, uniq_q, t, resolve_prompt(teacher, t.query_prompt, "query"), t_cache,
                           encoder=workers.encoder(teacher))
        vectors = (t_q.vectors[q_rows], t_docs.vectors)
    doc_norm = fold_hash64(docs)
    neg_ids, counts = mine_embedded(q_emb.vectors[q_rows], doc_emb.vectors, pos_ids, row_seeds_of(
        rows.queries, rows.positives, cfg.negatives.seed), doc_norm, content_hash64(docs), cfg.negatives, cfg.index,
        _blocked_rows(rows.queries, doc_norm[pos_ids]), vectors, workers.map_chunks, workers.map_build)
    scores = None
    if vectors is not None:  # float32, as stored: [teacher(q, positive), teacher(q, negative) ...] per row
        ids = np.full((len(neg_ids), 1 + cfg.negatives.k), -1, dtype=np.int64)  # [N, 1 + k], -1 = no negative
        ids[:, 0] = pos_ids
        for r, negs in enumerate(neg_ids):
            ids[r, 1 : 1 + len(negs)] = negs
        table = exact_scores(vectors[0], vectors[1], ids).astype(np.float32)  # [N, 1 + k]
        scores = [row[: 1 + len(negs)].tolist() for row, negs in zip(table, neg_ids)]
    lengths = np.array([len(n) for n in neg_ids])
    stats = {
        "corpus_docs": len(docs),
        "queries": len(rows),
        "index": "ivf" if counts.pop("index_ivf", 0) else "flat",
        "queries_short": int((lengths < cfg.negatives.k).sum()),
        "embedded_texts": doc_emb.computed_texts + q_emb.computed_texts,
        "cached_texts": doc_emb.reused_texts + q_emb.reused_texts,
        **{f"dropped_{r}": 0 for r in ("positive", "duplicate", "ceiling", "margin")},
        **{k: int(v) for k, v in counts.items() if k != "index_flat"},
    }
    if teacher is not None:
        stats["teacher_embedded_texts"] = t_docs.computed_texts + t_q.computed_texts
        stats["dropped_teacher"] = stats.get("dropped_teacher", 0)
    return [[docs[i] for i in ids] for ids in neg_ids], scores, stats


def _blocked_rows(queries: list[str], pos_norm: np.ndarray) -> dict[int, np.ndarray]:
    """Rows whose query has several (folded-distinct) positives -> the folded hashes of all of them."""
    by_query: dict[str, set[int]] = {}
    for q, h in zip(queries, pos_norm.tolist()):
        by_query.setdefault(q, set()).add(h)
    return {r: np.array(sorted(by_query[q]), dtype=np.uint64) for r, q in enumerate(queries) if len(by_query[q]) > 1}


# ---- the command ----------------------------------------------------------------------------------------------
def mine(cfg: MineConfig, model: GTEModel | None = None) -> Path | str:
    """Run mining as configured; returns out_dir (its URL for a remote one). A finished out_dir with the same record
    is left as it is. input_dir and out_dir may be fsspec URLs: a remote input is read from a local copy (its record
    names the URL's listing), a remote output is built locally and uploaded (data_prep.paths).

    `model`: an already loaded GTEModel to use instead of loading `cfg.model` (e.g. the one just trained).
    """
    errors = cfg.validate()
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))
    if paths.is_remote(cfg.out_dir):  # built in a local folder, then uploaded (data_prep.paths)
        return paths.build_remote(cfg.out_dir, lambda folder: mine(replace(cfg, out_dir=str(folder)), model))
    with contextlib.ExitStack() as stack:
        in_dir = Path(paths.local(cfg.input_dir))
        if paths.is_remote(cfg.input_dir):
            in_dir = Path(paths.fetch(cfg.input_dir, Path(stack.enter_context(tempfile.TemporaryDirectory()))))
        out = Path(paths.local(cfg.out_dir))
        stack.enter_context(hold(out, "out_dir"))  # a second mine of this out_dir refuses, naming this one
        return _mine(cfg, model, in_dir, out)


def _mine(cfg: MineConfig, model: GTEModel | None, in_dir: Path, out: Path) -> Path:
    # the kind only, before any work: whether an earlier mine output is rebuilt is its record's call (check_done)
    check_replaceable(out, "out_dir", "gte mine", overwrite=True)
    manifest = pairs.read_manifest(in_dir, key="input_dir")  # a finished pairs dir (completion record) only
    names = _select_sources(manifest, cfg.sources, in_dir)
    want = mine_record(cfg, model)
    if not cfg.overwrite and check_done(out, want, "overwrite"):
        print(f"gte mine: {out} is complete for this config, input and model; nothing to do", file=sys.stderr)
        return out
    start = time.perf_counter()
    set_threads(cfg.index.num_threads)
    extra = read_extra_corpus(cfg.extra_corpus)
    model = model if model is not None else load_model(cfg.model)
    teacher = load_model(cfg.teacher.model).eval() if cfg.teacher.model else None
    cache_dir = embed_cache_dir(cfg)
    with workers_of(cfg) as workers, build_dir(out, "gte mine", "out_dir", overwrite=True) as tmp:
        entries, per_source = {}, {}
        for name in names:
            per_source[name], entry = _mine_one(tmp, name, manifest["sources"][name], in_dir, extra, model, cfg,
                                                cache_dir, teacher, workers)
            if entry is not None:
                entries[name] = entry
        if not entries:
            raise NothingMined(_nothing_mined(per_source, cfg))
        _finish(tmp, cfg, entries, per_source, start, want)
    return out


def mine_record(cfg: MineConfig, model: GTEModel | None = None) -> Record:
    """What a mined output is made of: the config (minus NO_OUTPUT_EFFECT; filter keys only when it is on), the
    input's manifest digest, the model's weights digest and the extra corpus files' fingerprints."""
    config = flatten(cfg, skip=NO_OUTPUT_EFFECT)
    if not cfg.filter.enabled:
        config = {k: v for k, v in config.items() if not k.startswith("filter.") or k == "filter.enabled"}
    in_digest = (paths.dir_fingerprint(cfg.input_dir) if paths.is_remote(cfg.input_dir)
                 else pairs.manifest_digest(paths.local(cfg.input_dir)))
    inputs = {"input_dir": in_digest, "model": model_digest(cfg.model, model)}
    inputs |= {f"extra_corpus.{i}": file_fingerprint(p) for i, p in enumerate(cfg.extra_corpus)}
    if cfg.filter.enabled and cfg.filter.model != cfg.model:
        inputs["filter.model"] = model_digest(cfg.filter.model)
    if cfg.teacher.model:
        inputs["teacher.model"] = model_digest(cfg.teacher.model)
    else:  # without a teacher its settings change nothing
        config = {k: v for k, v in config.items() if not k.startswith("teacher.") or k == "teacher.model"}
    return Record("mine", MINE_VERSION, config, inputs, defaults=defaults_of(cfg, NO_OUTPUT_EFFECT))


def model_digest(name: str, model: GTEModel | None = None) -> str:
    """A loaded model: its weights fingerprint; a folder: its weights files' digest (gte_model.load.weights_digest,
    the one definition); a packaged or preset name: the name (it names fixed weights)."""
    if model is not None:
        return f"weights:{model_fingerprint(model)}"
    if Path(name).is_dir():
        digest = weights_digest(name)
        return digest if digest != "missing" else f"files:{file_fingerprint(name)}"
    return f"name:{name}"


def embed_cache_dir(cfg: MineConfig) -> Path:
    """embed.cache_dir, else `.<out name>.embed_cache` beside out_dir: outside the output, so a rebuilt or
    interrupted output keeps its vectors."""
    if cfg.embed.cache_dir:
        return Path(cfg.embed.cache_dir)
    out = Path(cfg.out_dir).resolve()
    return out.parent / f".{out.name}.embed_cache"


def _mine_one(tmp: Path, name: str, entry: dict, in_dir: Path, extra: list[str], model, cfg: MineConfig,
              cache_dir: Path, teacher: GTEModel | None, workers: Workers) -> tuple[dict, dict | None]:
    """Mine one source into tmp -> (its stats, its manifest entry or None when no row was kept)."""
    rows = read_train(in_dir, entry, name)
    stats: dict = {"train_rows": len(rows)}
    if cfg.filter.enabled and len(rows):
        rows, stats["filter"] = _apply_filter(rows, model, cfg, cache_dir)
    if not len(rows):
        why = "has no train rows" if not stats["train_rows"] else "lost every row to the consistency filter"
        print(f"gte mine: source {name}: {why}; left out of the output", file=sys.stderr)
        return {**stats, "queries": 0, "queries_mined": 0, "queries_dropped": 0, "queries_short": 0,
                "mean_negatives": 0.0, "skipped": why}, None
    # Candidates come from the whole source (or a seeded sample of it), not only the sampled queries' positives:
    # a bigger corpus holds harder negatives.
    corpus = sample_corpus(rows.positives, cfg.max_corpus_per_source, cfg.negatives.seed)
    rows = sample_rows(rows, cfg.max_queries_per_source, cfg.negatives.seed)
    negatives, scores, mined = mine_source(rows, [*corpus, *extra], model, cfg, cache_dir, teacher, workers)
    stats.update(mined)
    keep = np.array([len(n) >= cfg.negatives.min_negatives for n in negatives], dtype=bool)
    kept_lengths = [len(n) for n, k in zip(negatives, keep) if k]
    stats.update(queries_mined=int(keep.sum()), queries_dropped=int((~keep).sum()),
                 mean_negatives=round(float(np.mean(kept_lengths)) if kept_lengths else 0.0, 3))
    _warn_if_mostly_dropped(name, stats, cfg.negatives)
    if not keep.any():  # an empty shard would only break readers downstream: leave the source out, say so
        print(f"gte mine: source {name}: no query kept >= {cfg.negatives.min_negatives} negatives after the "
              "window/margin/ceiling filters; left out of the output (see mine_stats.json)", file=sys.stderr)
        return stats, None
    return stats, write_source(tmp, name, rows, negatives, keep, entry, in_dir, cfg.rows_per_shard, scores,
                               copy_heldout=paths.is_remote(cfg.input_dir))


def _warn_if_mostly_dropped(name: str, stats: dict, neg: NegativesConfig) -> None:
    """A source that keeps under half of its queries is almost always a model too weak to mine with (scores close
    to the positive's everywhere) or a too strict filter: say it loudly, with the counts and the keys to change
    (training refuses a source smaller than one batch, naming it)."""
    kept, queries = stats["queries_mined"], stats["queries"]
    if not kept or kept * 2 >= queries:  # none kept: the source is left out, which _mine_one says
        return
    drops = " ".join(f"{r}={stats.get(f'dropped_{r}', 0):,}" for r in ("margin", "ceiling", "positive", "duplicate",
                                                                      "teacher") if f"dropped_{r}" in stats)
    fill = "" if neg.fill == "random" else ", set negatives.fill=random"
    print(f"gte mine: WARNING source {name}: kept {kept:,} of {queries:,} queries ({kept / queries:.1%}): the others "
          f"had fewer than negatives.min_negatives={neg.min_negatives} negatives left (window candidates dropped: "
          f"{drops}); is the model trained enough to mine with? lower negatives.margin={neg.margin}, raise "
          f"negatives.max_score={neg.max_score}, widen negatives.rank_max={neg.rank_max}{fill} or lower "
          "negatives.min_negatives", file=sys.stderr)


def _nothing_mined(per_source: dict, cfg: MineConfig) -> str:
    if all("skipped" in s for s in per_source.values()):
        return (f"input_dir={cfg.input_dir}: the consistency filter dropped every pair of {sorted(per_source)}; "
                "raise filter.top_k or set filter.enabled=false")
    return (f"negatives.min_negatives={cfg.negatives.min_negatives}: no source kept a query with that many "
            "negatives; widen negatives.rank_max, lower negatives.margin or raise negatives.max_score")


def _apply_filter(rows: PairRows, model, cfg: MineConfig, cache_dir: Path) -> tuple[PairRows, dict]:
    fmodel = model if cfg.filter.model == cfg.model else load_model(cfg.filter.model)
    result = consistency_filter(rows.queries, rows.positives, fmodel, cfg.filter, cache_dir=cache_dir)
    return rows.take(np.flatnonzero(result.keep)), result.stats["total"]


def _select_sources(manifest: dict, wanted: list[str], in_dir: Path) -> list[str]:
    """The sources to mine: those named (all if none), refused when none of them has a train row."""
    have = list(manifest["sources"])
    unknown = [s for s in wanted if s not in have]
    if unknown:
        raise UserError(f"sources={unknown}: not in {in_dir}/manifest.json, which has {have}; choose from those")
    names = list(wanted) or have
    if not any(train_rows(manifest["sources"][name]) for name in names):
        raise UserError(f"input_dir={in_dir}: source(s) {names} have no train rows to mine; re-run `gte prep` "
                        "with more data, or choose sources that have train rows")
    return names


def _finish(out: Path, cfg: MineConfig, entries: dict, per_source: dict, start: float, record: Record) -> None:
    stats = {
        "sources": per_source,
        "queries_mined": sum(s["queries_mined"] for s in per_source.values()),
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": peak_rss_mb(),
    }
    write_json(out / "mine_stats.json", stats)
    mined_from = cfg.input_dir if paths.is_remote(cfg.input_dir) else str(Path(paths.local(cfg.input_dir)).resolve())
    extra = {"mined_from": mined_from, "mining": stats, "mine_config": asdict(cfg)}
    pairs.finish(out, entries, extra, record)  # manifest, then the completion record: complete from here on


def main(argv: list[str] | None = None) -> int:
    """`gte mine [CONFIG.yaml] [key=value ...]`; expected failures raise UserError (the `gte` CLI prints one line)."""
    cfg = config_from_argv(MineConfig, argv, __doc__)
    if cfg is None:
        return 0
    print(dump_config(cfg), file=sys.stderr)
    out = mine(cfg)
    stats = json.loads((out / "mine_stats.json").read_text())
    for name, s in stats["sources"].items():
        print(f"{name}: {s['queries_mined']} queries mined, {s['mean_negatives']} negatives each on average, "
              f"{s['queries_short']} with < k, dropped margin={s.get('dropped_margin', 0)} "
              f"ceiling={s.get('dropped_ceiling', 0)} positive={s.get('dropped_positive', 0)}")
    print(f"wall {stats['wall_s']} s, peak RSS {stats['peak_rss_mb']} MB -> {out}")
    return 0


__all__ = ["MineConfig", "NegativesConfig", "main", "mine", "mine_embedded", "mine_record", "select_negatives"]
