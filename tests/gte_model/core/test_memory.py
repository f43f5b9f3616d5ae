"""Private-memory sampling: a peak while a with block runs, and no thread left behind after it."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest

from gte_model.core.memory import HeapTrimmer, private_peak_mb, private_peak_tracking


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



_FRAGMENTED_HEAP = r"""
import ctypes, json, sys
import numpy as np
from gte_model.core.memory import HeapTrimmer, resident_mb

libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 16 << 20)  # M_MMAP_THRESHOLD: the blocks below live in the heap, as a step's activations do
libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: no automatic trim of the heap's top either
trim = HeapTrimmer(fraction=0.0, min_slack_mb=16.0)
trim()  # the steady level, before the step
keep, blocks = [], []
for _ in range(48):  # a step: 48 MiB of activations, each followed by a small output that stays alive
    blocks.append(np.ones((1 << 20) // 8))
    keep.append(np.ones(2048))
before = resident_mb()
del blocks  # freed, but held by the heap between the live outputs
held = resident_mb()
trimmed = trim() if sys.argv[1] == "trimmer" else False
print(json.dumps({"before": before, "held": held, "after": resident_mb(), "trimmed": trimmed}))
"""


def _heap_run(mode: str) -> dict:
    import json
    import subprocess

    out = subprocess.run([sys.executable, "-c", _FRAGMENTED_HEAP, mode], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim and /proc/self/statm")
def test_the_heap_trimmer_hands_a_fragmented_heap_back_once_it_grew_past_the_slack():
    kept = _heap_run("none")
    assert kept["held"] > kept["before"] - 4 and kept["after"] > kept["before"] - 4  # free pages stay resident
    run = _heap_run("trimmer")
    assert run["trimmed"] and run["after"] < run["held"] - 40  # the 48 MiB of free pages went back to the OS


def test_the_heap_trimmer_trims_only_past_the_slack_and_then_takes_a_new_level():
    readings = iter([1000, 1100, 1125, 1126, 1300, 1400, 1462, 1463, 1000])
    trim = HeapTrimmer(fraction=0.125, min_slack_mb=100.0, rss=lambda: next(readings))
    # level 1000, slack max(100, 125): 1125 stays, 1126 trims; then level 1300, slack 162.5: 1462 stays, 1463 trims
    assert [trim() for _ in range(9)] == [False, False, False, True, False, False, False, True, False]
    assert trim.trims == 2
