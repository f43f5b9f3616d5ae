"""Fixtures of the data_prep tests: a finished two-source pairs dir for mining."""

from __future__ import annotations

import pytest

from tests.data_prep.helpers import sentences, write_pairs_dir

DUP_QUERY = "the cat plays the piano"
POSITIVE = "A red cat plays music on the piano today"


@pytest.fixture
def pairs_dir(tmp_path):
    docs, queries = sentences(90, 1), sentences(90, 2)
    alpha = list(zip(queries[:60], docs[:60]))
    # A query with two positives, and a folded (case/space) duplicate of the positive under another query.
    alpha += [(DUP_QUERY, POSITIVE), (DUP_QUERY, "the dog plays the guitar"), ("a cat", "  a RED cat plays music on "
              "the piano   today")]
    return write_pairs_dir(tmp_path / "pairs", {"alpha": alpha, "beta": list(zip(queries[60:], docs[60:]))})
