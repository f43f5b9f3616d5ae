"""gte eval's inputs (issue 21, findings 11, 16, 18): every BEIR line checked before the model loads, each problem one
line `gte eval: <file>:<line>: <problem>; <fix>` with exit 2; judged documents absent from the corpus counted, not
silent; the output places checked for writability before encoding, and results kept when a write fails anyway."""

from __future__ import annotations

import errno
import json
import math
import os
import re

import pytest

from gte_model import export_model
from tests.conftest import make_tiny_model
from train.app.cli import main as gte
from train.eval.beir_io import read_beir
from train.eval.errors import EvalError
from train.eval.sts import load_stsb

# Each query text is also a document, so the tiny random model ranks that document first (cosine 1).
CORPUS = ['{"_id": "d1", "title": "", "text": "the cat plays piano"}',
          '{"_id": "d2", "title": "", "text": "a dog plays guitar"}',
          '{"_id": "d3", "title": "", "text": "stock price fell today"}']
QUERIES = ['{"_id": "q1", "text": "the cat plays piano"}', '{"_id": "q2", "text": "stock price fell today"}']
QRELS = ["query-id\tcorpus-id\tscore", "q1\td1\t1", "q2\td3\t2", "q2\td2\t1"]
FILES = {"corpus.jsonl": CORPUS, "queries.jsonl": QUERIES, "qrels/test.tsv": QRELS}


def beir_folder(root, changes: dict | None = None):
    """A BEIR folder of the lines above; changes: {file: {line number: new line (str or bytes)} or [all lines]}."""
    folder = root / "set"
    (folder / "qrels").mkdir(parents=True)
    for name, lines in FILES.items():
        change = (changes or {}).get(name, {})
        lines = list(change) if isinstance(change, list) else [change.get(i, line) for i, line in enumerate(lines, 1)]
        if isinstance(change, dict):
            lines += [change[i] for i in sorted(change) if i > len(FILES[name])]  # appended lines
        data = b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines)
        (folder / name).write_bytes(data)
    return folder


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    return export_model(make_tiny_model(root), root / "export")


