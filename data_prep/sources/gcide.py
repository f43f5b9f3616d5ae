"""GCIDE dictionary (Debian dict-gcide): headword -> cleaned definition, key = lower-cased headword.

gcide.index lines are `headword \t offset \t length` (dictd base64: A-Z a-z 0-9 + /, most significant digit first)
into gcide.dict.dz, which opens with gzip. Many index entries point at one body (inflections, sub-entries): we keep
one pair per body, under the headword the body itself defines. Webster markup is cleaned: `\\Pro*nun"ci*a*tion\\`,
`{links}`, `[1913 Webster]`, etymologies in brackets, `--Author.` citations and indented quotations.
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator
from pathlib import Path

from data_prep.sources.common import record, require

GCIDE_DIR = Path("/usr/share/dictd")
INSTALL = "apt-get install dict-gcide"
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_HEAD = re.compile(r"\\([^\\\n]{1,80})\\")
_PRON = re.compile(r"\((?:[^()\s]*[\[\"*][^()\s]*|\?[^()]*)\)")  # (k[o^]k"n[y^]), (?; 135)
_ACCENT = re.compile(r"\[(?:=?([a-zA-Z])(?:[\^=~`'\":.]|mac|breve|sl|dot|cir|til|um|grave|acute|cced|ring)?"
                     r"|(ae|oe|AE|OE))\]")
_INNER_BRACKET = re.compile(r"\[[^\[\]]*\]")
_CITATION = re.compile(r"--[A-Z][^\n]*$", re.M)
_LEAD = re.compile(r"^(?:\{[^}]*\}|\([^)]*\)|[^A-Z0-9{(])*")


def decode_b64(text: str) -> int:
    value = 0
    for char in text:
        value = value * 64 + _B64[char]
    return value


def read_index(path: Path) -> dict[tuple[int, int], list[str]]:
    """(offset, length) of each body -> its headwords in index order; `00-database*` entries skipped."""
    bodies: dict[tuple[int, int], list[str]] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or parts[0].startswith("00-database") or parts[0].startswith("00-"):
                continue
            bodies.setdefault((decode_b64(parts[1]), decode_b64(parts[2])), []).append(parts[0])
    return bodies


def body_headword(body: str, headwords: list[str]) -> str:
    """The headword the body defines (its first `\\Head*word\\`), else the first index entry for it."""
    match = _HEAD.search(body)
    if match:
        own = re.sub(r"[\"*`'\u2019 ]", "", match.group(1)).lower()
        for word in headwords:
            if re.sub(r"[\"*`'\u2019 ]", "", word).lower() == own:
                return word
    return headwords[0]


def clean_body(body: str) -> str:
    """Webster markup -> plain definition text (the senses; sub-entry paragraphs `{Phrase}, ...` are cut)."""
    first_line = body.split("\n", 1)[0]
    heads = list(_HEAD.finditer(first_line))  # e.g. "2d \2d\, 2nd \2nd\ adj.": several forms on the first line
    if heads:
        body = body[heads[-1].end():]
    body = _HEAD.sub(" ", body)
    # Keep paragraphs until the first phrase sub-entry; drop indented quotations (deeper than a sense's text).
    paragraphs = []
    for para in re.split(r"\n\s*\n", body):
        if para.lstrip().startswith("{") and paragraphs:
            break
        paragraphs.append("\n".join(ln for ln in para.split("\n") if len(ln) - len(ln.lstrip(" ")) < 11))
    text = "\n".join(paragraphs)
    text = _PRON.sub(" ", text)
    text = _ACCENT.sub(lambda m: m.group(1) or m.group(2), text)
    text = _CITATION.sub(" ", text)
    previous = None
    while previous != text:  # innermost brackets first: etymologies nest accent codes and references
        previous, text = text, _INNER_BRACKET.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = _LEAD.sub("", text)  # the part-of-speech header: abbreviations and {forms} before the first sense
    text = re.sub(r"\{([^{}]*)\}", r"\1", text)
    return re.sub(r"\s+([,.;:])", r"\1", text).strip()


def gcide_files(root: Path | None = None) -> list[Path]:
    """The index and the dictionary file the source reads."""
    root = Path(root) if root is not None else GCIDE_DIR
    return [require(root / name, "gcide", INSTALL) for name in ("gcide.index", "gcide.dict.dz")]


def iter_gcide(root: Path | None = None) -> Iterator[dict]:
    index_file, dict_file = gcide_files(root)
    index = read_index(index_file)
    with gzip.open(dict_file, "rb") as fh:
        # Bodies in offset order: one sequential pass over the stream, never the whole file in memory.
        position = 0
        for (offset, length), headwords in sorted(index.items()):
            if offset < position:  # overlapping entries do not occur in gcide; re-read from the start if they do
                fh.seek(0)
                position = 0
            fh.seek(offset)
            body = fh.read(length).decode("utf-8", errors="replace")
            position = offset + length
            yield from _pairs(body, headwords)


def _pairs(body: str, headwords: list[str]) -> Iterator[dict]:
    headword = body_headword(body, headwords)
    definition = clean_body(body)
    if definition:
        yield record("gcide", headword, definition, headword.lower())
