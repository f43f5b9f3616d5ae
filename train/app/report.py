"""The pipeline's report: <run.dir>/report.md and report.png (loss curves of both stages, metric bars, wall time)."""

from __future__ import annotations

import json
from pathlib import Path

from gte_model.core.atomic import write_text
from gte_model.core.record import Record, read_record
from train.eval.dims import PRECISION_NAMES, split_result_name
from train.eval.evaluate import GENERAL_TASKS, compare_table
from train.eval.long_text import LONG_TEXT_TASK
from train.metrics import plot_losses, read_metrics

STAGES = ("base", "teacher", "teacher_ft", "stage1", "stage2", "merged")
PHASES_DIR = "phases"  # <run.dir>/phases/<phase>.json: the records train.app.pipeline writes


def write_report(root: str | Path, base_name: str = "base", teacher_name: str = "", general_check: bool = False,
                 rotated: bool = False) -> Path:
    """Assemble report.md + report.png from the phase markers, metrics.jsonl files and eval results under root.
    general_check: STS-B is a general-domain check no training source touches (said next to the table); rotated:
    the final model is turned to its principal axes (gte_model.rotate; its truncated rows show that)."""
    root = Path(root)
    results = {s: _results(root / "eval" / s) for s in STAGES}
    results = {s: r for s, r in results.items() if r is not None}
    png = _plot(root, results)
    lines = [f"# Pipeline report: {root}", ""]
    if results:
        final = "merged" if "merged" in results else "stage2"
        labels = {"base": f"base ({base_name})", "teacher": f"teacher ({teacher_name})",
                  "teacher_ft": "teacher, fine-tuned", "stage1": "stage 1",
                  "stage2": "stage 2", "merged": "merged"}
        labels[final] += " (final, rotated)" if rotated else " (final)"
        full = {labels[s]: {t: m for t, m in r.items() if split_result_name(t)[1] is None} for s, r in results.items()}
        lines += ["## Evaluation", "", compare_table(full), ""]
        lines += [_general_line(results, final, general_check), "", _long_text_line(results, final), "",
                  _change_line(results, final), ""]
        by_dim = {labels[s]: _by_dim(r) for s, r in results.items()}
        if any(isinstance(f, int) and f for d in by_dim.values() for f in d):
            lines += ["### Truncated embeddings: mean nDCG@10 over the held-out sets", "",
                      _dims_table(by_dim), ""]
        if quantized := _quantized_table(by_dim):
            lines += ["### Quantized embeddings: mean nDCG@10 over the held-out sets (share of float, full dim)", "",
                      "int8: per-dim ranges calibrated on the corpus; binary: sign bits, the top candidates rescored "
                      "by the float query (train/eval/quantized.py).", "", quantized, ""]
    lines += _merge_lines(root / "merged" / "gte_export.json")
    lines += _mlm_lines(root / "stage0" / "metrics.jsonl")
    lines += ["## Wall time and peak memory per phase", "",
              "Peak RSS: this process during the phase (its peak is reset when a phase starts); worker processes "
              "(prep's pool) are listed apart, as the largest one over the whole run.", "",
              "| phase | seconds | peak RSS (MiB) |", "| --- | --- | --- |"]
    total, peaks, workers = 0.0, [], 0.0
    for name, rec in _phases(root):
        total += rec.stats["seconds"]
        peaks.append(rec.stats.get("peak_rss_mb", 0.0))
        workers = max(workers, rec.stats.get("children_peak_rss_mb", 0.0))
        lines.append(f"| {name} | {rec.stats['seconds']:.0f} | {rec.stats.get('peak_rss_mb', 0.0):.0f} |")
    lines += [f"| **total** | {total:.0f} | {max(peaks, default=0.0):.0f} |", "",
              f"Largest worker process: {workers:.0f} MiB.", ""]
    if png is not None:
        lines += [f"![losses and metrics]({png.name})", ""]
    lines += [f"Final model: `{root / 'export'}` (loads with SentenceTransformer and AutoModel).", ""]
    report = root / "report.md"
    write_text(report, "\n".join(lines))
    print(f"[run] report: {report}")
    return report


