"""Documents without queries: passages, the no-model query makers, document files in `gte prep`."""

from __future__ import annotations

import json
import random

import pytest

from data_prep.documents import Document, DocumentsConfig, read_documents, split_passages
from data_prep.prep import prep
from data_prep.prep_config import PrepConfig
from data_prep.query_makers import Passage, cloze_pair, crop_pair, make_pairs, title_pair
from data_prep.readers import ReaderError, ReadStats
from gte_model.core.config import ConfigError, load_config
from tests.data_prep.helpers import PREP_WORDS, shard_rows

SENTENCES = "The pump stops at night. Its valve opens when the tank fills up. Oil must be changed every spring."


def test_passages_keep_the_document_id_and_overlap_by_the_set_tokens():
    words = [f"t{i}" for i in range(300)]
    passages = split_passages(Document("doc-7", "Pumps", [("", " ".join(words))]), 100, 20)
    assert [p.index for p in passages] == [0, 1, 2, 3]
    assert {p.doc_id for p in passages} == {"doc-7"} and {p.title for p in passages} == {"Pumps"}
    cut = [p.text.split() for p in passages]
    assert cut[0] == words[:100] and cut[1][0] == "t80" and cut[-1][-1] == "t299"
    for a, b in zip(cut, cut[1:]):
        assert a[-20:] == b[:20]  # consecutive passages share exactly overlap_tokens
    assert [len(c) for c in cut] == [100, 100, 100, 60]


def test_a_short_section_is_one_passage_and_each_section_keeps_its_heading():
    doc = Document("d", "Manual", [("Install", "run the installer"), ("", "plain words here")])
    passages = split_passages(doc, 100, 20)
    assert [(p.title, p.text, p.index) for p in passages] == [("Install", "run the installer", 0),
                                                             ("Manual", "plain words here", 1)]


def test_title_maker_pairs_the_heading_with_its_passage():
    passage = Passage("d", 0, "Changing the oil", SENTENCES)
    assert title_pair(passage, random.Random(0)) == ("Changing the oil", SENTENCES)
    assert title_pair(Passage("d", 0, "", SENTENCES), random.Random(0)) is None


def test_cloze_maker_takes_one_sentence_out_of_its_passage():
    sentences = SENTENCES.split(". ")
    seen = set()
    for seed in range(20):
        query, positive = cloze_pair(Passage("d", 0, "", SENTENCES), random.Random(seed))
        assert query.rstrip(".") in [s.rstrip(".") for s in sentences] and query not in positive
        assert len(positive.split()) + len(query.split()) == len(SENTENCES.split())
        seen.add(query)
    assert len(seen) == 3  # every sentence is a query for some seed
    assert cloze_pair(Passage("d", 0, "", "One sentence only here."), random.Random(0)) is None


def test_crop_maker_draws_a_short_and_a_long_contiguous_crop():
    text = " ".join(f"t{i}" for i in range(100))
    for seed in range(20):
        query, positive = crop_pair(Passage("d", 0, "", text), random.Random(seed))
        assert f" {query} " in f" {text} " and f" {positive} " in f" {text} "
        assert 4 <= len(query.split()) <= 50 <= len(positive.split())
    assert crop_pair(Passage("d", 0, "", "too short to crop"), random.Random(0)) is None


def test_pairs_depend_on_the_seed_and_the_passage_not_on_call_order():
    a, b = Passage("d", 0, "T", SENTENCES * 3), Passage("e", 1, "", SENTENCES * 3)
    first = make_pairs(a, ["crop", "cloze"], seed=0)
    make_pairs(b, ["crop", "cloze"], seed=0)
    assert make_pairs(a, ["crop", "cloze"], seed=0) == first != make_pairs(a, ["crop", "cloze"], seed=1)
    assert [q for q, _ in make_pairs(a, ["title"], seed=0)] == ["T"]


def test_a_folder_of_markdown_html_and_text_files_reads_as_documents(tmp_path):
    (tmp_path / "guide").mkdir()
    (tmp_path / "guide" / "a.md").write_text("intro words\n# Setup\nrun setup now\n## Usage\ncall it daily\n")
    (tmp_path / "b.html").write_text("<html><head><title>Valves</title><style>p {x: 1}</style></head><body>"
                                     "<h2>Opening <b>them</b></h2><p>turn left</p><script>var x;</script></body>")
    (tmp_path / "c.txt").write_text("just text")
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    docs = {d.id: d for d in read_documents(tmp_path, DocumentsConfig())}
    assert set(docs) == {"guide/a.md", "b.html", "c.txt"}
    assert docs["guide/a.md"].title == "Setup"
    assert docs["guide/a.md"].sections == [("", "intro words"), ("Setup", "run setup now"), ("Usage", "call it daily")]
    assert docs["b.html"].title == "Valves" and docs["b.html"].sections == [("Opening them", "turn left")]
    assert docs["c.txt"].sections == [("", "just text")]


def test_a_row_without_its_text_field_names_file_line_and_field(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"body": "ok", "id": 1}) + "\n" + json.dumps({"id": 2}) + "\n")
    cfg = DocumentsConfig(text="body")
    with pytest.raises(ReaderError, match=r"docs.jsonl:2: field 'body' \(the documents text column\) is missing"):
        list(read_documents(path, cfg))
    stats = ReadStats()
    assert [d.id for d in read_documents(path, cfg, on_error="skip", stats=stats)] == ["1"]
    assert stats.skipped == 1 and "docs.jsonl:2" in stats.problems[0]


def test_documents_config_problems_name_the_key():
    with pytest.raises(ConfigError) as caught:
        load_config(PrepConfig, None, ["sources=[]", "files=[{name: d, path: /nonexistent, kind: documents, "
                                       "documents: {passage_tokens: 16, overlap_tokens: 16, makers: [cloze, x]}}]"])
    assert "files.0.documents.overlap_tokens=16: must be below passage_tokens=16" in str(caught.value)
    assert "documents.makers=['cloze', 'x']: choose one or more of title, cloze, crop, llm" in str(caught.value)


@pytest.mark.integration
def test_prep_of_documents_keys_every_pair_by_its_document(tmp_path):
    rng = random.Random(0)
    rows = [{"doc": f"D{i}", "name": f"topic {i}",
             "body": ". ".join(" ".join(rng.choice(PREP_WORDS) for _ in range(9)) for _ in range(12)) + "."}
            for i in range(40)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files = (f"files=[{{name: manual, path: {tmp_path}/docs.jsonl, kind: documents, documents: {{text: body, "
             "title: name, id: doc, passage_tokens: 40, overlap_tokens: 10}}]")
    cfg = load_config(PrepConfig, None, ["sources=[]", files, f"out_dir={tmp_path}/pairs",
                                         "split.heldout_fraction=0.2", "decontaminate.stsb_test=false"])
    out = prep(cfg)
    entry = json.loads((out / "manifest.json").read_text())["sources"]["manual"]
    train, heldout = shard_rows(out, entry["train"]["files"]), shard_rows(out, entry["heldout"]["files"])
    assert train and heldout and {r["key"] for r in train} | {r["key"] for r in heldout} <= {r["doc"] for r in rows}
    assert not {r["key"] for r in train} & {r["key"] for r in heldout}  # a document is wholly on one side
    queries = {r["query"] for r in train}
    assert {f"topic {i}" for i in range(40)} & queries  # title pairs
    by_doc = {r["doc"]: r["body"] for r in rows}
    assert all(r["query"].split()[0] in by_doc[r["key"]].split() + ["topic"] for r in train)
    assert (out / "beir" / "manual" / "queries.jsonl").is_file()
