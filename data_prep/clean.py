"""Text cleaning shared by every source: Unicode NFKC, whitespace, optional HTML removal, token-length bounds.

A record is a dict {query, positive, negatives, source, key}. `clean_record` returns the cleaned record, or None
and the reason it was dropped, so that the manifest can count every drop by cause. `normalize_text` is the one
cleaning normalisation; the comparison form (`canonical`) lives in gte_model.core.text with the other text forms.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

from gte_model.core.config import bounded
from gte_model.core.text import canonical

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028\u2029\ufeff]")
_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]{1,200}>")

DROP_REASONS = (
    "empty",
    "query_too_short",
    "query_too_long",
    "positive_too_short",
    "positive_too_long",
    "identical_sides",
)


@dataclass
class LengthBounds:
    """Token bounds; tokens are whitespace-separated words (no tokenizer needed, identical on every machine)."""

    query_min_tokens: int = bounded(1, ge=0)  # shorter queries are dropped
    query_max_tokens: int = bounded(64, ge=1)  # longer queries are cut or dropped (truncate)
    positive_min_tokens: int = bounded(3, ge=0)  # shorter positives are dropped
    positive_max_tokens: int = bounded(256, ge=1)  # longer positives are cut or dropped (truncate)
    # True: a text over its max is cut to max tokens (long bodies keep their opening); False: the pair is dropped.
    truncate: bool = True


def normalize_text(text: str, strip_html: bool = False) -> str:
    """NFKC, control characters removed, optional HTML tags/entities removed, whitespace collapsed to one space."""
    text = unicodedata.normalize("NFKC", text)
    if strip_html:
        text = html.unescape(_TAG.sub(" ", text))
    text = _CONTROL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def _bound(text: str, lo: int, hi: int, truncate: bool) -> tuple[str | None, str]:
    words = text.split()
    if len(words) < lo:
        return None, "too_short"
    if len(words) > hi:
        if not truncate:
            return None, "too_long"
        text = " ".join(words[:hi])
    return text, ""


def clean_record(record: dict, bounds: LengthBounds, strip_html: bool = False) -> tuple[dict | None, str]:
    """-> (cleaned record, "") or (None, reason) with reason in DROP_REASONS."""
    query = normalize_text(record.get("query") or "", strip_html)
    positive = normalize_text(record.get("positive") or "", strip_html)
    if not query or not positive:
        return None, "empty"
    query, why = _bound(query, bounds.query_min_tokens, bounds.query_max_tokens, bounds.truncate)
    if query is None:
        return None, "query_" + why
    positive, why = _bound(positive, bounds.positive_min_tokens, bounds.positive_max_tokens, bounds.truncate)
    if positive is None:
        return None, "positive_" + why
    if canonical(query) == canonical(positive):
        return None, "identical_sides"
    negatives = []
    for neg in record.get("negatives") or []:
        neg = normalize_text(neg, strip_html)
        if neg:
            negatives.append(" ".join(neg.split()[: bounds.positive_max_tokens]))
    return {
        "query": query,
        "positive": positive,
        "negatives": negatives,
        "source": record["source"],
        "key": str(record["key"]),
    }, ""
