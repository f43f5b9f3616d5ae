"""Domain gain vs general ability along the WiSE-FT line: merge the base model and a pipeline's final stage-2 model
at several weights and evaluate each on the pipeline's held-out sets and STS-B test (the general check when stsb is
not a training source).

  .venv/bin/python benchmarks/merge_sweep.py runs/quickstart runs/quickstart/stage2/export 0.5 0.6 0.7 0.8 1.0
(the run gives the base model, the held-out sets and eval.beir_sources). Prints a markdown table; merged models are
evaluated in memory, nothing is exported.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gte_model import load_model
from gte_model.core.pairs import beir_dirs
from gte_model.merge import merge_models
from train.eval.retrieval import evaluate_beir
from train.eval.sts import evaluate_sts


def main(run: str, tuned_export: str, weights: list[float]) -> None:
    root = Path(run)
    import yaml

    cfg = yaml.safe_load((root / "config.yaml").read_text())
    base = load_model(cfg["stage1"]["model"]["init_from"])
    tuned = load_model(tuned_export)
    sets = {k: v for k, v in beir_dirs(root / "data" / "pairs").items() if k in cfg["eval"]["beir_sources"]}
    header = "| weight of stage 2 | " + " | ".join(sets) + " | mean nDCG@10 | STS-B |"
    lines = [header, "|" + " --- |" * (len(sets) + 3)]
    print("\n".join(lines), flush=True)
    for w in weights:
        model = merge_models([base, tuned], [1 - w, w]).eval()
        scores = [evaluate_beir(model, path, bf16=True)["ndcg@10"] for path in sets.values()]
        sts = evaluate_sts(model, "test", bf16=True)["cosine_spearman"]
        mean = sum(scores) / len(scores)
        lines.append(f"| {w:.2f} | " + " | ".join(f"{s:.4f}" for s in scores) + f" | {mean:.4f} | {sts:.4f} |")
        print(lines[-1], flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [float(w) for w in sys.argv[3:]])
