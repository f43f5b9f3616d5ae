from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.split import SplitConfig, assign_heldout, key_hash


def _split(keys, queries, fraction, cap, seed):
    kh = np.array([key_hash(k, seed) for k in keys], dtype=np.uint64)
    qh = np.array([key_hash(q, 0) for q in queries], dtype=np.uint64)
    return assign_heldout(kh, qh, np.ones(len(keys), bool), SplitConfig(fraction, cap))


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.sampled_from([f"k{i}" for i in range(40)]), min_size=1, max_size=120),
    fraction=st.floats(0.0, 0.99),
    cap=st.one_of(st.none(), st.integers(0, 30)),
    seed=st.integers(0, 2**31),
)
def test_no_key_is_on_both_sides_of_the_split(keys, fraction, cap, seed):
    queries = [f"{k}-q{i % 3}" for i, k in enumerate(keys)]
    heldout = _split(keys, queries, fraction, cap, seed)
    train_keys = {k for k, h in zip(keys, heldout) if not h}
    heldout_keys = {k for k, h in zip(keys, heldout) if h}
    assert not train_keys & heldout_keys
    if cap is not None:
        assert len({q for q, h in zip(queries, heldout) if h}) <= cap


def test_split_is_deterministic_and_seed_dependent():
    keys = [f"key{i}" for i in range(2000)]
    a = _split(keys, keys, 0.1, None, seed=0)
    assert np.array_equal(a, _split(keys, keys, 0.1, None, seed=0))
    assert not np.array_equal(a, _split(keys, keys, 0.1, None, seed=1))
    assert 120 < a.sum() < 280  # about 10% of keys


def test_cap_keeps_the_lowest_hash_keys_and_sends_the_rest_to_train():
    keys = [f"key{i}" for i in range(2000)]
    capped = _split(keys, keys, 0.5, 25, seed=3)
    assert capped.sum() == 25
    assert (capped <= _split(keys, keys, 0.5, None, seed=3)).all()  # a subset of the uncapped held-out keys
