"""A resumable on-disk cache of text embeddings, shared by hard-negative mining and consistency filtering.

Layout (one namespace folder per model + encoding settings, so two models never mix):

  <cache_dir>/<namespace>/index.json          {"format", "namespace": {...settings}, "dim", "dtype", "shards": [...]}
  <cache_dir>/<namespace>/shard-00000.npy     [rows, dim] float16|float32, L2-normalised vectors
  <cache_dir>/<namespace>/shard-00000.keys.npy [rows] |S16 blake2b digests of the (un-prefixed) texts

The cache is content-addressed: a text is looked up by its digest, so a later call with a different subset or
order of texts reuses every vector it already has. Missing texts are embedded in shards of `shard_size`, each
written atomically (vectors, then keys, then the index), so a killed run loses at most the shard in flight and a
re-run embeds only what is missing. One writer per namespace at a time (no lock file: do not share a cache
folder between concurrently running jobs on the same model).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gte_model.core.atomic import write_bytes, write_json
from gte_model.core.errors import UserError
from gte_model.core.text import text_digest
from gte_model.embed_config import EmbedConfig
from gte_model.fingerprint import model_fingerprint

CACHE_FORMAT = "gte-embed-cache/1"
DIGEST_BYTES = 16  # gte_model.core.text.text_digest
# (chunks of texts, settings, literal prefix) -> one [len(chunk), dim] float32 array per chunk, in chunk order
Encoder = Callable[[Iterable[list[str]], EmbedConfig, str], Iterator[np.ndarray]]


@dataclass
class Embedded:
    """Vectors for the requested texts, in request order, and what the cache did to produce them."""

    vectors: np.ndarray  # [N, dim] float32, L2-normalised
    computed_texts: int  # texts embedded by the model in this call
    reused_texts: int  # texts served from the cache
    computed_shards: int
    namespace: str


def resolve_prompt(model, prompt: str | None, role: str) -> str:
    """The literal prefix for a role: an explicit string wins, else the model's own prompt for the role, else ''.

    (GTEModel.encode treats an unknown prompt *name* as a literal prefix, so we never pass it a bare role name.)
    """
    if prompt is not None:
        return prompt
    return str(getattr(model, "prompts", {}).get(role, ""))


def embed_cached(
    model,
    texts: Sequence[str],
    cfg: EmbedConfig,
    prefix: str = "",
    cache_dir: str | Path | None = None,
    show_progress: bool | None = None,
    encoder: Encoder | None = None,
) -> Embedded:
    """Embed `texts` (with the literal `prefix`) through the cache at `cache_dir` (default: cfg.cache_dir).

    encoder: encodes the missing texts, one call per cache shard (default: `local_encoder(model)`; engine=ray passes
    a pool of actors). A text's vector depends only on its shard's call, never on the encoder.
    """
    return VectorCache(model, cfg, prefix, cache_dir).embed(texts, show_progress, encoder)


class VectorCache:
    """One namespace of the cache (a model + prefix + settings), opened once: repeated lookups (a training step's
    teacher vectors) read only the shards they need, never the whole index again.

    persist=False: texts missing from the cache are embedded and kept in memory only (the other processes of a
    distributed run: one writer per namespace)."""

    def __init__(self, model, cfg: EmbedConfig, prefix: str = "", cache_dir: str | Path | None = None,
                 persist: bool = True) -> None:
        if not str(cache_dir or cfg.cache_dir):
            raise UserError("embed.cache_dir is empty: set embed.cache_dir=/some/folder")
        self.model, self.cfg, self.prefix = model, cfg, prefix
        settings = {"model": model_fingerprint(model), "prefix": prefix, "max_seq_len": int(cfg.max_seq_len),
                    "bf16": bool(cfg.bf16), "dtype": cfg.cache_dtype}
        self.namespace = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8).hexdigest()
        self.folder = Path(cache_dir or cfg.cache_dir) / self.namespace
        self.folder.mkdir(parents=True, exist_ok=True)
        self.index = load_index(self.folder, {"format": CACHE_FORMAT, "namespace": settings, "dim": model.dim,
                                              "dtype": settings["dtype"]})
        self.where = _locate(self.folder, self.index)  # digest -> (shard name, row)
        self._shards: dict[str, np.ndarray] = {}  # memory-mapped shard vectors (and in-memory ones: persist=False)
        self.persist = persist

    def embed(self, texts: Sequence[str], show_progress: bool | None = None, encoder: Encoder | None = None
              ) -> Embedded:
        keys = [text_digest(t) for t in texts]
        todo, pending = [], set()  # first occurrence of each missing text, in request order
        for i, key in enumerate(keys):
            if key not in self.where and key not in pending:
                pending.add(key)
                todo.append(i)
        chunks = [todo[start : start + self.cfg.shard_size] for start in range(0, len(todo), self.cfg.shard_size)]
        encode = encoder or local_encoder(self.model, show_progress)
        computed_shards = 0
        for chunk, vecs in zip(chunks, encode(([texts[i] for i in c] for c in chunks), self.cfg, self.prefix)):
            vecs = vecs.astype(self.cfg.cache_dtype)  # [len(chunk), dim]
            if self.persist:
                name = write_shard(self.folder, self.index, vecs, np.array([keys[i] for i in chunk], dtype="S16"))
            else:
                name = f"memory-{len(self._shards)}"
                self._shards[name] = vecs
            for row, i in enumerate(chunk):
                self.where[keys[i]] = (name, row)
            computed_shards += 1
        return Embedded(self._gather(keys), len(todo), len(texts) - len(todo), computed_shards, self.namespace)

    def _gather(self, keys: list[bytes]) -> np.ndarray:
        out = np.empty((len(keys), self.model.dim), dtype=np.float32)  # [N, dim]
        by_shard: dict[str, tuple[list[int], list[int]]] = {}
        for i, key in enumerate(keys):
            name, row = self.where[key]
            dst, src = by_shard.setdefault(name, ([], []))
            dst.append(i)
            src.append(row)
        for name, (dst, src) in by_shard.items():
            if name not in self._shards:
                self._shards[name] = np.load(self.folder / f"{name}.npy", mmap_mode="r")
            out[np.asarray(dst)] = self._shards[name][np.asarray(src)]
        return out


def local_encoder(model, show_progress: bool | None = None) -> Encoder:
    """Encode each chunk of texts with `model` in this process."""

    def encode(chunks: Iterable[list[str]], cfg: EmbedConfig, prefix: str) -> Iterator[np.ndarray]:
        for texts in chunks:
            yield encode_chunk(model, texts, cfg, prefix, show_progress)

    return encode


def encode_chunk(model, texts: list[str], cfg: EmbedConfig, prefix: str, show_progress: bool | None = None
                 ) -> np.ndarray:
    """One cache shard's texts -> [len(texts), dim] float32, L2-normalised: the one encode call of every encoder."""
    return model.encode(texts, batch_size=cfg.batch_size, max_seq_len=cfg.max_seq_len, normalize=True, prompt=prefix,
                        bf16=cfg.bf16, show_progress=show_progress)