# case -> (changes to the good folder, where the message points and how it starts, after "<folder>/")
BAD_INPUTS = {
    "grade 0.5": ({"qrels/test.tsv": {4: "q2\td2\t0.5"}}, "qrels/test.tsv:4: score '0.5' is not an integer"),
    "grade inf": ({"qrels/test.tsv": {2: "q1\td1\tinf"}}, "qrels/test.tsv:2: score 'inf' is not a finite number"),
    "grade nan": ({"qrels/test.tsv": {2: "q1\td1\tnan"}}, "qrels/test.tsv:2: score 'nan' is not a finite number"),
    "grade 2**40": ({"qrels/test.tsv": {2: "q1\td1\t1099511627776"}},
                    "qrels/test.tsv:2: score '1099511627776' is beyond the 32-bit integers"),
    "grade word": ({"qrels/test.tsv": {2: "q1\td1\thigh"}}, "qrels/test.tsv:2: score 'high' is not a number"),
    "two grades": ({"qrels/test.tsv": {5: "q2\td3\t1"}},
                   "qrels/test.tsv:5: query 'q2' and document 'd3' are judged 1 here and 2 on line 3"),
    "two columns": ({"qrels/test.tsv": {2: "q1\td1"}}, "qrels/test.tsv:2: expected query-id<TAB>corpus-id<TAB>score"),
    "qrels not UTF-8": ({"qrels/test.tsv": {3: b"q2\td\xe93\t2"}},
                        "qrels/test.tsv:3: not valid UTF-8 (byte 0xe9 at column 5)"),
    "no judgements": ({"qrels/test.tsv": ["query-id\tcorpus-id\tscore"]}, "qrels/test.tsv: holds no judgements"),
    "no documents": ({"corpus.jsonl": []}, "corpus.jsonl: holds no document rows"),
    "no queries": ({"queries.jsonl": ["", "  "]}, "queries.jsonl: holds no query rows"),
    "judged query without text": ({"queries.jsonl": [QUERIES[0]]},
                                  "qrels/test.tsv: 1 judged query ids are not in queries.jsonl"),
    "no judged document in the corpus": ({"qrels/test.tsv": ["q1\tD1\t1", "q2\tD3\t1"]},
                                         "qrels/test.tsv: none of its 2 judged documents is in corpus.jsonl"),
    "duplicate document id": ({"corpus.jsonl": {4: '{"_id": "d1", "text": "red blue green"}'}},
                              "corpus.jsonl:4: _id 'd1' is already on line 1"),
    "duplicate query id": ({"queries.jsonl": {2: '{"_id": "q1", "text": "stock price fell today"}'}},
                           "queries.jsonl:2: _id 'q1' is already on line 1"),
    "corpus not UTF-8": ({"corpus.jsonl": {2: b'{"_id": "d2", "text": "caf\xff"}'}},
                         "corpus.jsonl:2: not valid UTF-8 (byte 0xff at column 27)"),
    "invalid JSON": ({"corpus.jsonl": {2: '{"_id": "d2", "text": '}}, "corpus.jsonl:2: not valid JSON"),
    "JSON array": ({"corpus.jsonl": {2: '["d2", "a dog"]'}}, "corpus.jsonl:2: a JSON array, not an object"),
    "JSON number": ({"queries.jsonl": {1: "5"}}, "queries.jsonl:1: a JSON number, not an object"),
    "query without text": ({"queries.jsonl": {1: '{"_id": "q1"}'}}, "queries.jsonl:1: the row has no 'text' field"),
    "numeric text": ({"queries.jsonl": {1: '{"_id": "q1", "text": 42}'}},
                     "queries.jsonl:1: field 'text' is a JSON number (42), not a string"),
    "numeric title": ({"corpus.jsonl": {3: '{"_id": "d3", "title": 7, "text": "x"}'}},
                      "corpus.jsonl:3: field 'title' is a JSON number (7), not a string"),
    "null id": ({"corpus.jsonl": {1: '{"_id": null, "text": "x"}'}},
                "corpus.jsonl:1: field '_id' is a JSON null, not a string"),
    "lone surrogate": ({"queries.jsonl": {2: r'{"_id": "q2", "text": "stock \ud800 fell"}'}},
                       "queries.jsonl:2: field 'text' holds a lone surrogate at character 7"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_beir_input_is_one_line_naming_file_and_line_before_the_model_loads(case, export, tmp_path, capsys):
    changes, where = BAD_INPUTS[case]
    folder = beir_folder(tmp_path, changes)
    argv = ["eval", str(export), "--tasks", "beir", "--beir", str(folder), "--no-card", "--out", str(tmp_path / "ev")]
    assert gte(argv) == 2
    out, err = capsys.readouterr()
    message = err.splitlines()[-1]
    assert message.startswith(f"gte eval: {folder}/{where}"), message
    assert "; " in message and "Traceback" not in err
    assert "[eval] beir/" not in out  # nothing was scored
    assert not (tmp_path / "ev").exists()


def test_the_good_folder_of_these_cases_reads_whole(tmp_path):
    data = read_beir(beir_folder(tmp_path))
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d3": 2, "d2": 1}} and data.absent_docs == []
    assert data.queries == {"q1": "the cat plays piano", "q2": "stock price fell today"} and len(data.corpus) == 3


def test_whole_float_grades_integer_ids_and_a_repeated_identical_judgement_are_accepted(tmp_path):
    folder = beir_folder(tmp_path, {"corpus.jsonl": {4: '{"_id": 7, "title": null, "text": "seven"}'},
                                    "qrels/test.tsv": {2: "q1\td1\t1.0", 5: "q1\t7\t0", 6: "q1\td1\t1"}})
    data = read_beir(folder)
    assert data.qrels["q1"] == {"d1": 1, "7": 0}
    assert data.corpus["7"] == "seven"


def test_a_judged_document_absent_from_the_corpus_is_counted_and_scores_as_never_retrieved(export, tmp_path,
                                                                                            capsys):
    complete = beir_folder(tmp_path / "complete")
    absent = beir_folder(tmp_path / "absent", {"qrels/test.tsv": {5: "q1\tgone\t1"}})
    argv = ["eval", str(export), "--tasks", "beir", "--no-card", "--beir"]
    assert gte([*argv, str(complete), "--out", str(tmp_path / "ev1")]) == 0
    assert "not in corpus.jsonl" not in capsys.readouterr().err
    assert gte([*argv, str(absent), "--out", str(tmp_path / "ev2")]) == 0
    err = capsys.readouterr().err
    assert f"gte eval: {absent}/qrels: judges 1 document(s) not in corpus.jsonl (e.g. ['gone'])" in err
    before = json.loads((tmp_path / "ev1" / "results.json").read_text())["results"]["beir/set"]
    after = json.loads((tmp_path / "ev2" / "results.json").read_text())["results"]["beir/set"]
    assert "absent_judged_docs" not in before and after["absent_judged_docs"] == 1
    # q1's second relevant document is never retrieved: its recall halves, as in BEIR and mteb
    assert after["recall@100"] == pytest.approx(before["recall@100"] - 0.5 / 2)
    assert after["ndcg@10"] < before["ndcg@10"] and after["mrr@10"] == before["mrr@10"]


# ---- STS-B files -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("line", "problem"), [
    (b"g\ts\t2017\t2\tinf\tOne.\tTwo.\n", "sts-test.csv:2: score 'inf' is not a finite number"),
    (b"g\ts\t2017\t2\t1.0\tOn\xe9.\tTwo.\n", "sts-test.csv:2: not valid UTF-8 (byte 0xe9 at column 18)"),
])
def test_a_bad_stsb_line_is_an_eval_error_naming_file_and_line(tmp_path, line, problem):
    (tmp_path / "sts-test.csv").write_bytes(b"g\ts\t2017\t1\t4.0\tFirst one.\tSecond one.\n" + line)
    with pytest.raises(EvalError, match=re.escape(problem)):
        load_stsb("test", tmp_path)


