"""Document sources: a `files` entry of kind `documents` -> passages -> (query, passage) pairs made without queries.

  files: [{name: manual, path: docs/, kind: documents}]                 # a folder of .txt / .md / .html files
  files: [{name: wiki, path: pages.jsonl, kind: documents, documents: {text: body, title: heading, id: page_id}}]

A document is read from a row of a jsonl / csv / tsv / parquet / saved-`datasets` file (text column, optional title
and id columns) or from one file of a folder (.txt, .md, .markdown, .html, .htm; its path inside the folder is its
id). Markdown and HTML headings open sections; each section is split into passages of `passage_tokens`
whitespace tokens, consecutive passages sharing `overlap_tokens`. Every pair made from a document keeps the
document id as its key, so dedup, decontamination, the key split (a document is wholly train or wholly held out)
and mining work unchanged. The query makers (data_prep.query_makers) turn each passage into pairs.
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from data_prep.llm_client import LLMConfig, generate_queries
from data_prep.query_makers import MAKERS, Passage, make_pairs
from data_prep.readers import ReaderError, ReadStats, RowProblem, detect_format, iter_rows
from gte_model.core.config import bounded

FOLDER_SUFFIXES = (".txt", ".md", ".markdown", ".html", ".htm")
_MD_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.+?)\s*#*\s*$")
_SKIP_HINT = "fix that row, or set on_error=skip to skip and count malformed rows"


@dataclass
class DocumentsConfig:
    """How a `files` entry of kind `documents` is read, cut and turned into pairs."""

    text: str = "text"  # the column holding the document text (table formats)
    title: str | None = "title"  # a column holding the title (optional in each row); null: no titles
    id: str | None = "id"  # a column holding the document id (the split key); null or missing: a hash of the text
    passage_tokens: int = bounded(128, ge=8)  # whitespace tokens per passage
    overlap_tokens: int = bounded(32, ge=0)  # tokens shared by consecutive passages of a section
    # query makers applied to every passage (data_prep.query_makers), each at most one pair per passage: title
    # (title/heading -> passage), cloze (a sentence -> the rest of its passage), crop (two crops of it); and llm:
    # llm.queries_per_passage queries written by an LLM (the llm section)
    makers: list[str] = field(default_factory=lambda: list(MAKERS))
    llm: LLMConfig = field(default_factory=LLMConfig)  # makers with llm only: the endpoint (data_prep.llm_client)

    def problems(self, where: str) -> list[str]:
        """Rules between fields, in override spelling."""
        errors = []
        if self.overlap_tokens >= self.passage_tokens:
            errors.append(f"{where}.overlap_tokens={self.overlap_tokens}: must be below passage_tokens="
                          f"{self.passage_tokens} (passages would never advance)")
        unknown = [m for m in self.makers if m not in (*MAKERS, "llm")]
        if unknown or not self.makers:
            errors.append(f"{where}.makers={self.makers}: choose one or more of {', '.join(MAKERS)}, llm")
        if "llm" in self.makers and not self.llm.model:
            errors.append(f"{where}.llm.model is not set: name the model the endpoint {self.llm.base_url} serves")
        return errors


@dataclass
class Document:
    id: str
    title: str
    sections: list[tuple[str, str]]  # (heading or "", text)


def split_passages(doc: Document, passage_tokens: int, overlap_tokens: int) -> list[Passage]:
    """Each section cut into windows of passage_tokens tokens, advancing by passage_tokens - overlap_tokens; a
    window that would only repeat the previous one's tail is not made."""
    stride = passage_tokens - overlap_tokens
    out = []
    for heading, text in doc.sections:
        words = text.split()
        start = 0
        while words and (start == 0 or start + overlap_tokens < len(words)):
            out.append(Passage(doc.id, len(out), heading or doc.title, " ".join(words[start:start + passage_tokens])))
            start += stride
    return out


def document_batches(path: str | Path, cfg: DocumentsConfig, source: str, fmt: str, seed: int, on_error: str,
                     batch_size: int, stats: ReadStats) -> Iterator[list[dict]]:
    """Batches of pair records {query, positive, negatives, source, key} made from every document of `path`."""
    passages: list[Passage] = []
    for doc in read_documents(path, cfg, fmt, on_error, stats):
        passages += split_passages(doc, cfg.passage_tokens, cfg.overlap_tokens)
        if len(passages) >= batch_size:
            yield _pairs(passages, cfg, source, seed)
            passages = []
    if passages:
        yield _pairs(passages, cfg, source, seed)


