"""Benchmark: every built-in source end to end, uncapped, and the per-source counts of each filter.

  .venv/bin/python benchmarks/prep_all_sources.py [OUT_DIR] [num_proc=2] [key=value ...]

Prints pairs per source before/after cleaning, exact and near duplicates removed (within/across sources),
decontaminated, held-out sizes, train sizes, wall time per stage and peak RSS. Not a test: nothing here asserts.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from data_prep.prep import PrepConfig, prep  # noqa: E402
from data_prep.report import render_markdown  # noqa: E402
from gte_model.core.config import load_config  # noqa: E402


def main(argv: list[str]) -> int:
    out = argv[0] if argv and "=" not in argv[0] else tempfile.mkdtemp(prefix="gte-prep-bench-")
    overrides = [a for a in argv if "=" in a]
    cfg = load_config(PrepConfig, None, [f"out_dir={out}", "num_proc=2", "overwrite=true", *overrides])
    print(f"prep of all built-in sources {cfg.sources} -> {out} (num_proc={cfg.num_proc})", flush=True)
    manifest = json.loads((prep(cfg) / "manifest.json").read_text())
    print(render_markdown(manifest))
    print("step seconds:", json.dumps(manifest["step_seconds"]))
    print("totals:", json.dumps({k: sum(s[k] for s in manifest["stats"].values())
                                 for k in ("read", "cleaned", "after_dedup", "heldout_pairs", "decontaminated",
                                           "train")}))
    print("manifest:", Path(out) / "manifest.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
