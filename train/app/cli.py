"""The `gte` command: one entry point, one subcommand per job.

gte encode [--model NAME] TEXT...      embed texts and print their cosine similarities
gte export SRC OUT                      write SRC (preset, packaged name or folder) as a loadable export
gte prep CONFIG [key=value ...]         build relevance pairs from raw corpora        (data_prep.prep)
gte mine CONFIG [key=value ...]         mine hard negatives                           (data_prep.mine)
gte train CONFIG [key=value ...]        train one stage                               (train.loop)
gte eval MODEL [--tasks ...]            evaluate an export                            (train.evaluate)
gte run CONFIG [key=value ...]          the whole pipeline: prep -> train -> mine -> train -> eval
"""

from __future__ import annotations

import importlib
import os
import sys

# Each subcommand lives with its code; imported lazily so `gte encode` does not pay for faiss or deepspeed.
COMMANDS = {
    "encode": "gte_model.commands:encode_main",
    "export": "gte_model.commands:export_main",
    "prep": "data_prep.prep:main",
    "mine": "data_prep.mine:main",
    "train": "train.loop:main",
    "eval": "train.evaluate:main",
    "run": "train.pipeline:main",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"gte: unknown command {command!r}; choose one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    # No hub: every model and data set here is local. Users who want the hub can set these to 0.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    module, func = COMMANDS[command].split(":")
    result = getattr(importlib.import_module(module), func)(rest)
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
