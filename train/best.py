"""The best checkpoint and early stopping: rules over the validation (dev) curve, as pure functions of its lines.

The rule (train.best_metric): of the evaluated steps, the best is the one with the highest value (the lowest for
val_loss); on a tie the earlier step wins. Early stopping (train.patience = P > 0): training stops at the P-th
evaluation in a row that did not beat the best before it. The lines are metrics.jsonl's eval lines, so a resumed run
(whose metrics.jsonl is cut back to its checkpoint) rebuilds the same best-so-far.
"""

from __future__ import annotations

BEST_METRICS = ("", "val_ndcg@10", "val_acc", "val_loss")  # "" = off: the export is the last step's model
LOWER_IS_BETTER = frozenset({"val_loss"})


def best_step(evals: list[dict], metric: str) -> int | None:
    """The step of the best value of metric among the eval lines (None: no line has it)."""
    scored = [(r[metric], r["step"]) for r in evals if r.get(metric) is not None]
    if not scored:
        return None
    sign = -1 if metric in LOWER_IS_BETTER else 1
    return max(scored, key=lambda vs: (sign * vs[0], -vs[1]))[1]


def stop_step(evals: list[dict], metric: str, patience: int) -> int | None:
    """The eval step at which training stops (patience evaluations in a row without a new best), or None."""
    sign = -1 if metric in LOWER_IS_BETTER else 1
    best, waited = None, 0
    for r in evals:
        if r.get(metric) is None:
            continue
        value = sign * r[metric]
        if best is None or value > best:
            best, waited = value, 0
        else:
            waited += 1
            if patience and waited >= patience:
                return r["step"]
    return None
