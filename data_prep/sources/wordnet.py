"""WordNet 3.0 (Debian wordnet-base): lemmas -> definition and example sentence -> definition, key = synset.

data.{noun,verb,adj,adv} lines: `offset lex_filenum ss_type w_cnt(hex) (word lex_id)* ... | gloss`; the gloss is
`definition; "example"; ...`. License lines start with two spaces. NLTK's reader refuses this folder, so we parse it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from data_prep.sources.common import record, require

WORDNET_DIR = Path("/usr/share/wordnet")
POS_FILES = ("noun", "verb", "adj", "adv")
INSTALL = "apt-get install wordnet-base"
_QUOTED = re.compile(r'"([^"]+)"')
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")


def parse_line(line: str) -> tuple[str, list[str], str, list[str]] | None:
    """One data line -> (synset key, lemmas, definition, examples); None for license lines."""
    if line.startswith("  ") or " | " not in line:
        return None
    head, gloss = line.rstrip().split(" | ", 1)
    fields = head.split(" ")
    offset, ss_type, count = fields[0], fields[2], int(fields[3], 16)
    lemmas = [_ADJ_MARKER.sub("", fields[4 + 2 * i]).replace("_", " ") for i in range(count)]
    examples = [m.strip() for m in _QUOTED.findall(gloss)]
    # The definition is every `;`-separated part that is not a quoted example.
    parts = [p.strip() for p in _QUOTED.sub("", gloss).split(";")]
    definition = "; ".join(p for p in parts if p and p.strip(" -,.") != "")
    return offset + ss_type, lemmas, definition, examples


def wordnet_files(root: Path | None = None, source: str = "wordnet") -> list[Path]:
    """The data.<pos> files the sources read, in reading order."""
    root = Path(root) if root is not None else WORDNET_DIR
    return [require(root / f"data.{pos}", source, INSTALL) for pos in POS_FILES]


def iter_synsets(root: Path | None = None, source: str = "wordnet") -> Iterator[tuple[str, list[str], str, list[str]]]:
    for path in wordnet_files(root, source):
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                parsed = parse_line(line)
                if parsed is not None and parsed[2]:
                    yield parsed


def iter_wordnet_lemmas(root: Path | None = None) -> Iterator[dict]:
    for key, lemmas, definition, _ in iter_synsets(root, "wordnet_lemmas"):
        yield record("wordnet_lemmas", ", ".join(dict.fromkeys(lemmas)), definition, key)


def iter_wordnet_examples(root: Path | None = None) -> Iterator[dict]:
    for key, _, definition, examples in iter_synsets(root, "wordnet_examples"):
        for example in dict.fromkeys(examples):
            yield record("wordnet_examples", example, definition, key)
