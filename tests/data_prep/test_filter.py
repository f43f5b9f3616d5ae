"""Consistency filtering: a real model drops a planted mismatched pair and keeps matched ones; pools stay within
a source; a query's own positives never count against it; decisions do not depend on row order."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.filter import FilterConfig, consistency_filter
from gte_model.embed_config import EmbedConfig

MATCHED = [
    ("What command installs a Python library?", "Run pip install followed by the name of the package."),
    ("Where are Python packages published?", "Python packages are distributed on PyPI and installed with pip."),
    ("How do cats clean themselves?", "Cats groom their fur by licking it with their rough tongues."),
    ("What is the boiling point of water?", "Water boils at 100 degrees Celsius at sea level."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa in the early 16th century."),
    ("How do plants make food?", "Plants use photosynthesis to turn sunlight, water and carbon dioxide into sugar."),
    ("What causes tides in the ocean?", "Tides are caused by the gravitational pull of the moon on the oceans."),
    ("How many legs does a spider have?", "Spiders have eight legs, unlike insects which have six."),
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("Why is the sky blue?", "Sunlight is scattered by air molecules, and blue light scatters the most."),
    ("How do vaccines work?", "Vaccines train the immune system to recognise a pathogen without causing disease."),
    ("What does a bakery sell?", "A bakery sells fresh bread, cakes, pastries and cookies."),
    ("How fast can a cheetah run?", "A cheetah can sprint at speeds of up to 110 kilometres per hour."),
    ("When did the Second World War end?", "The Second World War ended in 1945."),
    ("What is a prime number?", "A prime number is divisible only by one and by itself."),
]
PLANTED = ("How do I install a package for Python?", "The stock market fell sharply in early trading today.")


def embed_cfg(tmp_path) -> EmbedConfig:
    return EmbedConfig(batch_size=32, max_seq_len=64, bf16=False, cache_dir=str(tmp_path / "cache"))


@pytest.mark.integration
def test_filter_drops_a_planted_mismatched_pair_and_keeps_matched_ones(tmp_path, minilm):
    pairs = [*MATCHED, PLANTED]
    cfg = FilterConfig(top_k=2, embed=embed_cfg(tmp_path))
    result = consistency_filter([q for q, _ in pairs], [p for _, p in pairs], minilm, cfg)
    assert result.keep[:-1].all() and not result.keep[-1]
    assert result.stats["total"] == {"pairs": 16, "kept": 15, "dropped": 1}
    assert result.rank[-1] == 2  # the two pip/PyPI documents outrank the stock-market "positive"


@pytest.mark.integration
def test_filter_decisions_do_not_depend_on_row_order(tmp_path, minilm):
    pairs = [*MATCHED, PLANTED]
    perm = np.random.default_rng(0).permutation(len(pairs))
    cfg = FilterConfig(top_k=1, pool_size=10, embed=embed_cfg(tmp_path))
    a = consistency_filter([q for q, _ in pairs], [p for _, p in pairs], minilm, cfg)
    b = consistency_filter([pairs[i][0] for i in perm], [pairs[i][1] for i in perm], minilm, cfg)
    np.testing.assert_array_equal(a.keep[perm], b.keep)
    np.testing.assert_array_equal(a.rank[perm], b.rank)


def test_pools_never_mix_sources_and_own_positives_do_not_count(tmp_path, tiny_model):
    # "red cat" as a document is identical to the query "red cat": it would outrank any other positive.
    queries = ["red cat", "red cat", "blue dog plays", "green man runs"]
    positives = ["the piano music", "red cat", "red cat", "a small child"]
    cfg = FilterConfig(top_k=1, embed=embed_cfg(tmp_path))
    mixed = consistency_filter(queries[2:] + queries[:1], positives[2:] + positives[:1], tiny_model, cfg)
    assert not mixed.keep[2]  # one pool: the other source's "red cat" beats "the piano music"
    split = consistency_filter(queries[2:] + queries[:1], positives[2:] + positives[:1], tiny_model, cfg,
                               sources=["b", "b", "a"])
    assert split.keep[2] and split.stats["a"] == {"pairs": 1, "kept": 1, "dropped": 0}
    # Within one source, the query's own second positive ("red cat") is skipped, not counted against it.
    own = consistency_filter(queries[:2], positives[:2], tiny_model, cfg)
    assert own.keep.all()


def test_filter_rejects_mismatched_lengths(tiny_model):
    with pytest.raises(ValueError, match="one entry per pair"):
        consistency_filter(["a", "b"], ["c"], tiny_model)
