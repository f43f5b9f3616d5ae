"""Signatures on disk read back exactly: by range and by ids across the files of several staged sources."""

import numpy as np
import pytest

from data_prep.signature_files import P_FILE, Signatures, SignatureWriter


def test_range_and_rows_read_back_what_was_written_across_sources(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.integers(0, 2**32, size=(23, 8), dtype=np.uint32)
    p = rng.integers(0, 2**32, size=(23, 8), dtype=np.uint32)
    sigs = Signatures(num_perm=8)
    for unit, (a, b) in enumerate([(0, 10), (10, 10), (10, 23)]):  # the middle source staged no record
        writer = SignatureWriter(tmp_path / f"source-{unit}")
        for lo in range(a, b, 4):  # batch by batch, as step 1 appends them
            writer.add(q[lo:min(lo + 4, b)], p[lo:min(lo + 4, b)])
        sigs.add_part(writer.close(), tmp_path / f"source-{unit}")
    assert len(sigs) == 23
    for lo, hi in [(0, 23), (3, 17), (9, 11), (22, 23), (5, 5)]:
        got_q, got_p = sigs.range(lo, hi)
        assert np.array_equal(got_q, q[lo:hi]) and np.array_equal(got_p, p[lo:hi])
    ids = np.array([22, 0, 9, 10, 9, 15])
    got_q, got_p = sigs.rows(ids)
    assert np.array_equal(got_q, q[ids]) and np.array_equal(got_p, p[ids])
    (only_p,) = sigs.rows(ids, files=(P_FILE,))  # one side alone, as the near-dedup map reads it
    assert np.array_equal(only_p, p[ids])


def test_a_part_of_the_wrong_size_is_refused(tmp_path):
    writer = SignatureWriter(tmp_path)
    writer.add(np.zeros((3, 8), np.uint32), np.zeros((3, 8), np.uint32))
    writer.close()
    with pytest.raises(ValueError, match="expected 4 rows"):
        Signatures(num_perm=8).add_part(4, tmp_path)
