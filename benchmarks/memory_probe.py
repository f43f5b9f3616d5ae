"""Peak RSS and time of N training steps of the quickstart's stage 1, under an allocator setting.

  .venv/bin/python benchmarks/memory_probe.py runs/quickstart/data/pairs default 30
  .venv/bin/python benchmarks/memory_probe.py runs/quickstart/data/pairs trim 30    # malloc_trim after each step
  .venv/bin/python benchmarks/memory_probe.py runs/quickstart/data/pairs mmap 30    # + fixed 4 MiB mmap threshold

Builds the Trainer from configs/quickstart.yaml's stage1 section on an existing prep output, times Trainer.step and
prints the process's peak RSS. Run each setting in its own process (the peak is per process).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gte_model.core.config import load_config  # noqa: E402
from gte_model.core.memory import peak_rss_mb, release_free_memory  # noqa: E402
from train.app.pipeline import PipelineConfig  # noqa: E402
from train.trainer import Trainer  # noqa: E402

M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def main(pairs_dir: str, mode: str, steps: int) -> None:
    if mode == "mmap":
        ctypes.CDLL("libc.so.6").mallopt(M_MMAP_THRESHOLD, 4 << 20)  # a fixed threshold: big blocks are mmapped
    work = Path(tempfile.mkdtemp(prefix="memory-probe-"))
    cfg = load_config(PipelineConfig, ROOT / "configs" / "quickstart.yaml", [f"run.dir={work}"]).stage1
    cfg.data.train_dir, cfg.data.cache_dir = pairs_dir, str(work / "cache")
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(cfg)
    start = time.perf_counter()
    for step in range(steps):
        trainer.step(step)
        if mode in ("trim", "mmap"):
            release_free_memory()
    print(f"{mode}: {steps} steps in {time.perf_counter() - start:.1f} s, peak RSS {peak_rss_mb():.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 30)
