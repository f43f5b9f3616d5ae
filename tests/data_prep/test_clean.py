from __future__ import annotations

from data_prep.clean import LengthBounds, clean_record, normalize_text
from gte_model.core.text import canonical


def _rec(q, p):
    return {"query": q, "positive": p, "negatives": [], "source": "s", "key": "k"}


def test_normalize_applies_nfkc_and_collapses_whitespace():
    assert normalize_text("ﬁle\u00a0 name\t\n x\u200b") == "file name x"


def test_html_is_stripped_only_when_asked():
    assert normalize_text("<b>bold</b> &amp; more", strip_html=True) == "bold & more"
    assert normalize_text("<b>bold</b>") == "<b>bold</b>"


def test_identical_sides_are_dropped_after_normalisation():
    out, why = clean_record(_rec("The Cat!", "the  cat"), LengthBounds(positive_min_tokens=1))
    assert out is None and why == "identical_sides"


def test_length_bounds_drop_or_truncate():
    bounds = LengthBounds(query_min_tokens=2, positive_min_tokens=1, positive_max_tokens=3, truncate=True)
    assert clean_record(_rec("one", "a b"), bounds) == (None, "query_too_short")
    out, _ = clean_record(_rec("q word", "a b c d e"), bounds)
    assert out["positive"] == "a b c"
    bounds.truncate = False
    assert clean_record(_rec("q word", "a b c d e"), bounds) == (None, "positive_too_long")


def test_canonical_ignores_case_and_punctuation():
    assert canonical("Hello,  World!") == canonical("hello world")
