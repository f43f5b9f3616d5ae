"""How many optimizer steps a run trains: train.max_steps, or train.epochs resolved against the data it reads.

With train.epochs > 0 the count is ceil(epochs x epoch_steps): one epoch is one pass of the sampler over every
source trained on (train/sampler.py: n_i // global_batch_size batches per source), the row counts read from the pairs
dir's manifest. It is resolved once, when training starts, into train.max_steps of the run's config.yaml, run record
and checkpoints, so a resumed run (same data: the record holds the manifest digest) continues to the same step, and
warmup, the schedule and checkpoint checks all see the resolved count.
"""

from __future__ import annotations

import copy
import math

from gte_model.core.config import ConfigError
from gte_model.core.pairs import read_manifest
from train.config import TrainConfig, length_problems
from train.sampler import epoch_steps


def resolve_length(cfg: TrainConfig, log=print) -> TrainConfig:
    """cfg itself with train.epochs at 0; else a copy whose train.max_steps is the resolved count (logged)."""
    t = cfg.train
    if not t.epochs:
        return cfg
    sources = read_manifest(cfg.data.train_dir)["sources"]
    sizes = {name: int(entry.get("train", {}).get("rows", 0)) for name, entry in sources.items()
             if not cfg.data.sources or name in cfg.data.sources}
    per_epoch = epoch_steps(sizes, t.global_batch_size)
    how = (f"train.epochs={t.epochs} x {per_epoch} steps per epoch ({sum(sizes.values())} train rows in "
           f"{len(sizes)} source(s) of {cfg.data.train_dir}, train.global_batch_size={t.global_batch_size})")
    if not per_epoch:
        raise ConfigError(f"{how}: no source fills one batch; lower train.global_batch_size or add rows")
    out = copy.deepcopy(cfg)
    out.train.max_steps = max(1, math.ceil(t.epochs * per_epoch - 1e-9))  # 0.1 x 30 is 3.0000000000000004 in floats
    problems = length_problems(out, f"the {out.train.max_steps} steps of {how}")
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))
    log(f"gte train: {out.train.max_steps} optimizer steps = ceil({how})")
    return out
