"""Weight merging (WiSE-FT, LM-Cocktail): a weighted average of models of one architecture, to win back what
fine-tuning cost in general ability while keeping most of the domain gain.

  gte merge models=[all-MiniLM-L6-v2,runs/quickstart/stage2/export] weights=[0.3,0.7] out_dir=runs/merged
  gte merge models=[...] fit.data=[runs/quickstart/data/pairs] out_dir=runs/merged      # weights fit on examples
  gte merge models=[...] fit.data=[...] fit.split=dev out_dir=...    # on the dev rows (never trained on) instead
  gte merge ... out_dir=runs/merged overwrite=true        # replace an earlier merge there (only a gte merge output)

Every floating-point tensor is averaged in float64 and rounded once to its dtype, so weight 1.0 on one model returns
that model bit for bit and merging identical models is the identity. Integer buffers (position ids) must agree.
Fitting tries every weight vector on a grid of the simplex (step fit.step) and keeps the one whose mean score over
the tasks is highest: per task (a pairs-dir source), the mean reciprocal rank of each example's positive among the
task's positives (in-batch retrieval over fit.rows examples). Include a task that stands for general ability, or
the fit will favour the fine-tuned model: `gte run` adds its general checks (STS-B and long-text, each on its dev
split, cosine Spearman) as tasks of their own.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from gte_model.core.atomic import check_replaceable
from gte_model.core.config import ConfigError, bounded, config_from_argv, field_problems
from gte_model.core.errors import UserError
from gte_model.core.pairs import DEV_SPLIT, fit_examples
from gte_model.export import export_model
from gte_model.load import load_model
from gte_model.model import GTEModel
from gte_model.presets import PRESETS


@dataclass
class FitConfig:
    data: list[str] = field(default_factory=list)  # pairs dirs whose fit.split rows are the examples ([] = no fit)
    # which rows: train, or dev (gte prep split.dev_fraction: held out by key, never trained on, never a test set)
    split: str = bounded("train", choices=("train", DEV_SPLIT))
    rows: int = bounded(64, ge=2, hint="in-batch retrieval needs candidates")  # examples per task (source)
    step: float = bounded(0.1, gt=0, le=0.5, hint="e.g. 0.1 or 0.05")  # grid step of the weights; divides 1 evenly
    batch_size: int = bounded(64, ge=1)  # texts per encode batch while fitting


@dataclass
class MergeConfig:
    models: list[str] = field(default_factory=list)  # saved models (folders, packaged names), one architecture
    trust_remote_code: bool = False  # run the model folders' own code (config.json auto_map): read it first
    weights: list[float] = field(default_factory=list)  # one per model, summing to 1; [] = fit them (fit.data)
    out_dir: str = ""  # folder of the merged model (required)
    overwrite: bool = False  # replace out_dir if it is an earlier `gte merge` output (never anything else)
    fit: FitConfig = field(default_factory=FitConfig)
    bf16: bool = True  # encoding during the fit

    def validate(self) -> list[str]:
        errors = []
        if len(self.models) < 2:
            errors.append(f"models={self.models}: name at least two models to merge")
        # a preset builds fresh random weights on every load: the merge would differ per run (and per resume)
        errors += [f"models.{i}={name}: a size preset is a random model, not a saved one; merge model folders "
                   "(exports) or packaged names" for i, name in enumerate(self.models) if name in PRESETS]
        if self.weights and len(self.weights) != len(self.models):
            errors.append(f"weights={self.weights}: needs one weight per model ({len(self.models)})")
        if self.weights and (min(self.weights) < 0 or abs(sum(self.weights) - 1) > 1e-6):
            errors.append(f"weights={self.weights}: must be >= 0 and sum to 1")
        if not self.weights and not self.fit.data:
            errors.append("weights=[] and fit.data=[]: give the weights or pairs dirs to fit them on (fit.data=[...])")
        # a grid step that does not divide 1 leaves the weights' simplex with no point summing to 1
        if 0 < self.fit.step <= 0.5 and abs(round(1 / self.fit.step) * self.fit.step - 1) > 1e-9:
            errors.append(f"fit.step={self.fit.step}: must divide 1 evenly, e.g. 0.1 or 0.05")
        return field_problems(self) + errors


def merge_models(models: Sequence[GTEModel], weights: Sequence[float]) -> GTEModel:
    """A new model whose every floating-point tensor is sum_i weights[i] * models[i]'s (computed in float64)."""
    if len(models) != len(weights) or not models:
        raise ValueError(f"{len(models)} models and {len(weights)} weights")
    states = [m.backbone.state_dict() for m in models]
    _check_compatible(models, states)
    merged = copy.deepcopy(models[0])
    out = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            total = sum(w * s[name].double() for w, s in zip(weights, states))
            out[name] = total.to(first.dtype)
        else:
            out[name] = first.clone()
    merged.backbone.load_state_dict(out)
    return merged


