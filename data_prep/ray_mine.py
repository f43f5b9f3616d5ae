"""`gte mine` under engine=ray (data_prep.engine.RayEngine): embedding by a pool of actors, index shards and search +
selection of query chunks in Ray tasks.

- Embedding (RayEngine.encoder): `RayEncoder.of(model)` is an `embed_cache.Encoder`. The cache (on this machine)
  decides which texts are missing and writes every shard; each missing shard's texts go to one actor, which holds
  one copy of the model (on a GPU when the cluster has them) and runs the same `encode_chunk` call as
  engine=local. Actors start once per run.
- Index (RayEngine.map_build): each corpus shard's faiss index (`index.shards`) is built in a Ray task and comes
  back `serialized`.
- Search + selection (RayEngine.map_chunks): `mine_search.mine_chunk` runs on query chunks as Ray tasks; the shards'
  indexes are `serialize`d into the object store once and read by each task; results come back in chunk order.
The output equals engine=local's with any number of workers (tests/data_prep/test_ray_engine.py) when the vectors
do: in fp32 (`embed.bf16=false`), or from a cache both engines share. With bf16 autocast on a CPU, a text's vector
can differ in its last bits with the encoder's thread count (an actor runs Ray's one thread, engine=local every
core), which can change a mined row (benchmarks/README.md, "Prep and mining on Ray", counts them).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator

import faiss
import numpy as np

from data_prep.knn import Shard
from data_prep.ray_support import import_ray
from gte_model.embed_cache import Encoder, encode_chunk
from gte_model.embed_config import EmbedConfig


class _EmbedWorker:
    """An actor's model: one copy per actor, moved to the GPU Ray gave it (if any)."""

    def __init__(self, model) -> None:
        import torch

        self.model = model.to("cuda") if torch.cuda.is_available() else model

    def encode(self, texts: list[str], cfg: EmbedConfig, prefix: str) -> np.ndarray:
        return encode_chunk(self.model, texts, cfg, prefix, show_progress=False)


class RayEncoder:
    """A pool of `num_workers` embedding actors: one model each, one GPU each when the cluster has GPUs.
    `of(model)` is an `embed_cache.Encoder` for that model.

    The actors start at the first missing text and serve every later call for the same model until `close()`; a
    call for another model (mining's teacher) replaces them, so the pool never holds more than num_workers models
    (nor GPUs). They reserve no CPU: search tasks run between embedding calls, and an actor that reserved one would
    hold it all along."""

    def __init__(self, num_workers: int) -> None:
        self.ray = import_ray()
        self.num_workers = num_workers
        self.actors: list = []
        self.model = None  # the model the actors hold

    def of(self, model) -> Encoder:
        return functools.partial(self._encode, model)

    def _encode(self, model, chunks: Iterable[list[str]], cfg: EmbedConfig, prefix: str) -> Iterator[np.ndarray]:
        from ray.util import ActorPool

        chunks = list(chunks)
        if not chunks:  # nothing missing from the cache: no actor is started
            return
        if self.model is not model:
            self.close()
        if not self.actors:
            gpus = 1 if self.ray.cluster_resources().get("GPU", 0) >= 1 else 0
            actor = self.ray.remote(num_cpus=0, num_gpus=gpus)(_EmbedWorker)
            model_ref = self.ray.put(model)  # shipped to the object store once, loaded by each actor
            self.actors, self.model = [actor.remote(model_ref) for _ in range(self.num_workers)], model
        yield from ActorPool(self.actors).map(lambda a, texts: a.encode.remote(texts, cfg, prefix), chunks)

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        self.actors, self.model = [], None


# faiss indexes do not pickle: they travel as uint8 arrays (faiss.serialize_index)
def serialize(shards: list[Shard]) -> list[tuple[int, np.ndarray]]:
    """Shards -> (offset, serialised index) each: what map_chunks puts in the object store once."""
    return [(shard.offset, faiss.serialize_index(shard.index)) for shard in shards]


def with_shards(fn: Callable, task, serialized: list[tuple[int, np.ndarray]], *shared):
    """In a Ray task: fn(task, shards, *shared) with the shards rebuilt from `serialize`."""
    return fn(task, [Shard(offset, faiss.deserialize_index(data)) for offset, data in serialized], *shared)


def serialized(build: Callable, docs: np.ndarray) -> np.ndarray:
    """In a Ray task: build(docs), serialised for the trip back."""
    return faiss.serialize_index(build(docs))


def deserialized(data: np.ndarray) -> faiss.Index:
    return faiss.deserialize_index(data)
