"""Hard-negative mining: a pairs dir of (query, positive) -> a pairs dir of (query, positive, negatives) triples.

  gte mine configs/mine.yaml input_dir=data/pairs out_dir=data/mined
  CPU smoke run:  gte mine configs/mine.yaml input_dir=data/pairs out_dir=/tmp/mined max_queries_per_source=2000

Per source (negatives come from the same source's documents, so a WordNet query never gets a GCIDE definition of
the same word as a "negative"):
  1. corpus = unique positives of the train split (+ `extra_corpus` files), embedded once through the on-disk
     cache (data_prep.embed_cache: resumable, shared by re-runs and by the consistency filter);
  2. queries embedded with the query prompt; faiss finds the top rank_max (+ a pad) docs per query, in chunks
     (data_prep.knn: exact below index.ivf_threshold docs, IVF above); candidates re-ranked by exact scores;
  3. keep ranks [rank_min, rank_max); drop the positive, any other positive of the same query and any text equal
     to them after case/whitespace folding, repeats of a better-ranked candidate, scores above `max_score`
     (likely paraphrases) and scores within `margin` of the positive's (likely false negatives);
  4. sample k per query by a hashed priority seeded by (query, positive, seed): the choice for a row depends
     only on that row, never on chunking, thread count or row order;
  5. write shards + manifest (held-out and BEIR entries point at the input's) + stats; a completion marker last,
     so re-running on a finished output is a no-op.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from data_prep.embed_cache import EmbedConfig, embed_cached, hash64, mix64, norm_hash64, resolve_prompt
from data_prep.filter import FilterConfig, consistency_filter
from data_prep.knn import (
    IndexConfig,
    build_index,
    exact_scores,
    index_kind,
    pair_scores,
    rank_candidates,
    search,
    set_threads,
)
from data_prep.mine_io import PairRows, read_extra_corpus, read_manifest, read_train, write_source
from gte_model import DEFAULT_MODEL, GTEModel, load_model

MARKER = "_MINE_COMPLETE.json"
# Settings that change speed or resources but never the output: a finished run with other values is still done.
_NO_OUTPUT_EFFECT = {
    *(f"{p}{k}" for p in ("", "filter.") for k in ("embed.batch_size", "embed.cache_dir", "embed.shard_size",
                                                  "index.num_threads", "index.query_chunk")),
    "overwrite",
}


@dataclass
class NegativesConfig:
    """Which candidates become negatives."""

    k: int = 7  # negatives per query (nomic-embed found ~7 better than GTE's 1)
    rank_min: int = 3  # skip corpus ranks < rank_min (0-based, the positive counted): the very top holds false negs
    rank_max: int = 100  # candidates come from corpus ranks < rank_max
    margin: float = 0.05  # drop candidates with score > positive's score - margin (cosine units)
    max_score: float = 0.95  # drop candidates with cosine above this ceiling (near-paraphrases of the query)
    strategy: str = "random"  # random: uniform among the survivors (nomic); top: the best-ranked survivors
    min_negatives: int = 1  # rows with fewer surviving negatives are left out of the output (counted in stats)
    # "random": a row left with fewer than min_negatives gets random documents of its source instead (those scored
    # below its positive by the margin). Such rows are the queries the model gets most wrong (the positive ranks
    # below the window); dropping them trains stage 2 on the easy ones. "none": drop them.
    fill: str = "random"
    search_pad: int = 16  # extra faiss candidates so exact re-ranking is stable at the rank_max boundary
    seed: int = 0  # sampling seed (with the row's query+positive hash)

    def validate(self, prefix: str = "negatives.") -> list[str]:
        errors = []
        if self.k < 1:
            errors.append(f"{prefix}k={self.k} must be >= 1")
        if not 0 <= self.rank_min < self.rank_max:
            errors.append(f"{prefix}rank_min={self.rank_min}, {prefix}rank_max={self.rank_max}: need "
                          f"0 <= rank_min < rank_max, e.g. {prefix}rank_min=3 {prefix}rank_max=100")
        elif self.rank_max - self.rank_min < self.k:
            errors.append(f"{prefix}k={self.k} exceeds the window [{self.rank_min}, {self.rank_max}): widen it")
        if self.strategy not in ("random", "top"):
            errors.append(f"{prefix}strategy={self.strategy!r} must be 'random' or 'top'")
        if self.fill not in ("none", "random"):
            errors.append(f"{prefix}fill={self.fill!r} must be 'none' or 'random'")
        if not 0 <= self.min_negatives <= self.k:
            errors.append(f"{prefix}min_negatives={self.min_negatives} must be in [0, k={self.k}]")
        if self.search_pad < 0:
            errors.append(f"{prefix}search_pad={self.search_pad} must be >= 0")
        return errors


@dataclass
class MineConfig:
    """`gte mine`: input pairs dir + model -> output pairs dir with the negatives column filled."""

    input_dir: str = ""  # pairs dir written by `gte prep` (manifest.json)
    out_dir: str = ""  # where the mined pairs dir is written
    model: str = DEFAULT_MODEL  # preset, packaged name or folder (gte_model.load_model)
    sources: list[str] = field(default_factory=list)  # sources to mine; empty = every source of the input
    extra_corpus: list[str] = field(default_factory=list)  # .txt (a doc per line) / .jsonl ("text") / .parquet
    max_queries_per_source: int = 0  # 0 = every train row; else a deterministic (seeded) sample of this many
    # candidate documents per source: the source's unique train positives, 0 = all of them, N = a seeded sample
    # (the sampled queries' own positives are always in the corpus)
    max_corpus_per_source: int = 0
    rows_per_shard: int = 100_000  # rows per output parquet file
    overwrite: bool = False  # replace a finished output made with another config
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)  # optional consistency filter before mining

    def validate(self) -> list[str]:
        errors = []
        if not self.input_dir:
            errors.append("input_dir is not set: pass input_dir=<pairs dir written by gte prep>")
        if not self.out_dir:
            errors.append("out_dir is not set: pass out_dir=<folder for the mined pairs>")
        elif self.input_dir and Path(self.out_dir).resolve() == Path(self.input_dir).resolve():
            errors.append(f"out_dir={self.out_dir} equals input_dir: mining writes a new pairs dir; choose another")
        if self.max_queries_per_source < 0 or self.max_corpus_per_source < 0 or self.rows_per_shard < 1:
            errors.append("max_queries_per_source and max_corpus_per_source must be >= 0 (0 = all), "
                          "rows_per_shard >= 1")
        return (errors + self.negatives.validate() + self.embed.validate() + self.index.validate()
                + self.filter.validate("filter."))


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
) -> tuple[list[np.ndarray], Counter]:
    """Negatives for b rows: queries [b, dim], docs [n, dim], faiss candidates cand_ids [b, r] (-1 = none),
    pos_ids [b], row_seeds [b] uint64, doc_norm / doc_hash [n] uint64 (folded-text / exact-text hashes),
    blocked {row: folded hashes of the other positives of that row's query}. -> doc ids per row (rank order),
    and counts of window candidates dropped per reason."""
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
            extra = _random_fill(queries[row], docs, pos_score[row], row_seeds[row], doc_norm, taken, neg)
            chosen[row] = np.concatenate([chosen[row], extra[: neg.k - len(chosen[row])]])
            counts["filled_rows"] += 1
    return chosen, counts


def _random_fill(query: np.ndarray, docs: np.ndarray, pos_score: float, row_seed: np.uint64, doc_norm: np.ndarray,
                 taken: set[int], neg: NegativesConfig) -> np.ndarray:
    """Up to k random doc ids (seeded by the row) scored below pos_score - margin and max_score, none of them
    folding to a text in `taken` (the row's positives and negatives) or repeated: for a row whose window kept none."""
    rng = np.random.default_rng(int(row_seed))
    cand = rng.choice(len(docs), size=min(len(docs), 8 * neg.k + 32), replace=False)
    scores = exact_scores(query[None], docs, cand[None])[0]  # [c], as the window's scores
    out, seen = [], set(taken)
    for i, score in zip(cand.tolist(), scores.tolist()):
        h = int(doc_norm[i])
        if h in seen or score > pos_score - neg.margin or score > neg.max_score:
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
) -> tuple[list[np.ndarray], Counter]:
    """Mine every row from vectors: queries [N, dim] (a row each), docs [n, dim] -> doc ids per row, counts."""
    index = build_index(docs, index_cfg)
    counts: Counter = Counter({f"index_{index_kind(index)}": 1})
    out: list[np.ndarray] = []
    chunk = index_cfg.query_chunk
    for start in range(0, len(queries), chunk):
        stop = min(start + chunk, len(queries))
        cands = search(index, queries[start:stop], neg.rank_max + neg.search_pad, chunk)  # [c, rank_max + pad]
        local = {r - start: h for r, h in (blocked or {}).items() if start <= r < stop}
        negs, c = select_negatives(queries[start:stop], docs, cands, pos_ids[start:stop], row_seeds[start:stop],
                                   doc_norm, doc_hash, neg, local)
        out += negs
        counts += c
    return out, counts


# ---- one source -----------------------------------------------------------------------------------------------
def row_seeds_of(queries: list[str], positives: list[str], seed: int) -> np.ndarray:
    """[N] uint64: a row's sampling seed, from its own text only (so order- and chunk-independent)."""
    return mix64(hash64([q + "\x1f" + p for q, p in zip(queries, positives)]) ^ mix64(seed))


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


def mine_source(rows: PairRows, extra: list[str], model, cfg: MineConfig, cache_dir: Path) -> tuple[list, dict]:
    """Negative texts per row (a list each) and this source's stats."""
    docs = list(dict.fromkeys([*rows.positives, *extra]))  # exact-unique, first-seen order
    doc_id = {t: i for i, t in enumerate(docs)}
    pos_ids = np.array([doc_id[p] for p in rows.positives], dtype=np.int64)
    doc_emb = embed_cached(model, docs, cfg.embed, resolve_prompt(model, cfg.embed.doc_prompt, "document"), cache_dir)
    uniq_q = list(dict.fromkeys(rows.queries))
    q_emb = embed_cached(model, uniq_q, cfg.embed, resolve_prompt(model, cfg.embed.query_prompt, "query"), cache_dir)
    q_pos = {q: i for i, q in enumerate(uniq_q)}
    q_vecs = q_emb.vectors[[q_pos[q] for q in rows.queries]]  # [N, dim], a row each
    doc_norm = norm_hash64(docs)
    neg_ids, counts = mine_embedded(q_vecs, doc_emb.vectors, pos_ids, row_seeds_of(rows.queries, rows.positives,
                                    cfg.negatives.seed), doc_norm, hash64(docs), cfg.negatives, cfg.index,
                                    _blocked_rows(rows.queries, doc_norm[pos_ids]))
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
    return [[docs[i] for i in ids] for ids in neg_ids], stats


def _blocked_rows(queries: list[str], pos_norm: np.ndarray) -> dict[int, np.ndarray]:
    """Rows whose query has several (folded-distinct) positives -> the folded hashes of all of them."""
    by_query: dict[str, set[int]] = {}
    for q, h in zip(queries, pos_norm.tolist()):
        by_query.setdefault(q, set()).add(h)
    return {r: np.array(sorted(by_query[q]), dtype=np.uint64) for r, q in enumerate(queries) if len(by_query[q]) > 1}


# ---- the command ----------------------------------------------------------------------------------------------
def mine(cfg: MineConfig, model: GTEModel | None = None) -> Path:
    """Run mining as configured; returns out_dir. A finished out_dir with the same config is left as it is.

    `model`: an already loaded GTEModel to use instead of loading `cfg.model` (e.g. the one just trained).
    """
    out = Path(cfg.out_dir)
    if _already_done(out, cfg):
        print(f"gte mine: {out} is already complete ({MARKER}); nothing to do", file=sys.stderr)
        return out
    start = time.perf_counter()
    set_threads(cfg.index.num_threads)
    in_dir = Path(cfg.input_dir)
    manifest = read_manifest(in_dir)
    names = _select_sources(manifest, cfg.sources, in_dir)
    model = model if model is not None else load_model(cfg.model)
    cache_dir = Path(cfg.embed.cache_dir) if cfg.embed.cache_dir else out / ".embed_cache"
    extra = read_extra_corpus(cfg.extra_corpus)
    (out / MARKER).unlink(missing_ok=True)
    entries, per_source = {}, {}
    for name in names:
        rows = read_train(in_dir, manifest["sources"][name], name)
        stats: dict = {"train_rows": len(rows)}
        if cfg.filter.enabled:
            rows, stats["filter"] = _apply_filter(rows, model, cfg, cache_dir)
        # Candidates come from the whole source (or a seeded sample of it), not only the sampled queries' positives:
        # a bigger corpus holds harder negatives.
        corpus = sample_corpus(rows.positives, cfg.max_corpus_per_source, cfg.negatives.seed)
        rows = sample_rows(rows, cfg.max_queries_per_source, cfg.negatives.seed)
        negatives, mined = mine_source(rows, [*corpus, *extra], model, cfg, cache_dir)
        stats.update(mined)
        keep = np.array([len(n) >= cfg.negatives.min_negatives for n in negatives], dtype=bool)
        kept_lengths = [len(n) for n, k in zip(negatives, keep) if k]
        stats.update(queries_mined=int(keep.sum()), queries_dropped=int((~keep).sum()),
                     mean_negatives=round(float(np.mean(kept_lengths)) if kept_lengths else 0.0, 3))
        per_source[name] = stats
        if not keep.any():  # an empty shard would only break readers downstream: leave the source out, say so
            print(f"gte mine: source {name}: no query kept >= {cfg.negatives.min_negatives} negatives after the "
                  "window/margin/ceiling filters; left out of the output (see mine_stats.json)", file=sys.stderr)
            continue
        entries[name] = write_source(out, name, rows, negatives, keep, manifest["sources"][name], in_dir,
                                     cfg.rows_per_shard)
    if not entries:
        raise ValueError(f"gte mine: no source kept any query with >= {cfg.negatives.min_negatives} negatives; "
                         "widen negatives.rank_max, lower negatives.margin or raise negatives.max_score")
    _finish(out, cfg, entries, per_source, start)
    return out


def _apply_filter(rows: PairRows, model, cfg: MineConfig, cache_dir: Path) -> tuple[PairRows, dict]:
    fmodel = model if cfg.filter.model == cfg.model else load_model(cfg.filter.model)
    result = consistency_filter(rows.queries, rows.positives, fmodel, cfg.filter, cache_dir=cache_dir)
    return rows.take(np.flatnonzero(result.keep)), result.stats["total"]


def _select_sources(manifest: dict, wanted: list[str], in_dir: Path) -> list[str]:
    have = list(manifest["sources"])
    unknown = [s for s in wanted if s not in have]
    if unknown:
        raise ValueError(f"sources={unknown} are not in {in_dir}/manifest.json; it has {have}")
    return list(wanted) or have


def _output_config(cfg: MineConfig) -> dict:
    flat: dict = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            elif f"{prefix}{k}" not in _NO_OUTPUT_EFFECT:
                flat[f"{prefix}{k}"] = v

    walk(asdict(cfg), "")
    return flat


def _already_done(out: Path, cfg: MineConfig) -> bool:
    marker = out / MARKER
    if not marker.is_file():
        return False
    done = json.loads(marker.read_text())["config"]
    if done == _output_config(cfg):
        return True
    if not cfg.overwrite:
        diff = sorted(k for k in set(done) | set(_output_config(cfg)) if done.get(k) != _output_config(cfg).get(k))
        raise ValueError(f"{out} holds a finished mining run made with other settings ({', '.join(diff)}); "
                         "choose another out_dir or pass overwrite=true to replace it")
    return False


def _finish(out: Path, cfg: MineConfig, entries: dict, per_source: dict, start: float) -> None:
    stats = {
        "sources": per_source,
        "queries_mined": sum(s["queries_mined"] for s in per_source.values()),
        "wall_s": round(time.perf_counter() - start, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    manifest = {"format": "gte-pairs/1", "sources": entries, "mined_from": str(Path(cfg.input_dir).resolve()),
                "mining": stats, "mine_config": asdict(cfg)}
    _write_json(out / "manifest.json", manifest)
    _write_json(out / "mine_stats.json", stats)
    _write_json(out / MARKER, {"config": _output_config(cfg)})  # last: its presence means "complete"


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    """`gte mine [CONFIG.yaml] [key=value ...]`."""
    from gte_model.configio import dump_config, load_config

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    path = argv.pop(0) if argv and "=" not in argv[0] else None
    cfg = load_config(MineConfig, path, argv)
    print(dump_config(cfg), file=sys.stderr)
    out = mine(cfg)
    stats = json.loads((out / "mine_stats.json").read_text())
    for name, s in stats["sources"].items():
        print(f"{name}: {s['queries_mined']} queries mined, {s['mean_negatives']} negatives each on average, "
              f"{s['queries_short']} with < k, dropped margin={s.get('dropped_margin', 0)} "
              f"ceiling={s.get('dropped_ceiling', 0)} positive={s.get('dropped_positive', 0)}")
    print(f"wall {stats['wall_s']} s, peak RSS {stats['peak_rss_mb']} MB -> {out}")
    return 0


__all__ = ["MineConfig", "NegativesConfig", "main", "mine", "mine_embedded", "select_negatives"]
