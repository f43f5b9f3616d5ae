"""Teacher vectors of a batch's texts for distillation and guided masking, read through the on-disk embedding cache
(gte_model.embed_cache) that `gte mine` fills with the same teacher: texts it embedded are never embedded again, and
a text met for the first time is embedded once and cached (a resumed run reads the very vectors it used before).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gte_model import load_model
from gte_model.embed_cache import VectorCache, resolve_prompt
from gte_model.embed_config import TeacherConfig
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


def cache_teacher_vectors(cfg: TeacherConfig, train_dir: str | Path) -> dict[str, int]:
    """Embed every query and every document (positive and each stored negative) of a pairs dir's train rows with
    the teacher into its cache (cfg.cache_dir), so that training on those rows reads the teacher's vectors and never
    runs it. Texts already cached are not embedded again. -> {"computed": texts embedded, "reused": texts found}."""
    if not cfg.cache_dir:
        raise ValueError("teacher.cache_dir is empty: the vectors would be lost; name a folder")
    data = PairsData(train_dir, num_negatives=1, heldout=False, repeat_negatives=True)
    vectors = TeacherVectors(cfg, Path(cfg.cache_dir))
    counts = {"computed": 0, "reused": 0}
    for source in data.names:
        queries, documents = data.train_texts(source)
        for role, cache, texts in (("queries", vectors.queries, queries), ("documents", vectors.documents, documents)):
            print(f"[teacher] {source}: {len(texts):,} {role}", flush=True)
            got = cache.embed(texts, show_progress=True)
            counts["computed"] += got.computed_texts
            counts["reused"] += got.reused_texts
    print(f"[teacher] {counts['computed']:,} texts embedded, {counts['reused']:,} found in {cfg.cache_dir}", flush=True)
    return counts
