"""`gte encode` and `gte export`: the model's own command-line jobs. User errors (a missing or damaged model
folder, an output folder that is not ours) are raised as UserError; the `gte` boundary prints them in one line.

CPU example:  gte encode "A man plays guitar." "Someone plays an instrument." "The market fell."
              gte export all-MiniLM-L6-v2 runs/minilm-export
"""

from __future__ import annotations

import argparse

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
