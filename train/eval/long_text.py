"""The long-text general check: paragraph-length pairs from the Jargon File (Debian's dict-jargon), graded 2/1/0.

No training source touches the Jargon File (the built-in sources are Debian package descriptions, WordNet, GCIDE and
the Python documentation), and its entries are prose, often several paragraphs long, where STS-B is one sentence a
side. Every entry with at least MIN_WORDS words of body gives three pairs, whose grade is a fact of the file:
  2  the entry's first half and its second half (cut at the sentence boundary nearest the middle)
  1  the entry's first half and the body of an entry it cross-references ({link} in the text: the editor's
     judgement that the two are related)
  0  the entry's first half and the body of an entry chosen at random that neither references
The score is the Spearman correlation of the model's cosine with the grade, like STS-B's. Entries are cut into dev
and test by a hash of the headword: data-driven choices (merge weights, the best checkpoint) read dev, reports test.

  gte eval all-MiniLM-L6-v2 --tasks long-text --bf16
"""

from __future__ import annotations

import gzip
import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from train.eval.errors import EvalDataMissing, EvalError
from train.eval.sts import score_pairs_dims

LONG_TEXT_TASK = "long-text"
JARGON_FILE = Path("/usr/share/dictd/jargon.dict.dz")
JARGON_INSTALL = "apt-get install dict-jargon (scripts/setup.sh does, as root)"
MIN_WORDS = 120  # an entry's body needs this many words to be cut into two halves of paragraph length
DEV_SHARE = 0.3  # share of entries (by headword hash) in the dev split
_LINK = re.compile(r"\{([^{}]+)\}")
_SENTENCE_END = re.compile(r"(?<=[.!?”\"])\s+(?=[A-Z“\"(\[])")


def read_entries(path: Path) -> dict[str, str]:
    """{headword: body} of a dictd text (gzip .dz or plain): a headword line starts at column 0 after a blank line;
    the body is the entry's lines indented by four or more spaces, joined, {links} kept. The 00-database header is
    skipped."""
    entries: dict[str, list[str]] = {}
    head, previous = None, ""
    for line in _lines(path):
        if line and not line[0].isspace() and not previous.strip():
            head = None if line.startswith("00-database") else line.strip()
            if head is not None:
                entries.setdefault(head, [])
        elif head is not None and line.startswith("    "):
            entries[head].append(line.strip())
        previous = line
    return {h: " ".join(lines) for h, lines in entries.items() if lines}


def _lines(path: Path):
    """The file's lines as text; an EvalError naming the file and line that is not UTF-8 or not readable."""
    lineno = 0
    try:
        with gzip.open(path) if path.suffix == ".dz" else open(path, "rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                yield raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as exc:
        raise EvalError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at column "
                        f"{exc.start + 1}); reinstall it: {JARGON_INSTALL}") from None
    except (OSError, EOFError) as exc:
        raise EvalError(f"{path}: cannot be read as a dictd text after line {lineno} ({exc}); reinstall it: "
                        f"{JARGON_INSTALL}") from None


def long_text_pairs(entries: dict[str, str], split: str, seed: int = 0) -> tuple[list[str], list[str], np.ndarray]:
    """(texts1, texts2, grades as float64 [N]) of one split ("dev" or "test") of the entries."""
    if split not in ("dev", "test"):
        raise EvalError(f"long-text split={split!r}: choose dev or test")
    lower = {h.lower(): h for h in entries}
    bodies = {h: _LINK.sub(r"\1", b) for h, b in entries.items()}
    rng = np.random.default_rng(seed)
    heads = sorted(entries)
    links = {h: sorted({lower[k.lower()] for k in _LINK.findall(entries[h]) if k.lower() in lower} - {h})
             for h in heads}  # the entries each one cross-references
    related = {h: set(links[h]) for h in heads}
    for head in heads:
        for target in links[head]:
            related[target].add(head)
    s1: list[str] = []
    s2: list[str] = []
    grades: list[float] = []
    for head in heads:
        if (_bucket(head) < DEV_SHARE) != (split == "dev") or len(bodies[head].split()) < MIN_WORDS:
            continue
        if not links[head]:
            continue
        first, second = _halves(bodies[head])
        linked = links[head][int(rng.integers(len(links[head])))]
        other = heads[int(rng.integers(len(heads)))]
        while other in related[head] or other == head:
            other = heads[int(rng.integers(len(heads)))]
        for text, grade in ((second, 2.0), (bodies[linked], 1.0), (bodies[other], 0.0)):
            s1.append(first)
            s2.append(text)
            grades.append(grade)
    return s1, s2, np.asarray(grades, dtype=np.float64)


def _bucket(head: str) -> float:
    """The headword's place in [0, 1): the same on every machine and Python (not hash())."""
    return int.from_bytes(hashlib.sha256(head.encode()).digest()[:8], "big") / 2.0**64


def _halves(body: str) -> tuple[str, str]:
    """The body cut at the sentence boundary nearest its middle word (at the middle word when it has none)."""
    words = body.split()
    cuts = [len(body[:m.start()].split()) for m in _SENTENCE_END.finditer(body)]
    cut = min(cuts, key=lambda c: abs(c - len(words) / 2)) if cuts else len(words) // 2
    cut = cut if 0 < cut < len(words) else len(words) // 2
    return " ".join(words[:cut]), " ".join(words[cut:])


def load_long_text(split: str = "test", path: str | Path | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """The long-text pairs of one split from the installed Jargon File (or path)."""
    path = Path(path or JARGON_FILE)
    if not path.is_file():
        raise EvalDataMissing(f"long-text: {path} is missing; {JARGON_INSTALL} (or leave long-text out of --tasks)")
    s1, s2, grades = long_text_pairs(read_entries(path), split)
    if len(set(grades.tolist())) < 3:
        raise EvalError(f"{path}: its {split} split has no pairs of every grade ({len(grades)} pairs); it is not "
                        f"the Jargon File with cross-references; {JARGON_INSTALL}")
    return s1, s2, grades


def evaluate_long_text_dims(model, dims: Sequence[int] | None, split: str = "test", batch_size: int = 64,
                            bf16: bool = False, path: str | Path | None = None) -> dict[int, dict]:
    """{dim: cosine Spearman/Pearson with the grades} of model on one split, at the full dim and each of dims."""
    s1, s2, grades = load_long_text(split, path)
    return score_pairs_dims(model, s1, s2, grades, dims, batch_size, bf16)
