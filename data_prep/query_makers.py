"""Query makers that need no model: each turns one passage into at most one (query, positive) pair.

  title   the passage's heading (or its document's title) -> the passage       (title -> body, GTE's weak pairs)
  cloze   one sentence of the passage -> the rest of it                         (inverse cloze task, ICT)
  crop    a short crop of the passage -> a longer, independently drawn crop     (independent cropping, Contriever)

The random choices come from a generator seeded by (seed, maker, document id, passage index), so a pair depends on
its own passage alone, never on the order documents are read in. A maker that cannot use a passage (no title, one
sentence, too few tokens) makes nothing for it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from gte_model.core.text import hash64

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
MIN_QUERY_TOKENS = 4  # a cloze sentence or a query crop shorter than this says too little to retrieve by
CROP_MIN_TOKENS = 8  # a passage shorter than this gives no two distinct crops worth training on
QUERY_CROP = (0.1, 0.5)  # a query crop's share of the passage tokens (Contriever's range)
POSITIVE_CROP = (0.5, 1.0)  # the positive crop is the longer view: queries are short, documents long


@dataclass
class Passage:
    doc_id: str
    index: int  # position among its document's passages
    title: str  # its section heading, else its document's title, else ""
    text: str


def title_pair(passage: Passage, rng: random.Random) -> tuple[str, str] | None:
    return (passage.title, passage.text) if passage.title.strip() else None


def cloze_pair(passage: Passage, rng: random.Random) -> tuple[str, str] | None:
    sentences = [s for s in _SENTENCE_END.split(passage.text) if s.strip()]
    usable = [i for i, s in enumerate(sentences) if len(s.split()) >= MIN_QUERY_TOKENS]
    if len(sentences) < 2 or not usable:
        return None
    pick = rng.choice(usable)
    return sentences[pick], " ".join(s for i, s in enumerate(sentences) if i != pick)


def crop_pair(passage: Passage, rng: random.Random) -> tuple[str, str] | None:
    words = passage.text.split()
    if len(words) < CROP_MIN_TOKENS:
        return None
    return " ".join(_crop(words, QUERY_CROP, rng)), " ".join(_crop(words, POSITIVE_CROP, rng))


def _crop(words: list[str], share: tuple[float, float], rng: random.Random) -> list[str]:
    n = len(words)
    length = min(n, max(MIN_QUERY_TOKENS, round(n * rng.uniform(*share))))
    start = rng.randrange(n - length + 1)
    return words[start:start + length]


MAKERS: dict[str, Callable[[Passage, random.Random], tuple[str, str] | None]] = {
    "title": title_pair,
    "cloze": cloze_pair,
    "crop": crop_pair,
}


def make_pairs(passage: Passage, makers: list[str], seed: int) -> list[tuple[str, str]]:
    """The pairs each named maker makes from `passage`, in `makers` order."""
    out = []
    for name in makers:
        rng = random.Random(hash64(f"{seed}\x1f{name}\x1f{passage.doc_id}\x1f{passage.index}"))
        pair = MAKERS[name](passage, rng)
        if pair is not None:
            out.append(pair)
    return out
