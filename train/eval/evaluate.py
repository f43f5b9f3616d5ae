"""`gte eval`: evaluate a model the way users load it (the export folder), write results, update its card.

Tasks: `sts-b` (STS Benchmark test, cosine Spearman), `beir` (every BEIR-format folder given with --beir or
listed in a pairs dir's manifest: nDCG@10, MRR@10, Recall@100), and `mteb:<TaskName>` (when `mteb` is installed
and the task's data is already local; nothing is downloaded). Tasks, sets and packages are checked before the model
loads; every user error (a missing model folder, a bad --data or --beir folder, an unknown task, a missing package,
damaged or diverged weights) is a UserError with a one-line message, printed by the `gte` boundary.

CPU example:  gte eval all-MiniLM-L6-v2 --tasks sts-b --bf16
              gte eval runs/quickstart/export --data runs/quickstart/pairs --bf16
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import time
from collections.abc import Sequence
from pathlib import Path

from gte_model.assets import PACKAGED, is_installed, packaged_model_path
from gte_model.core.atomic import write_json, write_text
from gte_model.core.pairs import beir_dirs as pairs_beir_dirs
from gte_model.export import update_eval_results
from gte_model.load import load_model, model_folder
from train.eval.errors import EvalError
from train.eval.retrieval import beir_files, evaluate_beir, load_beir, search
from train.eval.sts import evaluate_sts, load_stsb, stsb_dir

__all__ = ["EvalError", "compare_table", "evaluate", "evaluate_beir", "evaluate_sts", "load_beir", "load_stsb",
           "main", "results_table", "search"]

TASKS = ("sts-b", "beir")  # plus "mteb:<TaskName>"
STS_TASK = "sts-b"
HEADLINE = {"sts-b": "cosine_spearman", "beir": "ndcg@10"}


def evaluate(
    model_dir: str | Path,
    tasks: Sequence[str] | None = None,
    beir_dirs: Sequence[str | Path] | dict[str, str | Path] | None = None,
    pairs_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    bf16: bool = False,
    batch_size: int = 64,
    update_card: bool = True,
) -> dict[str, dict]:
    """Run the tasks on the model at model_dir (export folder or packaged name); returns {task: {metric: value}}.

    Writes results.json and results.md to out_dir (default <model_dir>/eval) and, when model_dir is one of our
    exports (it holds gte_export.json), merges the numbers into its model card.
    """
    folder = _model_folder(model_dir)
    sets = _collect_beir(beir_dirs, pairs_dir)
    tasks = list(tasks or ([STS_TASK, "beir"] if sets else [STS_TASK]))
    _check_tasks(tasks, sets)
    model = load_model(model_dir)
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for task in tasks:
        for name, run in _task_runs(task, model, folder or model_dir, sets, bf16, batch_size):
            start = time.perf_counter()
            results[name] = _finite(run())
            seconds[name] = round(time.perf_counter() - start, 2)
            print(f"[eval] {name}: {_format_metrics(results[name])} ({seconds[name]:.1f}s)", flush=True)
    out = Path(out_dir) if out_dir else (folder / "eval" if folder else Path("runs") / "eval" / str(model_dir))
    _write_outputs(out, str(model_dir), results, seconds, bf16, batch_size)
    if update_card and folder is not None and (folder / "gte_export.json").is_file():
        update_eval_results(folder, {task: m for task, m in results.items() if "skipped" not in m})
    return results


def _model_folder(model_dir: str | Path) -> Path | None:
    """The local folder to write next to, or None for a packaged name or a preset (never write into
    site-packages); a ModelLoadError at once for a name that is no model."""
    path = model_folder(model_dir)
    if path is None or str(model_dir).lower() in PACKAGED:
        return None
    packaged = {packaged_model_path(n).resolve() for n in PACKAGED if is_installed(n)}
    return None if path.resolve() in packaged else path


def _collect_beir(beir_dirs, pairs_dir) -> dict[str, Path]:
    sets: dict[str, Path] = {}
    if isinstance(beir_dirs, dict):
        sets.update({name: Path(p) for name, p in beir_dirs.items()})
    else:
        for p in beir_dirs or []:
            # Named by folder; two folders with one name (a/test, b/test) keep their full paths apart.
            name = Path(p).name if Path(p).name not in sets else str(p)
            sets[name] = Path(p)
    if pairs_dir is not None:
        sets.update(pairs_beir_dirs(pairs_dir, key="--data"))
    return sets


def _check_tasks(tasks: list[str], sets: dict[str, Path]) -> None:
    """Everything that can be checked before the model loads: task names, sets, packages."""
    for task in tasks:
        if task not in TASKS and not (task.startswith("mteb:") and len(task) > 5):
            raise EvalError(f"--tasks: {task!r} is not a task; choose from {', '.join(TASKS)} or mteb:<TaskName>")
        if task.startswith("mteb:"):
            _require_mteb(task)
    if "beir" in tasks and not sets:
        raise EvalError("--tasks beir: no retrieval sets given; pass --beir DIR (a BEIR-format folder) or --data "
                        "PAIRS_DIR (the output of `gte prep`, whose manifest lists its held-out sets)")
    if "beir" in tasks:
        for path in sets.values():
            beir_files(path)
    if STS_TASK in tasks:
        stsb_dir()


def _require_mteb(task: str) -> None:
    if not _importable("mteb"):
        raise EvalError(f"--tasks {task}: needs the mteb package, which is not installed; pip install mteb "
                        f"(or leave {task} out of --tasks)")


def _task_runs(task: str, model, model_ref, sets: dict[str, Path], bf16: bool, batch_size: int):
    """(result name, zero-argument callable) pairs for one requested task."""
    if task == STS_TASK:
        return [(STS_TASK, lambda: evaluate_sts(model, "test", batch_size=batch_size, bf16=bf16))]
    if task == "beir":
        return [(f"beir/{name}", lambda p=path: evaluate_beir(model, p, batch_size=batch_size, bf16=bf16))
                for name, path in sets.items()]
    return [(task, lambda: evaluate_mteb(model_ref, task[len("mteb:"):], batch_size=batch_size))]


def evaluate_mteb(model_ref: str | Path, task_name: str, batch_size: int = 64) -> dict:
    """Main score of one MTEB task, or {"skipped": why} when the task's data is not local (EvalError when mteb is
    not installed).

    The export is loaded in SentenceTransformer, which mteb drives natively, so its query/document prompts apply.
    """
    _require_mteb(f"mteb:{task_name}")
    import mteb
    from sentence_transformers import SentenceTransformer

    name = str(model_ref)
    path = packaged_model_path(name) if name.lower() in PACKAGED else Path(name)
    st_model = SentenceTransformer(str(path), device="cpu")
    try:
        tasks = mteb.get_tasks(tasks=[task_name])
        if hasattr(mteb, "evaluate"):  # mteb >= 2
            task_results = mteb.evaluate(st_model, tasks, encode_kwargs={"batch_size": batch_size}).task_results
        else:
            task_results = mteb.MTEB(tasks=tasks).run(st_model, output_folder=None,
                                                       encode_kwargs={"batch_size": batch_size})
    except Exception as exc:  # noqa: BLE001 - offline: a missing dataset surfaces as any of several errors
        return {"skipped": f"data not local or task failed ({type(exc).__name__}: {str(exc)[:200]})"}
    return {"main_score": float(task_results[0].get_score())}


def results_table(results: dict[str, dict]) -> str:
    """Markdown: one row per task and metric."""
    lines = ["| task | metric | value |", "| --- | --- | --- |"]
    for task, metrics in results.items():
        for metric, value in metrics.items():
            lines.append(f"| {task} | {metric} | {_format_value(value)} |")
    return "\n".join(lines) + "\n"


def compare_table(results_by_model: dict[str, dict[str, dict]]) -> str:
    """Markdown: one column per model, one row per task/metric (numbers only), then the mean nDCG@10 over BEIR sets.

    A model missing a BEIR set gets no average ("-"), so averages over different sets are never compared.
    """
    models = list(results_by_model)
    rows: dict[tuple[str, str], None] = {}
    for results in results_by_model.values():
        for task, metrics in results.items():
            for metric, value in metrics.items():
                if isinstance(value, float):
                    rows[(task, metric)] = None
    lines = ["| task | metric | " + " | ".join(models) + " |", "| --- | --- |" + " --- |" * len(models)]
    for task, metric in rows:
        cells = [_format_value(results_by_model[m].get(task, {}).get(metric, "-")) for m in models]
        lines.append(f"| {task} | {metric} | " + " | ".join(cells) + " |")
    beir_sets = sorted({t for results in results_by_model.values() for t in results if t.startswith("beir/")})
    if beir_sets:
        cells = []
        for m in models:
            values = [results_by_model[m].get(t, {}).get("ndcg@10") for t in beir_sets]
            cells.append("-" if None in values else f"{sum(values) / len(values):.4f}")
        lines.append(f"| **BEIR average ({len(beir_sets)} sets)** | ndcg@10 | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_outputs(out: Path, model: str, results: dict, seconds: dict, bf16: bool, batch_size: int) -> None:
    record = {"model": model, "bf16": bf16, "batch_size": batch_size, "results": results, "seconds": seconds}
    write_json(out / "results.json", record)
    header = f"# Evaluation of {model}\n\nbf16 autocast: {bf16}, batch size {batch_size}.\n\n"
    write_text(out / "results.md", header + results_table(results))
    print(f"[eval] wrote {out / 'results.json'} and {out / 'results.md'}")


def _finite(metrics: dict) -> dict:
    """NaN or inf (e.g. the Spearman of a model that gives every text the same vector) -> None: JSON has no NaN,
    and a null in results.json says "undefined" without pretending to be a score."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in metrics.items()}


def _format_value(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _format_metrics(metrics: dict) -> str:
    return "  ".join(f"{k}={_format_value(v)}" for k, v in metrics.items())


def _importable(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gte eval", description="Evaluate an exported model (or a packaged one).")
    parser.add_argument("model", help="export folder, or a packaged short name such as all-MiniLM-L6-v2")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="sts-b, beir, mteb:<TaskName> (default: sts-b, plus beir when sets are given)")
    parser.add_argument("--beir", nargs="+", default=[], metavar="DIR", help="BEIR-format folders to evaluate on")
    parser.add_argument("--data", default=None, metavar="PAIRS_DIR",
                        help="a `gte prep` output folder: evaluates the held-out BEIR set of every source")
    parser.add_argument("--out", default=None, help="where results.json/.md go (default: MODEL/eval)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with bf16 units)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-card", action="store_true", help="do not write the results into the model card")
    args = parser.parse_args(argv)
    results = evaluate(args.model, tasks=args.tasks, beir_dirs=args.beir, pairs_dir=args.data, out_dir=args.out,
                       bf16=args.bf16, batch_size=args.batch_size, update_card=not args.no_card)
    print(results_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
