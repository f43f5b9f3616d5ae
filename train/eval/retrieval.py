"""Retrieval evaluation on a BEIR-format folder: exact dense search in blocks, metrics from ir-measures.

The BEIR-format folder is read and checked by train/eval/beir_io.py. Queries get the model's "query" prompt and
documents its "document" prompt (when the model has them), exactly as in training. Metrics are computed by
pytrec_eval (through ir-measures), not by hand, so they match the numbers other BEIR/MTEB tools report, ties
included (see retrieval_metrics).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import ir_measures
import numpy as np
import torch
from ir_measures import RR, R, nDCG

from train.eval.beir_io import read_beir
from train.eval.dims import dims_to_run, truncate

# Report name -> (pytrec_eval measure, depth each ranking is cut to first or None). MRR@10 is the mean reciprocal
# rank over rankings cut to 10: pytrec_eval's RR has no cutoff of its own (see retrieval_metrics).
MEASURES = {"ndcg@10": (nDCG @ 10, None), "mrr@10": (RR, 10), "recall@100": (R @ 100, None)}
TOP_K = 100
# Scores held at once while searching: query block x corpus <= this many floats (256 MB), whatever the corpus.
_SCORE_BUDGET = 64 * 1024 * 1024


def search(query_emb: np.ndarray, corpus_emb: np.ndarray, top_k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: (scores [Q, k], corpus indices [Q, k]), best first.

    Queries go in blocks so that at most _SCORE_BUDGET scores exist at once: never the full Q x N matrix.
    """
    corpus = torch.from_numpy(np.ascontiguousarray(corpus_emb, dtype=np.float32))  # [N, D]
    queries = torch.from_numpy(np.ascontiguousarray(query_emb, dtype=np.float32))  # [Q, D]
    k = min(top_k, corpus.shape[0])
    block = max(1, _SCORE_BUDGET // max(1, corpus.shape[0]))
    scores, indices = [], []
    for start in range(0, queries.shape[0], block):
        sims = queries[start : start + block] @ corpus.T  # [b, N]
        top = torch.topk(sims, k, dim=1)  # [b, k]
        scores.append(top.values)
        indices.append(top.indices)
    if not scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return torch.cat(scores).numpy(), torch.cat(indices).numpy()


def retrieval_metrics(qrels: dict[str, dict[str, int]], run: dict[str, dict[str, float]]) -> dict[str, float]:
    """nDCG@10, MRR@10, Recall@100 averaged over the judged queries (pytrec_eval).

    Every metric comes from pytrec_eval so that one tie rule holds for all: equal scores rank by doc id, descending
    (trec_eval's rule, which mteb follows too). ir-measures' own RR@10 would come from its msmarco provider, which
    breaks ties the other way, so MRR@10 on a set with tied scores would disagree with nDCG@10 and with mteb.
    """
    # A judged query that retrieved nothing still counts, as a zero: give it an empty ranking explicitly.
    run = {qid: run.get(qid, {}) for qid in qrels}
    per_query = {name: {qid: 0.0 for qid in qrels} for name in MEASURES}
    for name, (measure, depth) in MEASURES.items():
        # trec_eval's order: score, then doc id, both descending
        ranking = run if depth is None else {
            qid: dict(sorted(hits.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)[:depth])
            for qid, hits in run.items()}
        for metric in ir_measures.pytrec_eval.iter_calc([measure], qrels, ranking):
            per_query[name][metric.query_id] = float(metric.value)
    return {name: float(np.mean(list(values.values()))) if values else 0.0 for name, values in per_query.items()}


def ranking_run(qids: list[str], doc_ids: list[str], scores: np.ndarray, indices: np.ndarray, top_k: int = TOP_K,
                ignore_identical_ids: bool = False) -> dict[str, dict[str, float]]:
    """A run {qid: {doc id: score}} (top_k per query) from search() output over rows of qids / columns of doc_ids."""
    run = {}
    for row, qid in enumerate(qids):
        hits = {doc_ids[j]: float(s) for j, s in zip(indices[row], scores[row])}
        if ignore_identical_ids:
            hits.pop(qid, None)
        run[qid] = dict(sorted(hits.items(), key=lambda kv: -kv[1])[:top_k])
    return run


def evaluate_beir(model, beir_dir: str | Path, batch_size: int = 64, bf16: bool = False, split: str = "test",
                  top_k: int = TOP_K, ignore_identical_ids: bool = False) -> dict:
    """Encode queries and corpus with `model` (a GTEModel), search exactly, score with ir-measures.

    ignore_identical_ids drops a document whose id equals the query id (BEIR's option for sets where queries
    are also documents); off by default because our held-out sets may give a query and its positive one id.
    """
    by_dim = evaluate_beir_dims(model, beir_dir, None, batch_size, bf16, split, top_k, ignore_identical_ids)
    return by_dim[model.dim]


def evaluate_beir_dims(model, beir_dir: str | Path, dims: Sequence[int] | None, batch_size: int = 64,
                       bf16: bool = False, split: str = "test", top_k: int = TOP_K,
                       ignore_identical_ids: bool = False,
                       searches: Mapping[str, Callable] | None = None,
                       prompt_names: tuple[str, str] = ("query", "document")) -> dict[int | tuple[int, str], dict]:
    """{dim: metrics} at the full dim and at each of dims (embeddings truncated, see train.eval.dims), and
    {(dim, precision): metrics} for each {precision: search function} of searches at each of those dims (the
    embeddings held at that precision: train.eval.quantized.SEARCHES); the texts are encoded once. Metrics include
    absent_judged_docs when some judged documents are not in the corpus (they count as relevant and never
    retrieved, see train/eval/beir_io.py). prompt_names: the model's prompts for the queries and the documents."""
    data = read_beir(beir_dir, split)
    corpus, queries, qrels = data.corpus, data.queries, data.qrels
    absent = {"absent_judged_docs": len(data.absent_docs)} if data.absent_docs else {}
    doc_ids, qids = list(corpus), list(queries)
    q_emb = model.encode([queries[q] for q in qids], batch_size=batch_size, normalize=True,
                         prompt_name=prompt_names[0], bf16=bf16)  # [Q, dim]
    d_emb = model.encode([corpus[d] for d in doc_ids], batch_size=batch_size, normalize=True,
                         prompt_name=prompt_names[1], bf16=bf16)  # [N, dim]
    by_dim: dict[int | tuple[int, str], dict] = {}
    for dim in dims_to_run(model.dim, dims):
        for precision, searcher in [(None, search), *(searches or {}).items()]:
            # One extra candidate so that dropping the query's own id still leaves top_k.
            scores, indices = searcher(truncate(q_emb, dim), truncate(d_emb, dim), top_k + int(ignore_identical_ids))
            run = ranking_run(qids, doc_ids, scores, indices, top_k, ignore_identical_ids)
            by_dim[dim if precision is None else (dim, precision)] = {
                **retrieval_metrics(qrels, run), "queries": len(qids), "documents": len(doc_ids), **absent}
    return by_dim
