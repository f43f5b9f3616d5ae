"""The engine seam (data_prep.engine): one object per run that prep and mining hand their distributable steps to.
Local: ordered maps in a process pool that ends with its block; mining's encoder, index shards and query chunks
through the engine it is given; the Ray engine's worker peaks are that engine's own state. The pure selection module
(data_prep.negatives) reaches no I/O, search or model."""

from __future__ import annotations

import ast
import operator
import os
from pathlib import Path

import numpy as np
import pytest

from data_prep.clean import LengthBounds
from data_prep.dedup import DedupConfig
from data_prep.engine import LocalEngine, RayEngine
from data_prep.mine_io import PairRows
from data_prep.mine_sources import mine_source
from data_prep.staging import process_batch
from gte_model.core.memory import children_peak_rss_mb
from tests.data_prep.helpers import mine_config, sentences


def test_local_ordered_map_in_pool_workers_equals_here_and_the_pool_ends_with_the_block():
    records = [{"source": "s", "query": f"query number {i}", "positive": f"a positive text number {i} here",
                "key": f"k{i}"} for i in range(12)]
    tasks = [(records[i : i + 2], LengthBounds(), False, 0, DedupConfig()) for i in range(0, 12, 2)]
    here = list(LocalEngine(num_proc=1).ordered_map(process_batch, tasks))
    engine = LocalEngine(num_proc=2)
    assert list(engine.ordered_map(operator.call, [os.getpid])) == [os.getpid()]  # outside the block: here
    with engine.workers():
        pooled = list(engine.ordered_map(process_batch, tasks))
        pids = set(engine.ordered_map(operator.call, [os.getpid] * 4))
    assert [r["key"] for res in pooled for r in res["records"]] == [f"k{i}" for i in range(12)]  # task order
    assert all(np.array_equal(a["q_sig"], b["q_sig"]) and a["records"] == b["records"] for a, b in zip(pooled, here))
    assert os.getpid() not in pids and len(pids) <= 2
    for pid in pids:  # the pool's workers are gone (their memory freed for the steps after)
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_each_ray_engine_keeps_its_own_workers_peaks():
    run_a, run_b = RayEngine(None, num_workers=2), RayEngine(None, num_workers=2)  # no task: no session needed
    for report in ((101, 300.0, 120.0), (101, 250.0, 180.0), (102, 200.0, 90.0)):  # (pid, peak RSS, private)
        run_a.record_peaks(report)
    assert run_a.worker_peak_mb() == (max(children_peak_rss_mb(), 300.0), 180.0)
    assert run_b.worker_peak_mb() == (children_peak_rss_mb(), 0.0)  # another run counts none of run_a's workers


class CountingEngine(LocalEngine):
    """The local engine, counting the seam operations mining calls."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def encoder(self, model):
        self.calls.append("encoder")
        return super().encoder(model)

    def map_build(self, build, tasks):
        self.calls.append("map_build")
        return super().map_build(build, tasks)

    def map_chunks(self, fn, tasks, shards, *shared):
        self.calls.append("map_chunks")
        return super().map_chunks(fn, tasks, shards, *shared)


def test_mining_embeds_indexes_and_searches_through_the_engine_it_is_given(tmp_path, tiny_model):
    queries, docs = sentences(40, 1), sentences(40, 2)
    rows = PairRows(queries, docs, [f"k{i}" for i in range(40)])
    cfg = mine_config(tmp_path, tmp_path / "pairs", "out", **{"index.query_chunk": 8, "index.shards": 2})
    engine = CountingEngine()
    negatives, _, stats = mine_source(rows, [], tiny_model, cfg, tmp_path / "cache", engine=engine)
    assert engine.calls == ["encoder", "map_build", "map_chunks"]  # embedding, both index shards, every chunk
    assert stats["index_shards"] == 2 and stats["embedded_texts"] == 80
    again, _, _ = mine_source(rows, [], tiny_model, cfg, tmp_path / "cache")  # the default engine: the same rows
    assert again == negatives and any(negatives)


def test_negative_selection_module_reaches_no_io_search_or_model():
    tree = ast.parse((Path(__file__).resolve().parents[2] / "data_prep" / "negatives.py").read_text())
    imported = {(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    imported |= {(alias.name, None) for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert imported == {("__future__", "annotations"), ("collections", "Counter"), ("numpy", None),
                        ("data_prep.knn", "exact_scores"), ("data_prep.knn", "pair_scores"),
                        ("data_prep.knn", "rank_candidates"), ("data_prep.mine_config", "NegativesConfig"),
                        ("gte_model.core.text", "content_hash64"), ("gte_model.core.text", "mix64")}
