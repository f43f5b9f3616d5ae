"""Private-memory sampling: a peak while a with block runs, and no thread left behind after it."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from gte_model.core.memory import private_peak_mb, private_peak_tracking


def _samplers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "private-memory-peak"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_the_sampler_sees_a_peak_inside_the_block_and_is_gone_after_it():
    with private_peak_tracking():
        assert len(_samplers()) == 1
        before = private_peak_mb()
        block = np.ones(64 * 2**20 // 8)  # 64 MiB of private pages, held for 20 samples, then freed
        time.sleep(0.2)
        del block
        assert private_peak_mb() >= before + 60  # the block's pages were counted while they lived
    assert _samplers() == [] and private_peak_mb() == 0.0
    with private_peak_tracking():  # a later prep in the same process starts a fresh one
        assert len(_samplers()) == 1
    assert _samplers() == []
