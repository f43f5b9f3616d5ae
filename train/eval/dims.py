"""Per-dim (Matryoshka) evaluation: embeddings cut to their first d dims and re-normalised, and how those results
are named.

A result at the model's full dim keeps its plain name (`beir/<set>`, `sts-b`); at a truncation dim d it is
`<name>@<d>` (`beir/<set>@128`, `sts-b@64`), so results.json stays one flat {name: {metric: value}} map and every
table that reads it gets one row per dim without knowing about dims. Embeddings held at a lower precision
(train/eval/quantized.py) add `+<precision>`: `beir/<set>@int8` (full dim), `beir/<set>@128+binary`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from train.eval.errors import EvalError

DIM_SEP = "@"
PRECISION_NAMES = ("int8", "binary")  # train.eval.quantized.PRECISIONS (that module imports torch; this one not)


def truncate(emb: np.ndarray, dim: int) -> np.ndarray:
    """[N, D] unit rows -> [N, dim]: the first dim columns, each row scaled back to unit length (a zero row stays
    zero). At the full dim the rows come back untouched, so a full-dim result is bit for bit the plain one."""
    if dim == emb.shape[1]:
        return emb
    cut = np.asarray(emb, dtype=np.float32)[:, :dim]  # [N, dim]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)  # [N, 1]
    return cut / np.maximum(norms, 1e-12)


def dims_to_run(full_dim: int, dims: Sequence[int] | None) -> list[int]:
    """The full dim first (its results keep their plain names), then each requested dim once, largest first."""
    dims = list(dims or [])
    bad = [d for d in dims if not 0 < d <= full_dim]
    if bad:
        raise EvalError(f"--dims {','.join(map(str, dims))}: {bad} outside 1..{full_dim}, the model's embedding "
                        f"size; choose dims between 1 and {full_dim}")
    return [full_dim, *sorted(set(dims) - {full_dim}, reverse=True)]


def result_name(name: str, dim: int, full_dim: int, precision: str | None = None) -> str:
    """`name` at the full dim, `name@dim` below it; `name@int8`, `name@dim+int8` at a lower precision."""
    parts = [str(dim)] * (dim != full_dim) + [precision] * bool(precision)
    return f"{name}{DIM_SEP}{'+'.join(parts)}" if parts else name


def split_result_name(name: str) -> tuple[str, int | str | None]:
    """(`beir/<set>`, 128) from `beir/<set>@128`, (`beir/<set>`, "128+int8") from `beir/<set>@128+int8`,
    (`beir/<set>`, "int8") from `beir/<set>@int8`; (name, None) for a full-dim float result."""
    base, sep, form = name.rpartition(DIM_SEP)
    if sep and form.isdigit():
        return base, int(form)
    dim, _, precision = form.rpartition("+")
    if sep and precision in PRECISION_NAMES and (not dim or dim.isdigit()):
        return base, form
    return name, None


def form_order(form: int | str | None) -> tuple:
    """Sort key of split_result_name's second part: the full dim, then float dims descending, then each
    precision (full dim first, then dims descending)."""
    if form is None:
        return (0, 0, "")
    if isinstance(form, int):
        return (1, -form, "")
    dim, _, precision = form.rpartition("+")
    return (2 + PRECISION_NAMES.index(precision), -int(dim) if dim else -(10**9), precision)