def _pairs(passages: list[Passage], cfg: DocumentsConfig, source: str, seed: int) -> list[dict]:
    generated: list[list[str]] = [[] for _ in passages]
    if "llm" in cfg.makers:  # one concurrent, cached round of requests for the whole batch
        generated, llm = generate_queries([p.text for p in passages], cfg.llm)
        print(f"gte prep: {source}: llm {llm.passages} passages, {llm.cached} from the cache, {llm.requests} "
              f"requests, {llm.failed} left without queries{': ' + llm.problems[0] if llm.problems else ''}",
              file=sys.stderr)
    makers = [m for m in cfg.makers if m != "llm"]
    return [{"query": query, "positive": positive, "negatives": [], "source": source, "key": p.doc_id}
            for p, queries in zip(passages, generated)
            for query, positive in make_pairs(p, makers, seed) + [(q, p.text) for q in queries]]


def read_documents(path: str | Path, cfg: DocumentsConfig, fmt: str = "auto", on_error: str = "raise",
                   stats: ReadStats | None = None) -> Iterator[Document]:
    """Documents of a table file or a folder of text files; a bad row raises ReaderError `file:line: problem`
    (or is skipped and counted under on_error=skip)."""
    path, stats = Path(path), stats if stats is not None else ReadStats()
    if path.is_dir() and fmt == "auto" and not _is_saved_dataset(path):
        yield from _folder_documents(path, stats)
        return
    fmt = detect_format(path) if fmt == "auto" else fmt
    for line, row in iter_rows(path, fmt):
        try:
            if isinstance(row, Exception):
                raise row
            doc = _row_document(row, cfg)
        except RowProblem as exc:
            if on_error == "raise":
                raise ReaderError(f"{path}:{line}: {exc}; {_SKIP_HINT}") from None
            stats.skipped += 1
            if len(stats.problems) < 10:
                stats.problems.append(f"{path}:{line}: {exc}")
            continue
        stats.rows += 1
        yield doc


def _row_document(row: dict, cfg: DocumentsConfig) -> Document:
    text = row.get(cfg.text)
    if not isinstance(text, str):
        got = "missing" if text is None else f"{type(text).__name__}, expected a string"
        raise RowProblem(f"field {cfg.text!r} (the documents text column) is {got}")
    title = row.get(cfg.title) if cfg.title else None
    if title is not None and not isinstance(title, str):
        raise RowProblem(f"field {cfg.title!r} (the documents title column) is {type(title).__name__}, "
                         "expected a string")
    doc_id = row.get(cfg.id) if cfg.id else None
    doc_id = str(doc_id) if doc_id is not None else "t:" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
    return Document(doc_id, title or "", [("", text)])


def _is_saved_dataset(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _folder_documents(folder: Path, stats: ReadStats) -> Iterator[Document]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES)
    if not files:
        raise ReaderError(f"{folder}: holds no {' / '.join(FOLDER_SUFFIXES)} file; name a folder of documents, or "
                          "a jsonl / csv / parquet file with a text column")
    for file in files:
        try:
            text = file.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ReaderError(f"{file}: not valid UTF-8 at byte {exc.start}; save it as UTF-8") from None
        doc_id = file.relative_to(folder).as_posix()
        suffix = file.suffix.lower()
        if suffix in (".html", ".htm"):
            title, sections = _html_sections(text)
        elif suffix in (".md", ".markdown"):
            title, sections = _markdown_sections(text)
        else:
            title, sections = "", [("", text)]
        stats.rows += 1
        yield Document(doc_id, title, sections)


def _markdown_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(first heading, [(heading, body)]): each `#` heading opens a section; text before the first has none."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in text.splitlines():
        match = _MD_HEADING.match(line)
        if match:
            sections.append((match.group(2), []))
        else:
            sections[-1][1].append(line)
    title = next((h for h, _ in sections if h), "")
    return title, [(h, "\n".join(body)) for h, body in sections if "".join(body).strip()]


class _HtmlText(HTMLParser):
    """Visible text of a page as sections opened by <h1>-<h6>; <title> kept; script and style dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title, self.sections, self._where = "", [["", []]], None

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in ("script", "style", "title") or re.fullmatch(r"h[1-6]", tag):
            self._where = tag
            if tag[0] == "h":
                self.sections.append(["", []])

    def handle_endtag(self, tag: str) -> None:
        if tag == self._where:
            self._where = None

    def handle_data(self, data: str) -> None:
        if self._where == "title":
            self.title += data
        elif self._where and self._where.startswith("h"):
            self.sections[-1][0] += data
        elif self._where is None:
            self.sections[-1][1].append(data)


def _html_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    parser = _HtmlText()
    parser.feed(text)
    parser.close()
    sections = [(" ".join(h.split()), " ".join(body)) for h, body in parser.sections]
    title = " ".join(parser.title.split()) or next((h for h, _ in sections if h), "")
    return title, [(h, body) for h, body in sections if body.strip()]
