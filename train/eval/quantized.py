"""Quantized embeddings in retrieval: what a vector store holding int8 or binary vectors returns.

- int8: each dim's range [min, max] is calibrated on the corpus embeddings and cut into 256 buckets (the codes of
  sentence-transformers' quantize_embeddings(precision="int8", calibration_embeddings=corpus)); queries and
  documents are both quantized, and ranked by the dot product of their dequantized vectors (bucket centres).
- binary: one sign bit per dim (e > 0); documents are ranked by the bits' agreement with the query's (Hamming
  search), then the top RESCORE_MULTIPLIER x top_k candidates are rescored by the float query against the
  documents' +-1 vectors (sentence-transformers' semantic_search_faiss/usearch rescoring; its 0/1 bits give the
  same order) and cut to top_k.
Results are named `beir/<set>@int8`, `beir/<set>@128+int8` (train/eval/dims.py) beside the truncated ones;
SEARCHES maps each precision to its search, for train.eval.retrieval.evaluate_beir_dims.
"""

from __future__ import annotations

import numpy as np
import torch

from train.eval.dims import PRECISION_NAMES as PRECISIONS
from train.eval.retrieval import search

RESCORE_MULTIPLIER = 4
_QUERY_BLOCK = 64  # queries rescored at once: block x candidates x dim floats


def int8_ranges(calibration: np.ndarray) -> np.ndarray:
    """[2, D]: each dim's min and max over the calibration rows [N, D]."""
    calibration = np.asarray(calibration, dtype=np.float32)
    return np.stack([calibration.min(axis=0), calibration.max(axis=0)])


def quantize_int8(emb: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """[N, D] float -> [N, D] int8 codes: floor((e - min) / step) in 0..255, shifted by -128; step = (max-min)/255."""
    starts, steps = _buckets(ranges)
    codes = np.clip(np.floor((np.asarray(emb, dtype=np.float32) - starts) / steps), 0, 255)
    return (codes - 128).astype(np.int8)


def dequantize_int8(codes: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """int8 codes -> the centres of their buckets, float32 [N, D]."""
    starts, steps = _buckets(ranges)
    return (starts + (codes.astype(np.float32) + 128.5) * steps).astype(np.float32)


def _buckets(ranges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ranges = np.asarray(ranges, dtype=np.float32)
    steps = (ranges[1] - ranges[0]) / 255
    return ranges[0], np.where(steps == 0, 1, steps).astype(np.float32)


def int8_search(query_emb: np.ndarray, corpus_emb: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k], indices [Q, k]) of both sides quantized to int8 with ranges calibrated on the corpus."""
    ranges = int8_ranges(corpus_emb)
    queries = dequantize_int8(quantize_int8(query_emb, ranges), ranges)
    return search(queries, dequantize_int8(quantize_int8(corpus_emb, ranges), ranges), top_k)


def binary_search(query_emb: np.ndarray, corpus_emb: np.ndarray, top_k: int,
                  multiplier: int = RESCORE_MULTIPLIER) -> tuple[np.ndarray, np.ndarray]:
    """(scores [Q, k], indices [Q, k]): Hamming search over sign bits for multiplier x top_k candidates, rescored by
    the float query against the candidates' +-1 vectors."""
    signs = np.where(np.asarray(corpus_emb) > 0, 1.0, -1.0).astype(np.float32)  # [N, D]
    query_signs = np.where(np.asarray(query_emb) > 0, 1.0, -1.0).astype(np.float32)  # [Q, D]
    # agreement - disagreement = D - 2 * Hamming distance: the same order as the Hamming search
    _, candidates = search(query_signs, signs, top_k * multiplier)  # [Q, m*k]
    k = min(top_k, candidates.shape[1])
    scores, indices = [], []
    docs, queries = torch.from_numpy(signs), torch.from_numpy(np.ascontiguousarray(query_emb, dtype=np.float32))
    for start in range(0, len(candidates), _QUERY_BLOCK):
        block = torch.from_numpy(candidates[start : start + _QUERY_BLOCK])  # [b, m*k]
        rescored = torch.einsum("bd,bcd->bc", queries[start : start + _QUERY_BLOCK], docs[block])  # [b, m*k]
        top = torch.topk(rescored, k, dim=1)  # [b, k]
        scores.append(top.values)
        indices.append(torch.gather(block, 1, top.indices))
    if not scores:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return torch.cat(scores).numpy(), torch.cat(indices).numpy()


# precision -> search(query_emb, corpus_emb, top_k) with the embeddings held at that precision
SEARCHES = {"int8": int8_search, "binary": binary_search}
assert tuple(SEARCHES) == PRECISIONS, f"{tuple(SEARCHES)} != {PRECISIONS}"
