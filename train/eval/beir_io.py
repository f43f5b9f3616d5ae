"""A BEIR-format folder read for evaluation with every input checked: a problem is an EvalError naming the file, the
line and the field, raised before any text is encoded (`gte eval` reads every set before it loads the model).

BEIR folder: corpus.jsonl {"_id","title","text"}, queries.jsonl {"_id","text"}, qrels/<split>.tsv with the header
"query-id\tcorpus-id\tscore". The rules:
- files are UTF-8; every non-blank jsonl line is a JSON object whose "_id" is a string (or an integer) and whose
  "text" is a string ("title" may be missing or null); no _id appears twice in a file; no file is empty;
- a score is an integer relevance grade (1 and 1.0 are both 1): BEIR and pytrec_eval read grades as integers, so
  0.5 is refused, never truncated to 0; a query-document pair judged twice with two grades is refused;
- every judged query must be in queries.jsonl (it has no text otherwise). Judged documents absent from corpus.jsonl
  are allowed and counted (BEIR's own ArguAna has one): they count as relevant and never retrieved, as in BEIR and
  mteb, so scores stay comparable with theirs. If no judged document is in the corpus, the ids do not match: refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from train.eval.errors import EvalDataMissing, EvalError
from train.eval.lines import json_type, lone_surrogate, read_lines

_UTF8_FIX = "save the file as UTF-8"
_EXAMPLES = {"document": '{"_id": "d1", "title": "", "text": "..."}', "query": '{"_id": "q1", "text": "..."}'}
_GRADE_FIX = "write an integer relevance grade (0, 1, 2, ...)"
_MAX_GRADE = 2**31 - 1  # pytrec_eval keeps grades in C ints: a larger one scores as garbage or crashes it


@dataclass
class BeirSet:
    """A checked BEIR folder. corpus: doc id -> text (title prepended); queries: judged query id -> text;
    qrels: {query id: {doc id: grade}}; absent_docs: judged doc ids that are not in the corpus, sorted."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    absent_docs: list[str]


def beir_files(folder: str | Path, split: str = "test") -> dict[str, Path]:
    """{"corpus", "queries", "qrels"} -> path in a BEIR-format folder; EvalDataMissing naming what is not there."""
    folder = Path(folder)
    paths = {"corpus": folder / "corpus.jsonl", "queries": folder / "queries.jsonl",
             "qrels": folder / "qrels" / f"{split}.tsv"}
    missing = [p.relative_to(folder).as_posix() for p in paths.values() if not p.is_file()]
    if missing:
        raise EvalDataMissing(f"{folder}: not a BEIR-format folder, missing {', '.join(missing)}; pass a folder "
                              "holding corpus.jsonl, queries.jsonl and qrels/<split>.tsv (`gte prep` writes one per "
                              "source under <pairs dir>/beir/<source>)")
    return paths


def read_beir(folder: str | Path, split: str = "test") -> BeirSet:
    """The folder's corpus, judged queries and judgements, every rule of the module docstring checked."""
    paths = beir_files(folder, split)
    corpus = _read_jsonl(paths["corpus"], "document")
    qrels = _read_qrels(paths["qrels"])
    all_queries = _read_jsonl(paths["queries"], "query")
    unknown = sorted(set(qrels) - set(all_queries))
    if unknown:
        raise EvalError(f"{paths['qrels']}: {len(unknown)} judged query ids are not in queries.jsonl, "
                        f"e.g. {unknown[:3]}; write every judged query to queries.jsonl")
    judged = {doc_id for docs in qrels.values() for doc_id in docs}
    absent = sorted(judged - corpus.keys())
    if len(absent) == len(judged):
        raise EvalError(f"{paths['qrels']}: none of its {len(judged)} judged documents is in corpus.jsonl, "
                        f"e.g. {absent[:3]}; the corpus-id column must hold corpus.jsonl's _id values")
    return BeirSet(corpus, {qid: all_queries[qid] for qid in qrels}, qrels, absent)


def load_beir(folder: str | Path, split: str = "test") -> tuple[dict[str, str], dict[str, str], dict[str, dict]]:
    """(corpus id -> text, query id -> text for queries with judgements, qrels {qid: {doc id: grade}})."""
    data = read_beir(folder, split)
    return data.corpus, data.queries, data.qrels


