"""`gte encode`, `gte export`, `gte merge`: the model's own command-line jobs. User errors (a missing or damaged model
folder, an output folder that is not ours) are raised as UserError; the `gte` boundary prints them in one line.

CPU example:  gte encode "A man plays guitar." "Someone plays an instrument." "The market fell."
              gte export all-MiniLM-L6-v2 runs/minilm-export
"""

from __future__ import annotations

import argparse

from gte_model.core.errors import UserError
from gte_model.export import export_model
from gte_model.load import DEFAULT_MODEL, load_model

DEMO_TEXTS = [
    "A man is playing a guitar.",
    "Someone is playing a musical instrument.",
    "The stock market fell sharply after the announcement.",
    "Share prices dropped today.",
]


def encode_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gte encode", description="Embed texts and print cosine similarities.")
    parser.add_argument("texts", nargs="*", help="texts to embed (default: four demo sentences)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="preset, packaged short name or folder")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with bf16 units)")
    args = parser.parse_args(argv)
    texts = args.texts or DEMO_TEXTS
    model = load_model(args.model)
    emb = model.encode(texts, bf16=args.bf16, normalize=True)
    sims = emb @ emb.T
    print(f"model: {model.base_model}  dim={model.dim}  pooling={model.pooling}  max_seq_len={model.max_seq_len}")
    width = max(len(t[:50]) for t in texts)
    for i, t in enumerate(texts):
        row = " ".join(f"{s:6.3f}" for s in sims[i])
        print(f"{t[:50]:<{width}}  {row}")
    return 0


def export_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="gte export", description="Export a model to a loadable folder.")
    parser.add_argument("src", help="preset, packaged short name or model folder")
    parser.add_argument("out", help="output folder (replaced atomically)")
    parser.add_argument("--max-seq-len", type=int, default=None, help="override the max sequence length")
    parser.add_argument("--pooling", choices=["mean", "cls"], default=None)
    parser.add_argument("--no-normalize", action="store_true", help="export without the L2 normalisation module")
    args = parser.parse_args(argv)
    model = load_model(
        args.src, pooling=args.pooling, max_seq_len=args.max_seq_len, normalize=False if args.no_normalize else None
    )
    out = export_model(model, args.out, key="OUT")
    print(f"exported {args.src} -> {out}")
    return 0


def merge_main(argv: list[str]) -> int:
    """`gte merge [CONFIG.yaml] models=[a,b] weights=[...] out_dir=...` (gte_model.merge)."""
    from gte_model.core.config import config_from_argv
    from gte_model.merge import MergeConfig
    from gte_model.merge import __doc__ as merge_doc

    cfg = config_from_argv(MergeConfig, argv, merge_doc)
    if cfg is not None:
        run_merge(cfg)
    return 0


def run_merge(cfg, log=print):
    """Merge cfg.models with cfg.weights, or weights fit on cfg.fit.data; export to cfg.out_dir with the weights (and
    the fit's scores) in its gte_export.json. Returns the weights."""
    from gte_model.core.config import ConfigError
    from gte_model.merge import fit_weights, merge_models

    errors = cfg.validate()
    if not cfg.out_dir:
        errors.append("out_dir is not set: pass out_dir=<folder for the merged model>")
    if errors:
        raise ConfigError("invalid merge config:\n  " + "\n  ".join(errors))
    models = [load_model(name) for name in cfg.models]
    weights, table = tuple(cfg.weights), {}
    if not weights:
        tasks = fit_examples(cfg.fit.data, cfg.fit.rows)
        weights, table = fit_weights(models, tasks, cfg.fit.step, cfg.fit.batch_size, cfg.bf16, log=log)
    merged = merge_models(models, weights)
    record = {"merge": {"models": list(cfg.models), "weights": list(weights),
                        "fit": {",".join(map(str, w)): s for w, s in table.items()}}}
    export_model(merged, cfg.out_dir, train_config=record, key="out_dir")
    log(f"[merge] weights {list(weights)} -> {cfg.out_dir}")
    return weights


def fit_examples(dirs: list[str], rows: int) -> dict[str, tuple[list[str], list[str]]]:
    """`rows` evenly spaced train rows of every source of each pairs dir: {"<dir name>/<source>": (queries,
    positives)}."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from gte_model.core import pairs

    tasks = {}
    for folder in dirs:
        manifest = pairs.read_manifest(folder, key="fit.data")
        for source, entry in manifest["sources"].items():
            files = entry.get("train", {}).get("files", [])
            if not files:
                continue
            table = pq.read_table(pairs.resolve(Path(folder), files[0]), columns=["query", "positive"])
            pick = sorted({int(i) for i in range(0, table.num_rows, max(1, table.num_rows // rows))})[:rows]
            table = table.take(pick)
            tasks[f"{Path(folder).name}/{source}"] = (table["query"].to_pylist(), table["positive"].to_pylist())
    if not tasks:
        raise UserError(f"fit.data={dirs}: no source with train rows to fit the merge weights on")
    return tasks
