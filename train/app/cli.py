"""The `gte` command: one entry point, one subcommand per job.

One rule for arguments. A command that reads a config takes an optional YAML file, then `key=value` overrides of
that config's keys (dotted: train.max_steps=100, models=[a,b], overwrite=true):
  gte prep [CONFIG] [key=value ...]       build relevance pairs from raw corpora        (data_prep.prep)
  gte mine [CONFIG] [key=value ...]       mine hard negatives                           (data_prep.mine)
  gte train [CONFIG] [key=value ...]      train one stage                               (train.loop)
  gte mlm [CONFIG] [key=value ...]        masked-LM pretraining of a backbone (stage 0)  (train.mlm)
  gte run [CONFIG] [key=value ...]        the whole pipeline, prep to report            (train.app.pipeline)
  gte merge [CONFIG] models=[..] ...      weighted average of model folders (WiSE-FT)   (gte_model.merge)
A command that acts on a model takes positional paths, then --flags (--overwrite, --bf16, ...):
  gte encode [--model NAME] TEXT...       embed texts and print their cosine similarities
  gte export SRC OUT                      write SRC (preset, packaged name or folder) as a loadable export
  gte rotate SRC OUT --data PAIRS_DIR     turn a model to its principal axes (truncation) (gte_model.rotate)
  gte eval MODEL [--tasks ...]            evaluate an export                            (train.eval.evaluate)
`gte <command> --help` prints that command's usage; `gte <config command> [CONFIG] [key=value ...] --show-config`
lists every config key with its default (or CONFIG's value), type, accepted values and meaning. These two are the
only flags a config command takes: they print and run nothing.

Exit codes: 0 done; 2 a problem you can fix (one line names the file or key and the fix); 75 a training run was
preempted (SIGTERM/SIGUSR1) after writing a checkpoint: re-run the same command to resume; 130 stopped by Ctrl-C
(outputs are written atomically, so an old one stays as it was; finished work is kept: staged prep sources,
training checkpoints; re-run the same command to continue. Ctrl-C stops training at once, without a checkpoint:
SIGTERM writes one first.)
"""

from __future__ import annotations

import importlib
import os
import sys

from gte_model.core.errors import EXIT_INTERRUPTED, EXIT_USER_ERROR, INTERRUPTED, user_message
from train.preempt import EXIT_PREEMPTED, Preempted

# Each subcommand lives with its code; imported lazily so `gte encode` does not pay for faiss or deepspeed.
COMMANDS = {
    "encode": "gte_model.encode:encode_main",
    "export": "gte_model.export:export_main",
    "merge": "gte_model.merge:merge_main",
    "rotate": "gte_model.rotate_cli:rotate_main",
    "prep": "data_prep.prep:main",
    "mine": "data_prep.mine:main",
    "train": "train.loop:main",
    "mlm": "train.mlm:main",
    "eval": "train.eval.evaluate:main",
    "run": "train.app.pipeline:main",
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
    from gte_model.core.progress import quiet_library_bars
    from train.backend import name_deepspeed_accelerator

    name_deepspeed_accelerator()  # before accelerate imports DeepSpeed: no "Setting accelerator to CPU" warning
    quiet_library_bars()  # off a terminal (SLURM, CI) progress is plain lines, not carriage-return bars
    module, func = COMMANDS[command].split(":")
    return run_command(command, lambda: getattr(importlib.import_module(module), func)(rest))


def run_command(command: str, job) -> int:
    """The one error boundary: an expected failure is one line `gte <cmd>: <file or key>: <problem>; <fix>` and
    exit 2; a preempted training run exits 75 (requeue and re-run to resume); Ctrl-C is one line and exit 130
    (every output is written atomically, so the old one is intact); anything else is a bug and keeps its
    traceback."""
    try:
        return int(job() or 0)
    except KeyboardInterrupt:
        print(f"\ngte {command}: {INTERRUPTED}", file=sys.stderr, flush=True)  # \n: off the ^C and any progress bar
        return EXIT_INTERRUPTED
    except Preempted as exc:
        print(f"gte {command}: {exc}", file=sys.stderr, flush=True)
        return EXIT_PREEMPTED
    except Exception as exc:
        message = user_message(exc)
        if message is None:
            raise
        print(f"gte {command}: {message}", file=sys.stderr, flush=True)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    raise SystemExit(main())
