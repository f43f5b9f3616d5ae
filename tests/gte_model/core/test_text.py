"""gte_model.core.text owns every text hash: values pinned as the code printed them before they moved here, since
embedding-cache keys, dedup results and mined negatives depend on them."""

from __future__ import annotations

import hashlib

import numpy as np

from gte_model.core.text import content_hash64, fold_hash64, mix64, splitmix64_finalise, text_digest


def test_mix64_values_are_pinned():
    # printed by gte_model.embed_cache.mix64 at 72dff71
    x = np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64)
    assert mix64(x).tolist() == [16294208416658607535, 10451216379200822465, 5196802822362493915,
                                 16490336266968443936]
    assert int(mix64(7)) == 7191089600892374487


def test_mix64_is_the_finaliser_of_the_golden_ratio_step():
    x = np.arange(100, dtype=np.uint64)
    with np.errstate(over="ignore"):
        assert np.array_equal(mix64(x), splitmix64_finalise(x + np.uint64(0x9E3779B97F4A7C15)))


def test_content_hashes_are_the_cache_digest_and_fold_equates_case_and_spacing():
    assert text_digest("café") == hashlib.blake2b("café".encode(), digest_size=16).digest()
    assert int(content_hash64(["café"])[0]) == int.from_bytes(text_digest("café")[:8], "little")
    assert fold_hash64(["A  b\tC"])[0] == fold_hash64(["a b c"])[0] != content_hash64(["A  b\tC"])[0]