# ---- where the results go (finding 18) -------------------------------------------------------------------------
def test_an_unwritable_default_output_is_refused_before_encoding_suggesting_out(tiny_model, tmp_path, capsys):
    export = export_model(tiny_model, tmp_path / "export")
    (export / "eval").write_text("not a folder")  # what stands in the way of MODEL/eval, for root too
    folder = beir_folder(tmp_path)
    assert gte(["eval", str(export), "--tasks", "beir", "--beir", str(folder)]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == (f"gte eval: {export}/eval: the results cannot be written there ({export}/eval is "
                                    "a file, not a folder); pass --out DIR (a writable folder)")
    assert "[eval] beir/" not in out and "finished work is kept" not in err
    assert gte(["eval", str(export), "--tasks", "beir", "--beir", str(folder), "--out", str(tmp_path / "ev")]) == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the file case above runs instead")
def test_a_read_only_model_folder_is_refused_before_encoding_suggesting_out_and_no_card(tiny_model, tmp_path,
                                                                                         capsys):
    export = export_model(tiny_model, tmp_path / "export")
    export.chmod(0o555)
    try:
        assert gte(["eval", str(export), "--tasks", "beir", "--beir", str(beir_folder(tmp_path))]) == 2
    finally:
        export.chmod(0o755)
    message = capsys.readouterr().err.splitlines()[-1]
    assert message.startswith(f"gte eval: {export}/eval: the results cannot be written there (Permission denied)")
    assert message.endswith("; pass --out DIR (a writable folder) and --no-card"), message


def test_results_that_cannot_be_written_after_all_are_printed_not_lost(tiny_model, tmp_path, capsys, monkeypatch):
    export = export_model(tiny_model, tmp_path / "export")

    def disk_full(path, obj, indent=2):  # the disk fills up while the model encodes
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr("train.eval.evaluate.write_json", disk_full)
    assert gte(["eval", str(export), "--tasks", "beir", "--beir", str(beir_folder(tmp_path))]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines()[-1] == (f"gte eval: {export}/eval: the results cannot be written (No space left on "
                                    "device); they are printed above as JSON; pass --out DIR (a writable folder "
                                    "with free space) to keep them in a file")
    printed = json.loads(out[out.index("\n{") + 1:])
    assert 0 < printed["results"]["beir/set"]["ndcg@10"] <= 1 and printed["model"] == str(export)
    assert math.isclose(printed["results"]["beir/set"]["mrr@10"], 1.0)


def test_a_card_that_cannot_be_updated_after_all_leaves_the_results_file(tiny_model, tmp_path, capsys, monkeypatch):
    export = export_model(tiny_model, tmp_path / "export")

    def read_only(folder, results):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder / "README.md"))

    monkeypatch.setattr("train.eval.evaluate.update_eval_results", read_only)
    assert gte(["eval", str(export), "--tasks", "beir", "--beir", str(beir_folder(tmp_path))]) == 2
    message = capsys.readouterr().err.splitlines()[-1]
    assert message == (f"gte eval: {export}: its model card cannot be updated (Read-only file system); the results "
                       f"are in {export}/eval/results.json; free space or fix permissions and re-run, or pass "
                       "--no-card")
    assert json.loads((export / "eval" / "results.json").read_text())["results"]["beir/set"]["mrr@10"] == 1.0
