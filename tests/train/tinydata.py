"""A tiny pairs dir in the shared format, for the training tests and configs/tiny.yaml.

    .venv/bin/python -m tests.train.tinydata runs/tiny-pairs

Three sources of short synthetic texts built from the conftest word list. A positive repeats its query's words
in another order plus one word, so a model can learn to match them; negatives are other rows' positives.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gte_model.core.pairs import finish
from gte_model.core.record import Record
from tests.conftest import WORDS

# name -> (train rows, heldout rows, words per query)
SOURCES = {"alpha": (96, 24, 3), "beta": (64, 16, 4), "gamma": (48, 16, 2)}


def _rows(name: str, n: int, words: int, rng: random.Random, tag: str = "") -> list[dict]:
    queries = [rng.sample(WORDS, words) for _ in range(n)]
    positives = [" ".join(rng.sample(q, len(q)) + [rng.choice(WORDS)]) for q in queries]
    rows = []
    for i, q in enumerate(queries):
        others = [positives[j] for j in rng.sample(range(n), 4) if j != i][:3]
        rows.append({"query": " ".join(q), "positive": positives[i], "negatives": others, "source": name,
                     "key": f"{name}-{tag}{i}"})
    return rows


def write_tiny_pairs(out: str | Path, seed: int = 0) -> Path:
    """Write <out>/<source>/{train,heldout,dev}-00000.parquet, manifest.json and the completion record; returns
    out. The dev rows (training's validation rows) have keys of their own, drawn apart so train rows stay as they
    were before dev splits existed."""
    out = Path(out)
    rng = random.Random(seed)
    sources: dict = {}
    for name, (n_train, n_heldout, words) in SOURCES.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        rows = _rows(name, n_train + n_heldout, words, rng)
        entry = {}
        dev = _rows(name, n_heldout, words, random.Random(f"{seed}-{name}-dev"), tag="dev-")
        for split, part in (("train", rows[:n_train]), ("heldout", rows[n_train:]), ("dev", dev)):
            rel = f"{name}/{split}-00000.parquet"
            pq.write_table(pa.Table.from_pylist(part), out / rel)
            entry[split] = {"files": [rel], "rows": len(part)}
        sources[name] = entry
    finish(out, sources, {}, Record("prep", 0, {"tinydata.seed": seed}))
    return out


ROOT = Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "configs" / "tiny.yaml"


def tiny_args(run_dir: str | Path, pairs_dir: str | Path, *overrides: str) -> list[str]:
    """Arguments of `gte train` for the tiny config in a test's own run dir and pairs dir, wandb off."""
    return [str(TINY_CONFIG), f"run.dir={run_dir}", f"data.train_dir={pairs_dir}", "log.wandb=off", *overrides]


def train_tiny(run_dir: str | Path, pairs_dir: str | Path, *overrides: str) -> int:
    """`gte train` in this process on the tiny config, with a data cache beside the run dir; its exit code."""
    from train.app.cli import main as gte

    return gte(["train", *tiny_args(run_dir, pairs_dir, f"data.cache_dir={run_dir}.cache", *overrides)])


def train_command(processes: int = 1) -> list[str]:
    """`gte train` as a subprocess: in one process, or as gloo DDP over `processes` CPU processes (accelerate's
    torchrun launcher; the trainer's Accelerator picks gloo without CUDA). Append tiny_args(...)."""
    if processes == 1:
        return [sys.executable, "-m", "train"]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "train"]


def subprocess_env() -> dict[str, str]:
    """Environment of a training subprocess: offline, one thread (the test machine's cores are shared)."""
    import os

    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               WANDB_MODE="disabled", PYTHONPATH=str(ROOT))
    return env


if __name__ == "__main__":
    print(write_tiny_pairs(sys.argv[1] if len(sys.argv) > 1 else "runs/tiny-pairs"))
