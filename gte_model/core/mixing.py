"""The source mixing law of GTE: p_i = n_i^alpha / sum_j n_j^alpha, the one formula of the training sampler
(train.sampler) and of the probabilities prep reports in its manifest (data_prep.staging)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GTE_ALPHA = 0.5  # GTE's alpha (0 uniform over sources, 1 proportional to size)


def mixing_probabilities(sizes: Sequence[int] | np.ndarray, alpha: float) -> np.ndarray:
    """[S] float64 probabilities p_i = n_i^alpha / sum_j n_j^alpha of sources with n_i rows, in the given order.
    The sampler's draws depend on these exact floats: keep the operations (float64 power, numpy sum, divide)."""
    weights = np.asarray(sizes, dtype=np.int64).astype(np.float64) ** float(alpha)
    return weights / weights.sum()