def _check_compatible(models: Sequence[GTEModel], states: list[dict]) -> None:
    for i, model in enumerate(models):
        if model.rotation is not None:  # averaging weights under different rotations mixes unrelated axes
            raise UserError(f"models.{i}: a rotated model (gte rotate); merge the unrotated models, then rotate the "
                            "merge")
    first, vocab = states[0], models[0].tokenizer.get_vocab()
    for i, (model, state) in enumerate(zip(models[1:], states[1:]), start=1):
        if state.keys() != first.keys() or any(state[k].shape != first[k].shape for k in first):
            raise UserError(f"models.{i}: its tensors differ from models.0's (another architecture or size); "
                            "only models fine-tuned from one base can be merged")
        if model.tokenizer.get_vocab() != vocab:
            raise UserError(f"models.{i}: its vocabulary differs from models.0's; merge models of one tokenizer")
        for k, v in state.items():
            if not v.is_floating_point() and not torch.equal(v, first[k]):
                raise UserError(f"models.{i}: integer buffer {k} differs from models.0's; not one architecture")


def weight_grid(n: int, step: float) -> list[tuple[float, ...]]:
    """Every weight vector of n non-negative multiples of step summing to 1."""
    units = round(1 / step)
    return [tuple(c / units for c in combo) for combo in itertools.product(range(units + 1), repeat=n)
            if sum(combo) == units]


def retrieval_score(model: GTEModel, queries: list[str], positives: list[str], batch_size: int = 64,
                    bf16: bool = False) -> float:
    """Mean reciprocal rank of each query's own positive among all the positives (in-batch retrieval)."""
    q = model.encode(queries, batch_size=batch_size, normalize=True, prompt_name="query", bf16=bf16)
    d = model.encode(positives, batch_size=batch_size, normalize=True, prompt_name="document", bf16=bf16)
    scores = q @ d.T  # [n, n]
    own = np.diag(scores)[:, None]
    ranks = 1 + (scores > own).sum(axis=1)
    return float(np.mean(1.0 / ranks))


def fit_weights(models: Sequence[GTEModel], tasks: dict[str, tuple[list[str], list[str]]], step: float = 0.1,
                batch_size: int = 64, bf16: bool = False, log=print,
                scorers: dict[str, Callable[[GTEModel], float]] | None = None) -> tuple[tuple[float, ...], dict]:
    """The grid weights with the best mean score over tasks {name: (queries, positives)} (retrieval_score) and
    scorers {name: score(model)} (e.g. a general check); and every candidate's scores {weights: {task: score}}."""
    table: dict[tuple[float, ...], dict[str, float]] = {}
    for weights in weight_grid(len(models), step):
        merged = merge_models(models, weights).eval()
        table[weights] = {name: retrieval_score(merged, q, p, batch_size, bf16) for name, (q, p) in tasks.items()}
        table[weights].update({name: float(score(merged)) for name, score in (scorers or {}).items()})
        log(f"[merge] weights {list(weights)}: mean {np.mean(list(table[weights].values())):.4f}")
    best = max(table, key=lambda w: (np.mean(list(table[w].values())), w))  # ties: more weight on earlier models
    return best, table


def merge_main(argv: list[str]) -> int:
    """`gte merge [CONFIG.yaml] models=[a,b] weights=[...] out_dir=...`."""
    cfg = config_from_argv(MergeConfig, argv, __doc__)
    if cfg is not None:
        run_merge(cfg)
    return 0


def run_merge(cfg: MergeConfig, log: Callable[[str], object] = print,
              scorers: dict[str, Callable[[GTEModel], float]] | None = None) -> tuple[float, ...]:
    """Merge cfg.models with cfg.weights, or weights fit on cfg.fit.data (and scorers: more tasks, see fit_weights);
    export to cfg.out_dir with the weights (and the fit's scores) in its gte_export.json. Returns the weights."""
    errors = cfg.validate()
    if not cfg.out_dir:
        errors.append("out_dir is not set: pass out_dir=<folder for the merged model>")
    if errors:
        raise ConfigError("invalid merge config:\n  " + "\n  ".join(errors))
    check_replaceable(cfg.out_dir, "out_dir", "gte merge", cfg.overwrite)  # before loading and fitting
    models = [load_model(name, trust_remote_code=cfg.trust_remote_code, trust_flag="trust_remote_code=true")
              for name in cfg.models]
    weights, table = tuple(cfg.weights), {}
    if not weights:
        tasks = fit_examples(cfg.fit.data, cfg.fit.rows, key="fit.data", purpose="fit the merge weights on",
                             split=cfg.fit.split)
        weights, table = fit_weights(models, tasks, cfg.fit.step, cfg.fit.batch_size, cfg.bf16, log=log,
                                     scorers=scorers)
    merged = merge_models(models, weights)
    record = {"merge": {"models": list(cfg.models), "weights": list(weights),
                        "fit": {",".join(map(str, w)): s for w, s in table.items()}, "fit_split": cfg.fit.split}}
    export_model(merged, cfg.out_dir, train_config=record, key="out_dir", what="gte merge", overwrite=cfg.overwrite,
                 flag="overwrite=true")
    log(f"[merge] weights {list(weights)} -> {cfg.out_dir}")
    return weights
