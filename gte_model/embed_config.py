"""How texts are embedded for the embedding cache (gte_model.embed_cache): the settings of `gte mine`, the
consistency filter and a training teacher."""

from __future__ import annotations

from dataclasses import dataclass

_DTYPES = ("float16", "float32")


@dataclass
class EmbedConfig:
    """How texts are embedded (shared by `gte mine` and the consistency filter)."""

    batch_size: int = 64  # texts per encoder forward
    max_seq_len: int = 256  # tokens per text (special tokens included); longer texts are truncated
    bf16: bool = True  # bf16 autocast in the encoder: faster on AVX-512-bf16 CPUs and GPUs (encode_benchmark.py)
    query_prompt: str | None = None  # prefix for queries; None = the model's "query" prompt (or none)
    doc_prompt: str | None = None  # prefix for documents; None = the model's "document" prompt (or none)
    # where vectors are cached; "" = `.<out name>.embed_cache` beside out_dir for `gte mine`, so the cache outlives
    # a rebuilt (overwrite=true) or interrupted output
    cache_dir: str = ""
    cache_dtype: str = "float16"  # float16 halves disk and RAM of the cache; float32 keeps full precision
    shard_size: int = 8192  # texts per cache shard: the unit of resume after a killed run

    def validate(self, prefix: str = "embed.") -> list[str]:
        errors = []
        if self.batch_size < 1:
            errors.append(f"{prefix}batch_size={self.batch_size}: must be >= 1")
        if self.max_seq_len < 4:
            errors.append(f"{prefix}max_seq_len={self.max_seq_len}: too small; use e.g. {prefix}max_seq_len=256")
        if self.cache_dtype not in _DTYPES:
            errors.append(f"{prefix}cache_dtype={self.cache_dtype!r}: must be one of {', '.join(_DTYPES)}")
        if self.shard_size < 1:
            errors.append(f"{prefix}shard_size={self.shard_size}: must be >= 1")
        return errors


@dataclass
class TeacherConfig(EmbedConfig):
    """A teacher (or guide) model and how its vectors are computed and cached: `gte mine` uses it to score and
    filter negatives, training to distil from it and to mask in-batch candidates; both read one cache, so a text the
    miner embedded is never embedded again by training (same model, max_seq_len, bf16 and cache_dtype)."""

    model: str = ""  # packaged name (all-mpnet-base-v2) or model folder; "" = no teacher

    def validate(self, prefix: str = "teacher.") -> list[str]:
        return super().validate(prefix) if self.model else []