def _by_dim(results: dict) -> dict[int, float]:
    """{dim: mean nDCG@10 over the BEIR sets} (the full dim under 0), from `beir/<set>[@dim]` results."""
    per: dict[int, list[float]] = {}
    for task, metrics in results.items():
        name, dim = split_result_name(task)
        if name.startswith("beir/") and "ndcg@10" in metrics:
            per.setdefault(dim or 0, []).append(metrics["ndcg@10"])
    return {d: sum(v) / len(v) for d, v in per.items()}


def _dims_table(by_dim: dict[str, dict[int, float]]) -> str:
    dims = sorted({d for v in by_dim.values() for d in v if isinstance(d, int) and d}, reverse=True)
    lines = ["| model | full | " + " | ".join(str(d) for d in dims) + " |", "|" + " --- |" * (len(dims) + 2)]
    for model, values in by_dim.items():
        full = values.get(0)
        cells = [f"{values[d]:.4f} ({values[d] / full:.1%})" if d in values and full else "-" for d in dims]
        lines.append(f"| {model} | {full:.4f} | " + " | ".join(cells) + " |" if full else f"| {model} | - |")
    return "\n".join(lines)


def _merge_lines(export_json: Path) -> list[str]:
    """The merge's weights and, when they were fit, every grid point's scores (gte_model.merge); [] without a merge."""
    merge = json.loads(export_json.read_text()).get("train_config", {}).get("merge") if export_json.is_file() else None
    if not merge:
        return []
    models = ", ".join(f"{w:g} x `{m}`" for w, m in zip(merge["weights"], merge["models"]))
    lines = ["## Merge", "", f"The final model: {models}."]
    fit = merge.get("fit") or {}
    if not fit:
        return lines + ["", "The weights were given (merge.weights), not fit.", ""]
    tasks = list(next(iter(fit.values())))
    split = merge.get("fit_split", "train")
    lines += ["", f"Fit on the {split} rows of merge.fit.data (in-batch MRR of each source's examples) and the "
              "general checks' dev splits (<task>/dev: cosine Spearman): the highest mean wins. Each grid point "
              "(weights in the order above):", "",
              "| weights | " + " | ".join(tasks) + " | mean |", "| --- " * (len(tasks) + 2) + "|"]
    for weights, scores in fit.items():
        mean = sum(scores.values()) / len(scores)
        cells = [f"{scores[t]:.4f}" for t in tasks]
        lines.append(f"| {weights.replace(',', ' / ')} | " + " | ".join(cells) + f" | {mean:.4f} |")
    return lines + [""]


