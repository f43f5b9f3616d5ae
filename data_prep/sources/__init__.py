"""Built-in real sources that install offline (../shared/docs/ASSETS.md describes each file and its parsing).

Each source is a function `iter_<name>(root=None) -> Iterator[dict]` yielding raw records
{query, positive, negatives, source, key} in file order, with a stable key (package, synset, headword, ...).
A missing Debian or PyPI package raises `MissingSourceError` (a UserError) naming the command that installs it.
`source_fingerprint(name)` identifies the installed files a source reads (paths, sizes, mtimes: no read), so a
prep output records which version of each source it was built from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from data_prep.sources.common import MissingSourceError
from data_prep.sources.debian import debian_files, iter_debian
from data_prep.sources.gcide import gcide_files, iter_gcide
from data_prep.sources.pydocs import iter_pydocs, pydocs_files
from data_prep.sources.stsb import iter_stsb, stsb_file, stsb_test_sentences
from data_prep.sources.wordnet import iter_wordnet_examples, iter_wordnet_lemmas, wordnet_files
from gte_model.core.record import digest_json, file_fingerprint

BUILTIN_SOURCES: dict[str, Callable[..., Iterator[dict]]] = {
    "debian": iter_debian,
    "wordnet_lemmas": iter_wordnet_lemmas,
    "wordnet_examples": iter_wordnet_examples,
    "gcide": iter_gcide,
    "pydocs": iter_pydocs,
    "stsb": iter_stsb,
}

# The installed files each source reads; "stsb_test" is the decontamination set, not a training source.
SOURCE_FILES: dict[str, Callable[[], list[Path]]] = {
    "debian": debian_files,
    "wordnet_lemmas": lambda: wordnet_files(source="wordnet_lemmas"),
    "wordnet_examples": lambda: wordnet_files(source="wordnet_examples"),
    "gcide": gcide_files,
    "pydocs": pydocs_files,
    "stsb": lambda: [stsb_file("train")],
    "stsb_test": lambda: [stsb_file("test")],
}

# Exact dedup/near-dedup compare the positive alone where related keys share one long text (Debian packages of
# one project share their long description); elsewhere a duplicate needs both sides alike.
DEDUP_ON = {"debian": "positive"}

# Sources whose text carries markup that `clean` should strip as HTML (the built-ins clean their own markup).
STRIP_HTML: set[str] = set()


def source_fingerprint(name: str) -> str:
    """Digest of the paths, sizes and mtimes of the files a built-in source reads; MissingSourceError if absent."""
    return digest_json([[str(path), file_fingerprint(path)] for path in SOURCE_FILES[name]()])


__all__ = ["BUILTIN_SOURCES", "DEDUP_ON", "MissingSourceError", "SOURCE_FILES", "source_fingerprint",
           "stsb_test_sentences"]
