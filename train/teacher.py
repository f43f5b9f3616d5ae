"""Teacher vectors of a batch's texts for distillation and guided masking, read through the on-disk embedding cache
(gte_model.embed_cache) that `gte mine` fills with the same teacher: texts it embedded are never embedded again, and
a text met for the first time is embedded once and cached (a resumed run reads the very vectors it used before).
With teacher.kind=cross, a cross-encoder's scores of each query's own (query, document) pairs instead, through the
pair-score cache (gte_model.score_cache), the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gte_model import load_model
from gte_model.embed_cache import VectorCache, resolve_prompt
from gte_model.embed_config import TeacherConfig
from gte_model.fingerprint import model_fingerprint
from gte_model.score_cache import ScoreCache
from train.batch import Batch
from train.data import PairsData


class TeacherVectors:
    """batch -> (queries [b, Ht], positives [b, Ht], negatives [b, K, Ht] or None), unit float32 tensors."""

    def __init__(self, cfg: TeacherConfig, default_cache: Path, persist: bool = True) -> None:
        """persist: write vectors of new texts to the cache (the main process only: one writer per cache)."""
        self.model = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code,
                                trust_flag="teacher.trust_remote_code=true").eval()
        root = cfg.cache_dir or default_cache
        prompts = {role: resolve_prompt(self.model, p, role) for role, p in (("query", cfg.query_prompt),
                                                                            ("document", cfg.doc_prompt))}
        self.queries = VectorCache(self.model, cfg, prompts["query"], root, persist)
        # one namespace, one writer: with the same prefix both roles share a cache folder, so they share its index
        self.documents = self.queries if prompts["document"] == prompts["query"] else \
            VectorCache(self.model, cfg, prompts["document"], root, persist)

    def __call__(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor | None]:
        q = torch.from_numpy(self.queries.embed(batch.queries, show_progress=False).vectors)
        docs = torch.from_numpy(self.documents.embed(batch.documents(), show_progress=False).vectors)
        b, k = batch.size, batch.num_negatives
        return q, docs[:b], docs[b:].view(b, k, -1) if k else None


def fill_teacher_cache(cfg: TeacherConfig, train_dir: str | Path) -> dict[str, int]:
    """Fill the teacher's cache (cfg.cache_dir) for a pairs dir's train rows, so that training on them reads it and
    never runs the teacher: a bi-encoder's vectors of every query and document (positive and each stored negative),
    or a cross-encoder's scores of every (query, positive) and (query, stored negative) pair. What is cached already
    is not computed again. -> {"computed": texts or pairs computed, "reused": found in the cache}."""
    if not cfg.cache_dir:
        raise ValueError("teacher.cache_dir is empty: what the teacher computes would be lost; name a folder")
    data = PairsData(train_dir, num_negatives=1, heldout=False, repeat_negatives=True)
    teacher = load_teacher(cfg, Path(cfg.cache_dir))
    counts = {"computed": 0, "reused": 0}
    for source in data.names:
        if isinstance(teacher, TeacherScores):
            pairs = data.train_pairs(source)
            print(f"[teacher] {source}: {len(pairs):,} pairs", flush=True)
            scored = teacher.cache.score(pairs, teacher.predict)
            done = [(scored.computed_pairs, scored.reused_pairs)]
        else:
            queries, documents = data.train_texts(source)
            print(f"[teacher] {source}: {len(queries):,} queries, {len(documents):,} documents", flush=True)
            embedded = [teacher.queries.embed(queries, show_progress=True),
                        teacher.documents.embed(documents, show_progress=True)]
            done = [(e.computed_texts, e.reused_texts) for e in embedded]
        for computed, reused in done:
            counts["computed"] += computed
            counts["reused"] += reused
    print(f"[teacher] {counts['computed']:,} computed, {counts['reused']:,} found in {cfg.cache_dir}", flush=True)
    return counts


def load_teacher(cfg: TeacherConfig, default_cache: Path, persist: bool = True) -> TeacherVectors | TeacherScores:
    """The teacher of teacher.kind: vectors (bi) or pair scores (cross)."""
    return (TeacherScores if cfg.kind == "cross" else TeacherVectors)(cfg, default_cache, persist)


class TeacherScores:
    """batch -> [b, 1+K] float32 scores of (query_i, positive_i) and (query_i, each of its negatives) by a
    sentence-transformers CrossEncoder (teacher.kind=cross); teacher.query_prompt / doc_prompt are literal prefixes."""

    def __init__(self, cfg: TeacherConfig, default_cache: Path, persist: bool = True) -> None:
        """persist: write scores of new pairs to the cache (the main process only: one writer per cache)."""
        from sentence_transformers import CrossEncoder  # only a cross-encoder teacher needs it

        self.cfg = cfg
        self.model = CrossEncoder(cfg.model, local_files_only=True, max_length=cfg.max_seq_len,
                                  trust_remote_code=cfg.trust_remote_code).eval()
        self.prefixes = (cfg.query_prompt or "", cfg.doc_prompt or "")
        settings = {"model": model_fingerprint(self.model), "max_seq_len": int(cfg.max_seq_len),
                    "bf16": bool(cfg.bf16), "activation": type(self.model.activation_fn).__name__,
                    "prefixes": list(self.prefixes)}
        self.cache = ScoreCache(settings, cfg.cache_dir or default_cache, cfg.shard_size, persist)

    def __call__(self, batch: Batch) -> Tensor:
        b, k, docs = batch.size, batch.num_negatives, batch.documents()
        pairs = [(q, doc) for i, q in enumerate(batch.queries)
                 for doc in [docs[i], *docs[b + i * k : b + (i + 1) * k]]]  # row i: positive, then its negatives
        return torch.from_numpy(self.cache.score(pairs, self.predict).scores).view(b, 1 + k)  # [b, 1+K]

    def predict(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The cross-encoder's scores of `pairs` -> [len] float32 (its own activation applied; teacher.bf16)."""
        query_prefix, doc_prefix = self.prefixes
        device = torch.device(self.model.device).type
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=self.cfg.bf16):
            scores = self.model.predict([(query_prefix + q, doc_prefix + d) for q, d in pairs],
                                        batch_size=self.cfg.batch_size, show_progress_bar=False,
                                        convert_to_tensor=True)
        return scores.float().cpu().numpy()