def _mlm_lines(jsonl: Path, rows: int = 8) -> list[str]:
    """The MLM stage's loss curve as a table (about `rows` logged steps, the last included); [] without stage 0."""
    records = read_metrics(jsonl) if jsonl.is_file() else []
    train = [r for r in records if r.get("kind") == "train"]
    if not train:
        return []
    evals = {r["step"]: r for r in records if "val_loss" in r}
    shown = train[:: max(1, len(train) // rows)]
    shown += [train[-1]] if shown[-1] is not train[-1] else []
    lines = ["## Stage 0: masked-LM loss", "", "Train loss: the mean over the steps of its log line; validation: the "
             "held-out texts with fixed masks.", "", "| step | train loss | validation loss | validation accuracy |",
             "| --- | --- | --- | --- |"]
    for r in shown:
        val = evals.get(r["step"], {})
        cells = [f"{val[k]:.4f}" if k in val else "-" for k in ("val_loss", "val_acc")]
        lines.append(f"| {r['step']} | {r['loss']:.4f} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def _quantized_table(by_dim: dict[str, dict]) -> str:
    """The models scored with quantized embeddings (the pipeline's final model): one row per precision (float32
    first) at the full dim and each truncation dim, each cell with its share of the float full-dim value; "" if
    none was."""
    rows = {m: v for m, v in by_dim.items() if v.get(0) and any(isinstance(f, str) for f in v)}
    dims = sorted({d for v in rows.values() for d in v if isinstance(d, int) and d}, reverse=True)
    lines = ["| model | embeddings | full | " + " | ".join(map(str, dims)) + " |", "|" + " --- |" * (len(dims) + 3)]
    for model, values in rows.items():
        full = values[0]
        forms = {"float32": {d: v for d, v in values.items() if isinstance(d, int)}}
        forms |= {p if p == "int8" else f"{p} (rescored)": _precision_points(values, p) for p in PRECISION_NAMES}
        for form, points in forms.items():
            cells = [f"{points[d]:.4f} ({points[d] / full:.1%})" if d in points else "-" for d in (0, *dims)]
            lines.append(f"| {model} | {form} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if rows else ""


def _precision_points(values: dict, precision: str) -> dict[int, float]:
    """{dim (0 = full): mean nDCG@10} of one precision's forms in _by_dim's values (`int8`, `128+int8`)."""
    points = {}
    for form, value in values.items():
        dim, _, name = form.rpartition("+") if isinstance(form, str) else ("", "", "")
        if name == precision:
            points[int(dim) if dim else 0] = value
    return points


def _general_line(results: dict, final: str, general_check: bool) -> str:
    """What STS-B stands for here, and how far the final model moved from the base on it."""
    if not general_check:
        return ("STS-B is not a general-domain check in this run: a training source (stsb) shares its "
                "distribution, or the task was not run.")
    base, last = (results.get(s, {}).get("sts-b", {}).get("cosine_spearman") for s in ("base", final))
    if base is None or last is None:
        return "General-domain check (STS-B test, no training source touches it): not evaluated for both models."
    return (f"General-domain check (STS-B test, no training source touches it): base {base:.4f} -> final {last:.4f} "
            f"({last - base:+.4f}).")


def _long_text_line(results: dict, final: str) -> str:
    """How far the final model moved from the base on the long-text general check (train/eval/long_text.py)."""
    base, last = (results.get(s, {}).get(LONG_TEXT_TASK, {}).get("cosine_spearman") for s in ("base", final))
    what = "General check for long texts (long-text: Jargon File paragraphs, test split, no training source reads it)"
    if base is None or last is None:
        return f"{what}: not evaluated for both models (add long-text to eval.tasks)."
    return f"{what}: base {base:.4f} -> final {last:.4f} ({last - base:+.4f})."


def _change_line(results: dict, final: str) -> str:
    """Which held-out sets (nDCG@10) and general checks (STS-B, long-text Spearman) the final model gained or lost
    on."""
    base, last = results.get("base", {}), results.get(final, {})
    moves = {}  # task -> final minus base
    for task, metrics in last.items():
        metric = "ndcg@10" if task.startswith("beir/") else "cosine_spearman" if task in GENERAL_TASKS else None
        if split_result_name(task)[1] is None and metric in metrics and metric in base.get(task, {}):
            moves[task] = metrics[metric] - base[task][metric]
    gained = ", ".join(f"{t} {d:+.4f}" for t, d in moves.items() if d > 0) or "nothing"
    lost = ", ".join(f"{t} {d:+.4f}" for t, d in moves.items() if d < 0) or "nothing"
    return f"Final model against the base: gained on {gained}; lost on {lost}."


def _phases(root: Path) -> list[tuple[str, Record]]:
    """(phase name, record) of every finished phase, in the order they finished."""
    found = []
    for path in (root / PHASES_DIR).glob("*.json"):
        rec = read_record(path.parent, path.name)
        if rec is not None and "seconds" in rec.stats:
            found.append((path.stem, rec))
    return sorted(found, key=lambda item: item[1].stats.get("finished", 0.0))


def _results(folder: Path) -> dict | None:
    path = folder / "results.json"
    return json.loads(path.read_text())["results"] if path.is_file() else None


def _plot(root: Path, results: dict[str, dict]) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    by_dim = {s: _by_dim(r) for s, r in results.items()}
    with_dims = {s: v for s, v in by_dim.items() if len(v) > 1}
    # stage 0 (run.stage0=true) and the teacher's fine-tuning (run.tune_teacher=true) have a curve only where they ran
    curves = [s for s in ("stage0", "stage1", "teacher_ft", "stage2")
              if s in ("stage1", "stage2") or (root / s / "metrics.jsonl").is_file()]
    panels = len(curves) + (2 if with_dims else 1)
    fig, axes = plt.subplots(1, panels, figsize=(5.3 * panels, 4.5))
    for ax, stage in zip(axes, curves):
        train = [r for r in read_metrics(root / stage / "metrics.jsonl") if r.get("kind") == "train"]
        evals = [r for r in read_metrics(root / stage / "metrics.jsonl") if "val_loss" in r]
        plot_losses(ax, train, evals)
        ax.set_title({"stage0": "stage0 (masked LM) loss", "teacher_ft": "teacher fine-tuning loss"}.get(
            stage, f"{stage} loss"))
        ax.set_xlabel("step")
    full = {s: {t: m for t, m in r.items() if split_result_name(t)[1] is None} for s, r in results.items()}
    _bars(axes[len(curves)], full)
    if with_dims:
        ax = axes[len(curves) + 1]
        ticks = sorted({d for v in with_dims.values() for d in v if isinstance(d, int) and d})  # then "full" (0)
        where = {d: i for i, d in enumerate([*ticks, 0])}
        for stage, values in with_dims.items():
            points = sorted((where[d], v) for d, v in values.items() if isinstance(d, int))
            (line,) = ax.plot([x for x, _ in points], [v for _, v in points], marker="o", label=stage)
            for style, precision in zip(("--", ":"), PRECISION_NAMES):  # the final model's int8 / binary embeddings
                held = sorted((where[d], v) for d, v in _precision_points(values, precision).items() if d in where)
                if held:
                    ax.plot([x for x, _ in held], [v for _, v in held], style, marker=".", color=line.get_color(),
                            label=f"{stage}, {precision}")
        ax.set_xticks(range(len(where)))
        ax.set_xticklabels([*map(str, ticks), "full"])
        ax.set_xlabel("embedding dims (truncated, renormalised)")
        ax.set_title("mean held-out nDCG@10 by dims")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png = root / "report.png"
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png


def _bars(ax, results: dict[str, dict]) -> None:
    """Grouped bars: one group per task (STS-B and long-text Spearman, each BEIR set's nDCG@10), one bar per model."""
    tasks = sorted({t for r in results.values() for t in r if t in GENERAL_TASKS or t.startswith("beir/")})
    metric = {t: ("cosine_spearman" if t in GENERAL_TASKS else "ndcg@10") for t in tasks}
    width = 0.8 / max(len(results), 1)
    lowest = 1.0
    for i, (stage, res) in enumerate(results.items()):
        values = [float(res.get(t, {}).get(metric[t], 0.0)) for t in tasks]
        lowest = min([lowest, *values])
        ax.bar([x + i * width for x in range(len(tasks))], values, width, label=stage)
    ax.set_xticks([x + width * (len(results) - 1) / 2 for x in range(len(tasks))])
    ax.set_xticklabels([t.replace("beir/", "") for t in tasks], rotation=30, ha="right")
    ax.set_ylim(max(0.0, lowest - 0.1), 1.06)  # the differences between models are what a reader looks for
    ax.set_title("STS-B, long-text Spearman / held-out nDCG@10")
    ax.legend(loc="upper right", ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
