"""Read-ahead on vs off, side by side in one process: pairs/s of MiniLM steps at batch 32, length 128, bf16.

  .venv/bin/python benchmarks/prefetch_ab.py PAIRS_DIR [ROUNDS]
PAIRS_DIR: a one-source pairs dir, e.g. the one benchmarks/train_throughput.py writes under its --work-dir.
Alternates the two settings per round (2 warm-up + 8 timed steps each) so machine noise hits both alike.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from train_bench_workers import ours_config  # noqa: E402

from train.trainer import Trainer  # noqa: E402


def pairs_per_s(pairs_dir: str, prefetch: str, work: Path) -> float:
    spec = {"run_dir": str(work / f"run-{prefetch}"), "pairs_dir": pairs_dir, "cache_dir": str(work / "cache"),
            "max_len": 128, "batch": 32, "chunk_size": 64, "precision": "bf16", "warmup": 2, "steps": 8}
    cfg = ours_config(spec)
    cfg.train.prefetch = prefetch
    with contextlib.redirect_stdout(io.StringIO()):
        trainer = Trainer(cfg)
    for step in range(2):
        trainer.step(step)
    start = time.perf_counter()
    for step in range(2, 10):
        trainer.step(step)
    seconds = time.perf_counter() - start
    trainer.read_ahead.close()
    return 8 * 32 / seconds


def main(pairs_dir: str, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="prefetch-ab-"))
    results: dict[str, list[float]] = {"on": [], "off": []}
    for _ in range(rounds):
        for prefetch in results:
            results[prefetch].append(pairs_per_s(pairs_dir, prefetch, work))
    for prefetch, values in results.items():
        print(f"train.prefetch={prefetch}: pairs/s {', '.join(f'{v:.1f}' for v in values)}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2)
