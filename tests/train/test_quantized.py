"""Quantized embeddings in retrieval (train/eval/quantized.py): int8 codes as sentence-transformers makes them, the
binary search's candidate cut and rescoring, and `gte eval --quantize` metrics against a hand computation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sentence_transformers.quantization import quantize_embeddings

from tests.train.test_evaluate import write_beir
from train.eval.dims import form_order, result_name, split_result_name
from train.eval.errors import EvalError
from train.eval.evaluate import compare_table, evaluate, main
from train.eval.quantized import SEARCHES, binary_search, dequantize_int8, int8_ranges, int8_search, quantize_int8
from train.eval.retrieval import evaluate_beir_dims, search

# Three documents and two queries, rows as given (not unit length: the arithmetic below is easier to follow).
DOCS = {"F": [0.9, -0.1, -0.1, -0.1], "G": [-0.2, 0.3, 0.3, 0.3], "H": [-0.3, -0.2, -0.2, -0.4]}
QUERIES = {"q1": [1.0, 0.1, 0.1, 0.1], "q2": [0.1, 0.1, 0.1, -1.0]}


class RowsModel:
    """A stand-in encoder whose embedding of each text is the planted row."""

    def __init__(self, rows: dict[str, list[float]]):
        self.rows = {t: np.asarray(v, np.float32) for t, v in rows.items()}
        self.dim = len(next(iter(rows.values())))

    def encode(self, texts, **kwargs):
        return np.stack([self.rows[t] for t in texts])


def _matrix(rows: dict[str, list[float]]) -> np.ndarray:
    return np.asarray(list(rows.values()), np.float32)


def test_int8_codes_are_sentence_transformers_codes_with_ranges_from_the_corpus():
    rng = np.random.default_rng(0)
    corpus, queries = rng.normal(size=(50, 8)).astype(np.float32), rng.normal(size=(5, 8)).astype(np.float32)
    ranges = int8_ranges(corpus)
    ours = quantize_int8(queries, ranges)
    theirs = quantize_embeddings(queries, precision="int8", calibration_embeddings=corpus)
    assert ours.dtype == np.int8 and np.array_equal(ours, theirs)
    # each dim's corpus minimum gets the lowest code and its maximum the top one (126 where float rounding puts
    # (max - min) / step just under 255, as in sentence-transformers)
    codes = quantize_int8(corpus, ranges)
    assert (codes.min(axis=0) == -128).all() and (codes.max(axis=0) >= 126).all()
    # dequantized values (bucket centres) lie within one bucket of the originals
    step = (ranges[1] - ranges[0]) / 255
    assert (np.abs(dequantize_int8(codes, ranges) - corpus) <= step + 1e-6).all()


def test_int8_search_ranks_by_the_dequantized_bucket_centres():
    # one dim, range 0..2.55 from the corpus: buckets 0.01 wide; 0.014 and 0.016 share bucket 1 (centre 0.015)
    corpus = np.array([[0.0], [2.55], [0.014], [0.016]], np.float32)
    query = np.array([[1.003]], np.float32)  # bucket 100, centre 1.005
    scores, indices = int8_search(query, corpus, top_k=4)
    assert indices[0, 0] == 1 and set(indices[0, 1:3]) == {2, 3} and indices[0, 3] == 0
    assert scores[0, 1] == scores[0, 2] == pytest.approx(1.005 * 0.015, abs=1e-6)  # int8 cannot tell them apart
    assert scores[0, 3] == pytest.approx(1.005 * 0.005, abs=1e-6)
    assert search(query, corpus, top_k=4)[1][0].tolist() == [1, 3, 2, 0]  # floats can


def test_binary_search_rescores_only_the_hamming_candidates():
    q, docs = _matrix({"q1": QUERIES["q1"]}), _matrix(DOCS)
    # signs: q1 ++++, F +--- (agreement -2), G -+++ (+2), H ---- (-4); rescored q1 . sign: F 0.7, G -0.7, H -1.3
    scores, indices = binary_search(q, docs, top_k=1, multiplier=1)  # one candidate: G, the best Hamming match
    assert indices.tolist() == [[1]] and scores[0, 0] == pytest.approx(-0.7)
    scores, indices = binary_search(q, docs, top_k=1, multiplier=2)  # G and F: rescoring puts F first
    assert indices.tolist() == [[0]] and scores[0, 0] == pytest.approx(0.7)
    scores, indices = binary_search(q, docs, top_k=3)
    assert indices.tolist() == [[0, 1, 2]] and scores[0] == pytest.approx([0.7, -0.7, -1.3])


def test_gte_eval_quantize_metrics_match_a_hand_computation(tmp_path):
    beir = write_beir(tmp_path / "planted", {d: d for d in DOCS}, {q: q for q in QUERIES},
                      [("q1", "F", 1), ("q2", "H", 1)])
    by_form = evaluate_beir_dims(RowsModel({**DOCS, **QUERIES}), beir, None, searches=SEARCHES)
    assert list(by_form) == [4, (4, "int8"), (4, "binary")]
    # float: q1 -> F .87 first; q2 -> H .33, F .17, G -.26: both relevant documents first
    assert by_form[4]["ndcg@10"] == 1.0
    # int8 (ranges from the corpus): q2's -1.0 in dim 3 is clipped to the corpus minimum -0.4, so q2 scores
    # F .09 + .01 + .01 ... = 0.11 above H 0.09: H drops to rank 2; q1 still ranks F first
    # binary: q2's signs +++- rescored against F +--- 0.9, H ---- 0.7, G -+++ -0.9: H at rank 2 again
    rank2 = 1 / math.log2(3)
    for precision in ("int8", "binary"):
        assert by_form[(4, precision)]["ndcg@10"] == pytest.approx((1 + rank2) / 2, abs=1e-6)
        assert by_form[(4, precision)]["mrr@10"] == pytest.approx(0.75)


def test_quantized_results_are_named_beside_the_dims_and_sorted_after_them():
    assert result_name("beir/x", 4, 4, "int8") == "beir/x@int8"
    assert result_name("beir/x", 2, 4, "binary") == "beir/x@2+binary"
    assert split_result_name("beir/x@2+binary") == ("beir/x", "2+binary")
    assert split_result_name("beir/x@int8") == ("beir/x", "int8") and split_result_name("a@b") == ("a@b", None)
    forms = ["2+binary", "int8", None, 2, "binary", 3, "2+int8"]
    assert sorted(forms, key=form_order) == [None, 3, 2, "int8", "2+int8", "binary", "2+binary"]
    table = compare_table({"m": {"beir/x": {"ndcg@10": 1.0}, "beir/x@int8": {"ndcg@10": 0.5},
                                 "beir/x@2": {"ndcg@10": 0.75}}})
    assert table.index("BEIR average (1 sets)") < table.index("BEIR average @2") < table.index("BEIR average @int8")


def test_gte_eval_writes_quantized_results_and_refuses_a_bad_precision(tiny_model, tmp_path):
    from gte_model.export import export_model
    from tests.train.test_evaluate import CORPUS, QRELS
    from tests.train.test_evaluate import QUERIES as TEXT_QUERIES

    beir = write_beir(tmp_path / "beir" / "toy", CORPUS, TEXT_QUERIES, QRELS)
    export = export_model(tiny_model, tmp_path / "export")
    with pytest.raises(EvalError, match=r"--quantize int4: \['int4'\] not a precision; choose from int8, binary"):
        evaluate(export, tasks=["beir"], beir_dirs=[beir], out_dir=tmp_path / "bad", quantize=["int4"])
    with pytest.raises(EvalError, match="--quantize int8: scores retrieval only"):
        evaluate(export, tasks=["sts-b"], out_dir=tmp_path / "bad", quantize=["int8"])
    assert not (tmp_path / "bad").exists()
    assert main([str(export), "--tasks", "beir", "--beir", str(beir), "--dims", "16", "--quantize", "int8,binary",
                 "--out", str(tmp_path / "ev"), "--no-card"]) == 0
    results = json.loads((tmp_path / "ev" / "results.json").read_text())["results"]
    assert list(results) == ["beir/toy", "beir/toy@int8", "beir/toy@binary", "beir/toy@16", "beir/toy@16+int8",
                             "beir/toy@16+binary"]
    # every query text is also a document: each form still ranks it first at the full dim
    assert results["beir/toy@binary"]["mrr@10"] == results["beir/toy"]["mrr@10"] == 1.0
