"""SourceBatchSampler: one source per batch, n^alpha mixing, no repeat within a pass, pure in (seed, step)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import train.sampler as sampler_module
from data_prep.staging import alpha_sizes
from gte_model.core.text import splitmix64_finalise
from train.sampler import SourceBatchSampler

SIZES = {"small": 40, "medium": 400, "large": 4000}


def walk(sampler, steps):
    """{(source, pass): rows drawn in that pass, in order} over the first `steps` steps."""
    out: dict[tuple[str, int], list[int]] = {}
    for step in range(steps):
        source, rows = sampler.batch_at(step)
        assert sampler.pass_at(step)[0] == source
        out.setdefault(sampler.pass_at(step), []).extend(rows)
    return out


def test_sampler_never_mixes_sources_in_a_batch_and_rows_are_in_range():
    sampler = SourceBatchSampler(SIZES, global_batch_size=8, alpha=0.5, seed=1)
    for step in range(300):
        source, rows = sampler.batch_at(step)
        assert len(rows) == 8 and all(0 <= r < SIZES[source] for r in rows)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_sampler_source_frequencies_follow_n_to_the_alpha(alpha):
    sampler = SourceBatchSampler(SIZES, global_batch_size=8, alpha=alpha, seed=0)
    expected = {name: n**alpha / sum(m**alpha for m in SIZES.values()) for name, n in SIZES.items()}
    assert sampler.probabilities() == pytest.approx(expected)
    draws = 20_000
    counts = {name: 0 for name in SIZES}
    for step in range(draws):
        counts[sampler.pass_at(step)[0]] += 1  # pass_at locates the source without building the batch
    # Chi-square with 2 degrees of freedom: 13.8 is the 0.1% critical value.
    chi2 = sum((counts[s] - draws * p) ** 2 / (draws * p) for s, p in expected.items())
    assert chi2 < 13.8, (counts, expected)


def test_sampler_never_repeats_a_row_within_a_pass_and_covers_full_passes():
    sampler = SourceBatchSampler(SIZES, global_batch_size=8, alpha=1.0, seed=2)
    passes = walk(sampler, 3000)
    for (source, _), rows in passes.items():
        assert len(rows) == len(set(rows))
    # 40 rows, batches of 8: a finished pass over "small" has drawn every row exactly once.
    finished = [rows for (source, p), rows in passes.items() if source == "small" and (source, p + 1) in passes]
    assert len(finished) > 3 and all(sorted(rows) == list(range(40)) for rows in finished)
    assert passes[("small", 0)] != passes[("small", 1)]  # every pass is shuffled anew


@pytest.mark.parametrize("block", [64, sampler_module.BLOCK])
def test_sampler_batch_at_is_the_same_cold_or_in_order_and_across_instances(monkeypatch, block):
    monkeypatch.setattr(sampler_module, "BLOCK", block)  # small blocks: the walk crosses many block boundaries
    in_order = SourceBatchSampler(SIZES, global_batch_size=8, seed=5)
    expected = [in_order.batch_at(step) for step in range(700)]
    cold = SourceBatchSampler(dict(reversed(SIZES.items())), global_batch_size=8, seed=5)  # dict order is no input
    shuffled = np.random.default_rng(0).permutation(700)  # a resumed run starts anywhere
    assert {int(k): cold.batch_at(int(k)) for k in shuffled} == dict(enumerate(expected))


def test_sampler_depends_on_the_seed():
    a, b = (SourceBatchSampler(SIZES, global_batch_size=8, seed=s) for s in (0, 1))
    assert [a.batch_at(k) for k in range(20)] != [b.batch_at(k) for k in range(20)]


def test_sampler_local_slices_are_contiguous_and_cover_the_batch():
    sampler = SourceBatchSampler(SIZES, global_batch_size=8, seed=0)
    _, rows = sampler.batch_at(3)
    assert sum((sampler.local(rows, rank, 4) for rank in range(4)), []) == rows
    assert sampler.local(rows, 1, 2) == rows[4:]
    with pytest.raises(ValueError, match="global_batch_size=8 does not divide by 3"):
        sampler.local(rows, 0, 3)


def test_sampler_rejects_a_source_smaller_than_the_global_batch_naming_it():
    with pytest.raises(ValueError, match=r"'tiny': 5.*global_batch_size=8"):
        SourceBatchSampler({"tiny": 5, "big": 100}, global_batch_size=8)


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5}, {"seed": -1}, {"global_batch_size": 0}])
def test_sampler_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError):
        SourceBatchSampler(SIZES, **{"global_batch_size": 8, **kwargs})


def test_sampler_cold_call_at_a_million_steps_is_cheap():
    sampler = SourceBatchSampler({"a": 10_000_000, "b": 30_000}, global_batch_size=1024, seed=0)
    source, rows = sampler.batch_at(1_000_000)  # ~16 blocks of choices, one batch of the permutation
    assert len(set(rows)) == 1024 and np.max(rows) < (10_000_000 if source == "a" else 30_000)


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=4),
    batch=st.integers(1, 8),
    alpha=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32),
)
def test_sampler_properties_on_small_sizes(sizes, batch, alpha, seed):
    source_sizes = {f"s{i}": max(n, batch) for i, n in enumerate(sizes)}
    sampler = SourceBatchSampler(source_sizes, global_batch_size=batch, alpha=alpha, seed=seed)
    steps = 60
    passes = walk(sampler, steps)
    for (source, _), rows in passes.items():
        assert len(rows) == len(set(rows)) and all(0 <= r < source_sizes[source] for r in rows)
        assert len(rows) <= source_sizes[source] // batch * batch
    fresh = SourceBatchSampler(source_sizes, global_batch_size=batch, alpha=alpha, seed=seed)
    assert fresh.batch_at(steps - 1) == sampler.batch_at(steps - 1)


# Printed by the sampler at 72dff71, before the law moved to gte_model.core.mixing: the data order depends on them.
PINNED = {0.5: {"a": "0x1.2914cf9d17dd8p-4", "b": "0x1.735a03845dd4ep-1", "c": "0x1.9e0d8a1ffcbddp-3"},
          0.3: {"a": "0x1.2bd0a63107ac6p-3", "b": "0x1.2a65733329f40p-1", "c": "0x1.154cc6812841cp-2"}}


@pytest.mark.parametrize("alpha", sorted(PINNED))
def test_sampler_probabilities_are_bit_identical_to_the_pinned_floats(alpha):
    sampler = SourceBatchSampler({"a": 100, "b": 10000, "c": 777}, global_batch_size=10, alpha=alpha, seed=0)
    assert {k: float.hex(v) for k, v in sampler.probabilities().items()} == PINNED[alpha]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_prep_manifest_reports_the_probabilities_the_sampler_draws_with(alpha):
    sizes = {"a": 100, "b": 10000, "c": 777, "d": 123457}
    manifest = alpha_sizes({**sizes, "empty": 0}, alpha)
    sampler = SourceBatchSampler(sizes, global_batch_size=10, alpha=alpha, seed=0)
    assert manifest["alpha"] == alpha
    assert manifest["probabilities"] == {k: round(v, 6) for k, v in sampler.probabilities().items()}
    assert alpha_sizes({"a": 100, "b": 10000, "c": 777}) == {  # prep's default alpha, as printed at 72dff71
        "alpha": 0.5, "sizes": {"a": 100, "b": 10000, "c": 777},
        "probabilities": {"a": 0.07253, "b": 0.725296, "c": 0.202174}}


def test_the_feistel_round_is_splitmix64s_finaliser_with_its_pinned_values():
    z = np.array([0, 1, 12345, 2**64 - 1], dtype=np.uint64)
    # printed by the sampler's own round function at 72dff71
    assert splitmix64_finalise(z).tolist() == [0, 6238072747940578789, 17540659726606785873, 13029008266876403067]
