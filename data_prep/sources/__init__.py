"""Built-in real sources that install offline (../shared/docs/ASSETS.md describes each file and its parsing).

Each source is a function `iter_<name>(root=None) -> Iterator[dict]` yielding raw records
{query, positive, negatives, source, key} in file order, with a stable key (package, synset, headword, ...).
A missing Debian or PyPI package raises `MissingSourceError` naming the command that installs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from data_prep.sources.common import MissingSourceError
from data_prep.sources.debian import iter_debian
from data_prep.sources.gcide import iter_gcide
from data_prep.sources.pydocs import iter_pydocs
from data_prep.sources.stsb import iter_stsb, stsb_test_sentences
from data_prep.sources.wordnet import iter_wordnet_examples, iter_wordnet_lemmas

BUILTIN_SOURCES: dict[str, Callable[..., Iterator[dict]]] = {
    "debian": iter_debian,
    "wordnet_lemmas": iter_wordnet_lemmas,
    "wordnet_examples": iter_wordnet_examples,
    "gcide": iter_gcide,
    "pydocs": iter_pydocs,
    "stsb": iter_stsb,
}

# Exact dedup/near-dedup compare the positive alone where related keys share one long text (Debian packages of
# one project share their long description); elsewhere a duplicate needs both sides alike.
DEDUP_ON = {"debian": "positive"}

# Sources whose text carries markup that `clean` should strip as HTML (the built-ins clean their own markup).
STRIP_HTML: set[str] = set()

__all__ = ["BUILTIN_SOURCES", "DEDUP_ON", "MissingSourceError", "stsb_test_sentences"]
