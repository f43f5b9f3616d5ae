"""Python 3.11 documentation (Debian python3.11-doc): reST section title -> section body, key = doc file + title.

Sources live under share/doc/python3.11/html/_sources/{library,reference,tutorial,howto,using}/*.rst.txt. A title is
a line underlined (optionally overlined) with one of = - ~ ^ * # " + `; its body runs to the next title. Roles,
inline markup, non-prose directives and literal (code) blocks are removed; generic titles are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from data_prep.sources.common import record, require

PYDOCS_DIR = Path("/usr/share/doc/python3.11/html/_sources")
SUBDIRS = ("library", "reference", "tutorial", "howto", "using")
INSTALL = "apt-get install python3.11-doc"
GENERIC_TITLES = {
    "module contents", "introduction", "overview", "examples", "example", "notes", "note", "footnotes",
    "see also", "functions", "classes", "constants", "exceptions", "usage", "summary", "reference",
    "other functions", "basic usage", "contents", "api", "methods", "attributes", "availability", "details",
    "background", "definitions", "module functions", "module-level functions", "utilities", "miscellaneous",
    "recipes", "limitations", "command-line usage", "command line usage", "command-line interface",
    "command line interface", "command-line options", "examples of usage", "usage example", "further reading",
    "acknowledgements", "acknowledgments", "history", "public functions", "helpers", "index",
}
_UNDERLINE = re.compile(r"^([=\-~^*#\"+`])\1{2,}\s*$")
_ROLE = re.compile(r":[\w:.+-]+:`~?!?([^`<]*?)(?:\s*<[^`>]*>)?`")
_LINK = re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?")
_SKIP_DIRECTIVES = re.compile(
    r"^\s*\.\. (?:index|_[^:]*|highlight|module|moduleauthor|sectionauthor|toctree|code-block|sourcecode|"
    r"doctest|testcode|testoutput|testsetup|productionlist|literalinclude|include|raw|only|image|figure|"
    r"currentmodule|audit-event|impl-detail|program|option|cmdoption|envvar|opcode|pdbcommand|2to3fixer|"
    r"availability|rubric|tabularcolumns|csv-table|list-table|table|versionadded|versionchanged|deprecated|"
    r"\|[^|]*\|)(?:::|:)?"
)


def inline_text(text: str) -> str:
    """Roles, links and inline markup -> their text."""
    text = _ROLE.sub(lambda m: m.group(1).strip(), text)
    text = _LINK.sub(r"\1", text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*|\*([^*\s][^*]*)\*", lambda m: m.group(1) or m.group(2), text)
    text = re.sub(r"`([^`]*)`_{0,2}", r"\1", text)
    text = re.sub(r"\[#[\w-]*\]_|\s\|[\w-]+\|", "", text)
    return text.replace("\\", "")


def split_sections(lines: list[str]) -> Iterator[tuple[str, list[str]]]:
    """reST lines -> (title, body lines) per section, in order."""
    title, body, i = None, [], 0
    while i < len(lines):
        line = lines[i]
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        is_title = line.strip() and not line.startswith(" ") and _UNDERLINE.match(nxt) \
            and len(nxt.rstrip()) >= len(line.rstrip()) - 1 and not _UNDERLINE.match(line)
        if is_title:
            if title is not None:
                yield title, body
            if body and _UNDERLINE.match(body[-1] if body else ""):
                body.pop()  # an overline belongs to the new title
            title, body, i = line.strip(), [], i + 2
            continue
        body.append(line)
        i += 1
    if title is not None:
        yield title, body


def body_text(body: list[str]) -> str:
    """Prose of a section: skips non-prose directives with their indented blocks, literal blocks, doctests."""
    out, skip_indent, in_doctest = [], None, False
    for line in body:
        indent = len(line) - len(line.lstrip())
        in_doctest = in_doctest and bool(line.strip())  # a doctest block (>>> lines and output) ends at a blank
        if in_doctest or line.lstrip().startswith(">>>"):
            in_doctest = True
            continue
        if skip_indent is not None:
            if not line.strip() or indent > skip_indent:
                continue
            skip_indent = None
        stripped = line.strip()
        if _SKIP_DIRECTIVES.match(line) or _UNDERLINE.match(line):
            skip_indent = indent
            continue
        if stripped.startswith(".. "):
            # Another directive (function, class, note, ...): keep its argument, e.g. a signature.
            stripped = stripped.split("::", 1)[1].strip() if "::" in stripped else ""
        elif re.match(r"^:[\w-]+:(\s|$)", stripped):
            continue  # directive options such as :synopsis:
        if stripped.endswith("::"):
            stripped = stripped[:-2].rstrip() + (":" if stripped[:-2].strip() else "")
            skip_indent = indent  # the indented literal block that follows is code
        out.append(re.sub(r"^(?:#\.|[*-]|\d+\.)\s+", "", stripped))  # list bullets
    return inline_text(" ".join(s for s in out if s))


def pydocs_files(root: Path | None = None) -> list[Path]:
    """The .rst.txt files the source reads, in reading order."""
    root = require(Path(root) if root is not None else PYDOCS_DIR, "pydocs", INSTALL)
    return [path for sub in SUBDIRS for path in sorted((root / sub).rglob("*.rst.txt"))]


def iter_pydocs(root: Path | None = None) -> Iterator[dict]:
    root = Path(root) if root is not None else PYDOCS_DIR
    for path in pydocs_files(root):
        doc = path.relative_to(root).as_posix().removesuffix(".txt")
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for raw_title, body in split_sections(lines):
            title = inline_text(raw_title).strip()
            if not title or title.lower().rstrip(":") in GENERIC_TITLES:
                continue
            text = body_text(body)
            if text:
                yield record("pydocs", title, text, f"{doc}#{title}")