def _read_jsonl(path: Path, what: str) -> dict[str, str]:
    """_id -> text of corpus.jsonl (what="document": the title is prepended) or queries.jsonl (what="query")."""
    texts: dict[str, str] = {}
    for lineno, line in read_lines(path, _UTF8_FIX):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        row = _json_object(line, where, what)
        row_id = _row_id(row, where)
        if row_id in texts:
            first = _first_line(path, row_id, lambda text: _row_id(json.loads(text), ""))
            raise EvalError(f"{where}: _id {row_id!r} is already on line {first}; give every {what} its own _id")
        text = _string(row, "text", where)
        # BEIR's convention (and sentence-transformers'): the title is prepended to the text.
        title = _string(row, "title", where, required=False) if what == "document" else ""
        texts[row_id] = f"{title} {text}".strip() if title else text
    if not texts:
        raise EvalError(f"{path}: holds no {what} rows; write one JSON object per line, e.g. {_EXAMPLES[what]}")
    return texts


def _json_object(line: str, where: str, what: str) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise EvalError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); fix or rewrite the line"
                        ) from None
    if not isinstance(row, dict):
        raise EvalError(f"{where}: a JSON {json_type(row)}, not an object; write one object per line, "
                        f"e.g. {_EXAMPLES[what]}")
    return row


def _row_id(row: dict, where: str) -> str:
    if "_id" not in row:
        raise EvalError(f"{where}: the row has no '_id' field; give every row an '_id'")
    value = row["_id"]
    if isinstance(value, int) and not isinstance(value, bool):  # 7 and "7" name the same row, as in the qrels
        return str(value)
    return _string(row, "_id", where)


def _string(row: dict, key: str, where: str, required: bool = True) -> str:
    """row[key] as a string that UTF-8 can encode; "" for a missing or null field that is not required."""
    value = row.get(key)
    if value is None and not required:
        return ""
    if key not in row:
        raise EvalError(f"{where}: the row has no {key!r} field; give every row a {key!r} string")
    if not isinstance(value, str):
        shown = "" if value is None else f" ({json.dumps(value)[:40]})"
        raise EvalError(f"{where}: field {key!r} is a JSON {json_type(value)}{shown}, not a string; "
                        "write it as a JSON string")
    position = lone_surrogate(value)
    if position is not None:
        raise EvalError(f"{where}: field {key!r} holds a lone surrogate at character {position} (an escape such as "
                        "\\ud800 that is no character); fix or remove that escape")
    return value


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in read_lines(path, _UTF8_FIX):
        if not line.strip() or lineno == 1 and line.startswith("query-id\t"):
            continue
        where = f"{path}:{lineno}"
        fields = line.split("\t")
        if len(fields) != 3 or not fields[0] or not fields[1]:
            raise EvalError(f"{where}: expected query-id<TAB>corpus-id<TAB>score, got {line!r}; fix the line")
        qid, doc_id, grade = fields[0], fields[1], _grade(fields[2], where)
        judged = qrels.setdefault(qid, {})
        if judged.get(doc_id, grade) != grade:
            first = _first_line(path, (qid, doc_id), lambda text: tuple(text.split("\t")[:2]))
            raise EvalError(f"{where}: query {qid!r} and document {doc_id!r} are judged {grade} here and "
                            f"{judged[doc_id]} on line {first}; keep one grade per pair")
        judged[doc_id] = grade
    if not qrels:
        raise EvalError(f"{path}: holds no judgements; write query-id<TAB>corpus-id<TAB>score lines under the header")
    return qrels


def _grade(text: str, where: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise EvalError(f"{where}: score {text!r} is not a number; {_GRADE_FIX}") from None
    if not math.isfinite(value):
        raise EvalError(f"{where}: score {text!r} is not a finite number; {_GRADE_FIX}")
    if not value.is_integer():
        raise EvalError(f"{where}: score {text!r} is not an integer, and BEIR and pytrec_eval read relevance "
                        f"grades as integers (it would count as {int(value)}); map the grades to 0, 1, 2, ...")
    if abs(value) > _MAX_GRADE:
        raise EvalError(f"{where}: score {text!r} is beyond the 32-bit integers pytrec_eval holds grades in (it would "
                        f"score wrongly); {_GRADE_FIX}")
    return int(value)


def _first_line(path: Path, key, key_of: Callable[[str], object]) -> int:
    """The first line whose key_of is key. Only on the error path, so that no line number is held per row; every line
    before the repeat was read and checked, so key_of reads each of them."""
    return next(n for n, line in read_lines(path, _UTF8_FIX) if line.strip() and key_of(line) == key)
