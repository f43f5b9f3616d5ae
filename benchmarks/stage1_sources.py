"""Per-source loss curves of a training run logged before train lines carried loss/<source> (issue 23, item 2).

A train line covers train.log_every steps and used to name only its last step's source, so with log_every=2 a line
can mix two sources. The sampler is a pure function of the step, so the source of every step is recomputed here;
only lines whose steps all came from one source are kept: exact per-source losses, no mixing.

  .venv/bin/python benchmarks/stage1_sources.py runs/quickstart/stage1 benchmarks/stage1_sources.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from gte_model.core.config import load_config
from gte_model.core.pairs import read_manifest
from train.config import TrainConfig
from train.metrics import read_metrics
from train.sampler import SourceBatchSampler


def pure_lines(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], list[tuple[int, list[str], float]]]:
    """({source: [(step, loss)]} of the one-source lines, [(step, sources of its steps, loss)] of every line)."""
    cfg = load_config(TrainConfig, run_dir / "config.yaml", [])
    manifest = read_manifest(cfg.data.train_dir)
    names = sorted(cfg.data.sources or manifest["sources"])
    sizes = {s: int(manifest["sources"][s]["train"]["rows"]) for s in names}
    sampler = SourceBatchSampler(sizes, cfg.train.global_batch_size, cfg.sampler.alpha, cfg.train.seed)
    pure: dict[str, list[tuple[int, float]]] = {}
    every, previous = [], 0
    for r in (r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("kind") == "train"):
        sources = [sampler.batch_at(step)[0] for step in range(previous, r["step"])]
        previous = r["step"]
        every.append((r["step"], sources, r["loss"]))
        if len(set(sources)) == 1:
            pure.setdefault(sources[0], []).append((r["step"], r["loss"]))
    return pure, every


def main(run_dir: str, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pure, every = pure_lines(Path(run_dir))
    for step, sources, loss in every[:15]:
        print(f"line {step:3d}: steps' sources {'+'.join(sources):40s} loss {loss:.2f}")
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for source, points in sorted(pure.items()):
        ax.plot([s for s, _ in points], [v for _, v in points], marker="o", ms=3, lw=1, label=source)
        print(f"{source}: " + " ".join(f"{s}:{v:.2f}" for s, v in points))
    ax.set_xlabel("step")
    ax.set_ylabel("train loss (lines of one source only)")
    ax.set_title(f"{run_dir}: loss per source")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    print(f"wrote {png}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