def load_index(folder: Path, header: dict) -> dict:
    """The index of a cache namespace folder (a new one when there is none); refused when its header (format,
    settings, ...) differs from `header`: another model's or format's cache never serves this one."""
    path = folder / "index.json"
    if path.is_file():
        index = json.loads(path.read_text())
        if any(index.get(key) != value for key, value in header.items()):
            raise UserError(
                f"{path}: belongs to other settings ({index.get('namespace')}) than this run ({header['namespace']}); "
                f"delete {folder} or choose another cache folder"
            )
        return index
    return {**header, "shards": []}


def _locate(folder: Path, index: dict) -> dict[bytes, tuple[str, int]]:
    """Map digests of every readable shard to (shard name, row)."""
    where: dict[bytes, tuple[str, int]] = {}
    for name, keys in readable_shards(folder, index):
        for row, key in enumerate(keys.tolist()):  # numpy's S16 drops a digest's trailing zero bytes: restore them
            where[key.ljust(DIGEST_BYTES, b"\0")] = (name, row)
    return where


def readable_shards(folder: Path, index: dict) -> list[tuple[str, np.ndarray]]:
    """(name, keys array) of every shard in the index whose two files are whole; a shard whose files vanished or
    are cut short is forgotten (dropped from `index`), so its rows are computed again."""
    kept, found = [], []
    for shard in index["shards"]:
        vec_file, key_file = folder / f"{shard['name']}.npy", folder / f"{shard['name']}.keys.npy"
        try:
            keys = np.load(key_file)
            rows = np.load(vec_file, mmap_mode="r").shape[0]
        except (OSError, ValueError):
            continue
        if rows != len(keys) or rows != shard["rows"]:
            continue
        kept.append(shard)
        found.append((shard["name"], keys))
    index["shards"] = kept
    return found


def write_shard(folder: Path, index: dict, values: np.ndarray, keys: np.ndarray) -> str:
    """Add one shard (values [rows, ...], keys [rows, ...]) to a namespace folder; returns its name."""
    number = 1 + max((int(s["name"].split("-")[1]) for s in index["shards"]), default=-1)
    name = f"shard-{number:05d}"
    # Values first, keys second, index last, each by atomic rename: a shard is only ever half-visible as
    # "values without keys", which readable_shards ignores.
    _atomic_save(folder / f"{name}.npy", values)
    _atomic_save(folder / f"{name}.keys.npy", keys)
    index["shards"].append({"name": name, "rows": len(keys)})
    write_json(folder / "index.json", index, indent=1)
    return name


def _atomic_save(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())
