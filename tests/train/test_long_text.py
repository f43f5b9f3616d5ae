"""The long-text general check (train/eval/long_text.py) on a dictd text the test writes, and on the installed file."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from scipy.stats import spearmanr

from gte_model.export import export_model
from train.eval import long_text
from train.eval.errors import EvalDataMissing, EvalError
from train.eval.evaluate import TASKS, evaluate
from train.eval.long_text import (
    JARGON_FILE,
    LONG_TEXT_TASK,
    evaluate_long_text_dims,
    load_long_text,
    long_text_pairs,
    read_entries,
)

HEADER = "\n\n00-database-short\n     A test dictionary\n\n"


def _entry(head: str, sentences: list[str]) -> str:
    lines = [f"    {s}" for s in sentences]
    return f"{head}\n n.\n\n" + "\n".join(lines) + "\n\n"


def _sentence(topic: str, i: int) -> str:
    return f"Sentence {i} tells about {topic} and how the {topic} is used by people every day at work."


def _dictionary(n: int = 30) -> tuple[str, dict[str, str]]:
    """n long entries, each linking the next; their bodies as read_entries should give them."""
    text, bodies = HEADER, {}
    for k in range(n):
        head, link = f"word{k}", f"word{(k + 1) % n}"
        sentences = [_sentence(head, i) for i in range(8)] + [f"See {{{link}}}."]
        text += _entry(head, sentences)
        bodies[head] = " ".join(sentences)
    return text, bodies


def test_reader_keeps_each_entry_body_and_skips_the_database_header(tmp_path):
    text, bodies = _dictionary(5)
    path = tmp_path / "test.dict.dz"
    path.write_bytes(gzip.compress(text.encode()))
    assert read_entries(path) == bodies


def test_pairs_are_halves_of_one_entry_a_linked_entry_and_a_stranger(tmp_path):
    _, bodies = _dictionary(30)
    pairs = [p for split in ("dev", "test") for p in zip(*long_text_pairs(bodies, split))]
    plain = {h: b.replace("{", "").replace("}", "") for h, b in bodies.items()}
    assert len(pairs) == 3 * 30  # every entry is long and links another
    for first, text, grade in pairs:
        owner = next(h for h, b in plain.items() if b.startswith(first + " "))
        k = int(owner[4:])
        if grade == 2:
            assert f"{first} {text}" == plain[owner]
            assert first.endswith(".") and text.startswith("Sentence")  # cut at a sentence boundary
        elif grade == 1:
            assert text == plain[f"word{(k + 1) % 30}"]
        else:
            assert text in plain.values() and text not in (plain[owner], plain[f"word{(k + 1) % 30}"],
                                                           plain[f"word{(k - 1) % 30}"])


def test_dev_and_test_splits_share_no_headword(tmp_path):
    _, bodies = _dictionary(30)
    firsts = {split: set(long_text_pairs(bodies, split)[0]) for split in ("dev", "test")}
    assert firsts["dev"] and firsts["test"] and not firsts["dev"] & firsts["test"]


def test_short_entries_and_entries_without_links_give_no_pairs():
    short = {"a": "One short line about {b}.", "b": " ".join(["word"] * 200)}
    assert sum(len(long_text_pairs(short, s)[2]) for s in ("dev", "test")) == 0


def test_score_is_the_spearman_of_the_model_cosine_with_the_grades(tmp_path, tiny_model, monkeypatch):
    text, _ = _dictionary(40)
    path = tmp_path / "test.dict"
    path.write_text(text)
    monkeypatch.setattr(long_text, "JARGON_FILE", path)
    s1, s2, grades = load_long_text("test", path)
    a = tiny_model.encode(s1, normalize=True, prompt_name="query")
    b = tiny_model.encode(s2, normalize=True, prompt_name="query")
    want = spearmanr(np.einsum("nd,nd->n", a, b), grades).statistic
    got = evaluate_long_text_dims(tiny_model, [16], "test", path=path)
    assert got[tiny_model.dim]["cosine_spearman"] == pytest.approx(want, abs=1e-5)
    assert got[tiny_model.dim]["pairs"] == len(grades) and set(got) == {tiny_model.dim, 16}


def test_a_line_that_is_not_utf8_is_named_with_file_and_line(tmp_path):
    path = tmp_path / "bad.dict"
    path.write_bytes(HEADER.encode() + b"word\n n.\n\n    caf\xe9 au lait\n")
    with pytest.raises(EvalError, match=r"bad\.dict:9: not valid UTF-8"):
        read_entries(path)


def test_a_missing_file_names_the_package_to_install(tmp_path):
    with pytest.raises(EvalDataMissing, match="apt-get install dict-jargon"):
        load_long_text("test", tmp_path / "absent.dict.dz")


def test_a_file_without_cross_references_is_refused(tmp_path):
    path = tmp_path / "flat.dict"
    path.write_text(HEADER + _entry("alone", [_sentence("alone", i) for i in range(8)]))
    with pytest.raises(EvalError, match="no pairs of every grade"):
        load_long_text("test", path)


def test_gte_eval_runs_long_text_as_a_task(tmp_path, tiny_model, monkeypatch):
    text, _ = _dictionary(40)
    path = tmp_path / "test.dict"
    path.write_text(text)
    monkeypatch.setattr(long_text, "JARGON_FILE", path)
    export = export_model(tiny_model, tmp_path / "model")
    results = evaluate(export, tasks=[LONG_TEXT_TASK], out_dir=tmp_path / "eval", update_card=False)
    assert LONG_TEXT_TASK in TASKS and np.isfinite(results[LONG_TEXT_TASK]["cosine_spearman"])


def test_installed_jargon_file_gives_hundreds_of_pairs_per_split():
    assert JARGON_FILE.is_file(), "scripts/setup.sh installs dict-jargon (as root)"
    for split, least in (("dev", 300), ("test", 800)):
        s1, _, grades = load_long_text(split)
        assert len(grades) >= least and np.bincount(grades.astype(int)).tolist() == [len(grades) // 3] * 3
        assert np.mean([len(t.split()) for t in s1]) > 80  # paragraph length, not sentences
