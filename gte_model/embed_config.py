"""How texts are embedded for the embedding cache (gte_model.embed_cache): the settings of `gte mine`, the
consistency filter and a training teacher."""

from __future__ import annotations

from dataclasses import dataclass

from gte_model.core.config import bounded

TEACHER_KINDS = ("bi", "cross")


@dataclass
class EmbedConfig:
    """How texts are embedded (shared by `gte mine` and the consistency filter)."""

    batch_size: int = bounded(64, ge=1)  # texts per encoder forward
    # tokens per text (special tokens included); longer texts are truncated
    max_seq_len: int = bounded(256, ge=4, hint="e.g. 256")
    bf16: bool = True  # bf16 autocast in the encoder: faster on AVX-512-bf16 CPUs and GPUs (encode_benchmark.py)
    query_prompt: str | None = None  # prefix for queries; None = the model's "query" prompt (or none)
    doc_prompt: str | None = None  # prefix for documents; None = the model's "document" prompt (or none)
    # where vectors are cached; "" = `.<out name>.embed_cache` beside out_dir for `gte mine`, so the cache outlives
    # a rebuilt (overwrite=true) or interrupted output
    cache_dir: str = ""
    # float16 halves disk and RAM of the cache; float32 keeps full precision
    cache_dtype: str = bounded("float16", choices=("float16", "float32"))
    shard_size: int = bounded(8192, ge=1)  # texts per cache shard: the unit of resume after a killed run


@dataclass
class TeacherConfig(EmbedConfig):
    """A teacher (or guide) model and how its vectors are computed and cached: `gte mine` uses it to score and
    filter negatives, training to distil from it and to mask in-batch candidates; both read one cache, so a text the
    miner embedded is never embedded again by training (same model, max_seq_len, bf16 and cache_dtype)."""

    model: str = ""  # packaged name (all-mpnet-base-v2) or model folder; "" = no teacher
    # bi: an embedding model (its vectors, cached per text); cross: a sentence-transformers CrossEncoder folder (its
    # score of each (query, document) pair, cached per pair: gte_model.score_cache), for training's distillation only
    kind: str = bounded("bi", choices=TEACHER_KINDS)
    trust_remote_code: bool = False  # run the teacher folder's own model code (config.json auto_map): read it first
