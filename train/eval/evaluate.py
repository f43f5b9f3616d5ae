"""`gte eval`: evaluate a model the way users load it (the export folder), write results, update its card.

Tasks: `sts-b` (STS Benchmark test, cosine Spearman), `long-text` (paragraph-length pairs from the Jargon File graded
2/1/0, cosine Spearman: the general check for long texts, train/eval/long_text.py), `beir` (every BEIR-format folder
given with --beir or listed in a pairs dir's manifest: nDCG@10, MRR@10, Recall@100; a set named like a training
source gets that source's prompts, data.prompts, where the model has them), and, when `mteb` is installed,
`mteb-beir` (the same BEIR sets scored by mteb's own retrieval evaluation) and `mteb:<TaskName>` (a public MTEB task
whose data is already local; nothing is downloaded): see train/eval/mteb_task.py. Tasks, sets (every line of every
BEIR folder: train/eval/beir_io.py), packages, MTEB data and the writability of --out and of the model card are
checked before the model loads; every user error (a missing model folder, a bad --data or --beir folder, an unknown
task, a missing package, MTEB data that is not local, damaged or diverged weights) is a UserError with a one-line
message, printed by the `gte` boundary.

--dims 256,128,64 (Matryoshka) also scores sts-b, long-text and beir with the embeddings cut to each of those dims and
re-normalised (texts are encoded once); those results are named `sts-b@128`, `beir/<set>@128` next to the
unchanged full-dim `sts-b`, `beir/<set>` (train/eval/dims.py). MTEB tasks are scored at the full dim only.
--quantize int8,binary also scores beir with the embeddings held as int8 (per-dim ranges calibrated on the corpus)
and as binary (Hamming search, top candidates rescored by the float query): `beir/<set>@int8`,
`beir/<set>@128+binary` (train/eval/quantized.py). --backend onnx|onnx-int8 scores the export's ONNX graph
(gte export --onnx) through onnxruntime instead of PyTorch; its results go to MODEL/eval-<backend>.

CPU example:  gte eval all-MiniLM-L6-v2 --tasks sts-b --bf16
              gte eval runs/quickstart/export --data runs/quickstart/pairs --bf16 --dims 256,128,64
              gte eval all-MiniLM-L6-v2 --tasks beir mteb-beir --data runs/quickstart/pairs
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gte_model.assets import PACKAGED, is_installed, packaged_model_path
from gte_model.core.atomic import claim_dir, write_json, write_text
from gte_model.core.pairs import beir_dirs as pairs_beir_dirs
from gte_model.export import update_eval_results
from gte_model.load import load_model, model_folder
from gte_model.onnx_export import BACKENDS, load_onnx
from train.eval.beir_io import BeirSet, load_beir, read_beir
from train.eval.dims import PRECISION_NAMES, dims_to_run, form_order, result_name, split_result_name
from train.eval.errors import EvalError
from train.eval.long_text import LONG_TEXT_TASK, evaluate_long_text_dims, load_long_text
from train.eval.quantized import SEARCHES
from train.eval.retrieval import evaluate_beir, evaluate_beir_dims, search
from train.eval.sts import evaluate_sts, evaluate_sts_dims, load_stsb

__all__ = ["GENERAL_TASKS", "EvalError", "compare_table", "evaluate", "evaluate_beir", "evaluate_sts", "load_beir",
           "load_stsb", "main", "results_table", "search"]

STS_TASK = "sts-b"
TASKS = (STS_TASK, LONG_TEXT_TASK, "beir", "mteb-beir")  # plus "mteb:<TaskName>"
GENERAL_TASKS = (STS_TASK, LONG_TEXT_TASK)  # the general checks: no training source touches them
BEIR_TASKS = ("beir", "mteb-beir")


def evaluate(
    model_dir: str | Path,
    tasks: Sequence[str] | None = None,
    beir_dirs: Sequence[str | Path] | dict[str, str | Path] | None = None,
    pairs_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    bf16: bool = False,
    batch_size: int = 64,
    update_card: bool = True,
    dims: Sequence[int] | None = None,
    skip_large_dims: bool = False,
    quantize: Sequence[str] | None = None,
    backend: str = "torch",
    trust_remote_code: bool = False,
    trust_flag: str = "trust_remote_code=True",
) -> dict[str, dict]:
    """Run the tasks on the model at model_dir (export folder or packaged name); returns {task: {metric: value}},
    plus {task@dim: {metric: value}} for each of dims (sts-b, long-text and beir only). skip_large_dims: leave out
    dims above the model's instead of refusing them (the pipeline scores models of several sizes at one list of dims).
    quantize: also score beir with the embeddings held as int8 and/or binary (train.eval.quantized), at the full dim
    and at each of dims: `beir/<set>@int8`, `beir/<set>@128+binary`. backend: torch, or the export's ONNX graph
    (onnx, onnx-int8; gte_model.onnx_export): its results go to <model_dir>/eval-<backend> and not into the card.
    trust_remote_code: run the model folder's own code (config.json auto_map); trust_flag: how the user sets it, named
    when the folder is refused (gte_model.load_model).

    Writes results.json and results.md to out_dir (default <model_dir>/eval) and, when model_dir is one of our
    exports (it holds gte_export.json), merges the numbers into its model card. Both places are checked to be
    writable before the model loads.
    """
    folder = _model_folder(model_dir)
    sets = _collect_beir(beir_dirs, pairs_dir)
    tasks = list(tasks or ([STS_TASK, "beir"] if sets else [STS_TASK]))
    _check_tasks(tasks, sets)
    _check_forms(quantize, backend, tasks)
    where = "eval" if backend == "torch" else f"eval-{backend}"
    out = Path(out_dir) if out_dir else (folder / where if folder else Path("runs") / where / str(model_dir))
    card = folder if update_card and folder is not None and (folder / "gte_export.json").is_file() else None
    card = card if backend == "torch" else None  # the card shows the model's own (PyTorch) results
    _check_writable(out, card)
    claim_dir(out, "out", "gte eval", older=_older_results(out), write=False)  # a folder gte did not write: refused
    if backend == "torch":
        model = load_model(model_dir, trust_remote_code=trust_remote_code, trust_flag=trust_flag)
    else:
        model = load_onnx(model_dir, BACKENDS[backend])
    if skip_large_dims:  # a pipeline scores models of several sizes at one list of dims: each at those it has
        dims = [d for d in dims or [] if d <= model.dim]
    dims_to_run(model.dim, dims)  # refuse a bad dim before anything runs
    results: dict[str, dict] = {}
    seconds: dict[str, float] = {}
    for task in tasks:
        for name, run in _task_runs(task, model, folder or model_dir, sets, bf16, batch_size, dims, quantize,
                                    trust_remote_code):
            start = time.perf_counter()
            by_dim = run()  # {dim or (dim, precision): metrics}, the full dim first
            seconds[name] = round(time.perf_counter() - start, 2)
            for key, metrics in by_dim.items():
                dim, precision = key if isinstance(key, tuple) else (key, None)
                results[result_name(name, dim, model.dim, precision)] = _finite(metrics)
            print(f"[eval] {name}: {_format_metrics(results[name])} ({seconds[name]:.1f}s)", flush=True)
    # seconds: per task as run; its per-dim results came from the same encoding and share that time.
    record = {"model": str(model_dir), "backend": backend, "bf16": bf16, "batch_size": batch_size, "results": results,
              "seconds": seconds}
    _save(out, card, record)
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
        if task.startswith("mteb"):
            _require_mteb(task)
        if task.startswith("mteb:"):
            from train.eval.mteb_task import check_public_task  # mteb is optional: imported only when asked for

            check_public_task(task[len("mteb:"):])
    beir_tasks = [task for task in tasks if task in BEIR_TASKS]
    if beir_tasks and not sets:
        raise EvalError(f"--tasks {beir_tasks[0]}: no retrieval sets given; pass --beir DIR (a BEIR-format folder) "
                        "or --data PAIRS_DIR (the output of `gte prep`, whose manifest lists its held-out sets)")
    for path in sets.values() if beir_tasks else ():
        # Every set is read and checked now, and read again when it is scored: a bad line in the last set is
        # reported before the model loads, and only one set is held in memory at a time.
        _warn_absent(path, read_beir(path))
    if STS_TASK in tasks:
        load_stsb("test")
    if LONG_TEXT_TASK in tasks:
        load_long_text("test")


def _check_forms(quantize: Sequence[str] | None, backend: str, tasks: list[str]) -> None:
    """--quantize and --backend values, before the model loads."""
    bad = [p for p in quantize or [] if p not in PRECISION_NAMES]
    if bad:
        raise EvalError(f"--quantize {','.join(quantize)}: {bad} not a precision; choose from "
                        f"{', '.join(PRECISION_NAMES)}")
    if quantize and "beir" not in tasks:
        raise EvalError(f"--quantize {','.join(quantize)}: scores retrieval only, and --tasks has no beir; add beir "
                        "to --tasks (with --data or --beir) or drop --quantize")
    if backend not in ("torch", *BACKENDS):
        raise EvalError(f"--backend {backend}: not a backend; choose torch, {', '.join(BACKENDS)}")
    mteb = [t for t in tasks if t.startswith("mteb")]
    if backend != "torch" and mteb:
        raise EvalError(f"--backend {backend}: {mteb[0]} runs through sentence-transformers' torch model; leave "
                        "the mteb tasks out of --tasks or use --backend torch")


def _warn_absent(path: Path, data: BeirSet) -> None:
    """Judged documents absent from the corpus are allowed (BEIR's ArguAna has one) but never silent."""
    if data.absent_docs:
        print(f"gte eval: {path / 'qrels'}: judges {len(data.absent_docs)} document(s) not in corpus.jsonl "
              f"(e.g. {data.absent_docs[:3]}); each counts as relevant and never retrieved, as in BEIR and mteb "
              "(absent_judged_docs in the results)", file=sys.stderr, flush=True)


def _require_mteb(task: str) -> None:
    if not _importable("mteb"):
        raise EvalError(f"--tasks {task}: needs the mteb package, which is not installed; pip install mteb "
                        f"(or leave {task} out of --tasks)")


def _task_runs(task: str, model, model_ref, sets: dict[str, Path], bf16: bool, batch_size: int,
               dims: Sequence[int] | None, quantize: Sequence[str] | None = None, trust_remote_code: bool = False):
    """(result name, zero-argument callable returning {dim: metrics}) pairs for one requested task."""
    if task == STS_TASK:
        return [(STS_TASK, lambda: evaluate_sts_dims(model, dims, "test", batch_size=batch_size, bf16=bf16))]
    if task == LONG_TEXT_TASK:
        return [(task, lambda: evaluate_long_text_dims(model, dims, "test", batch_size=batch_size, bf16=bf16))]
    if task == "beir":
        searches = {precision: SEARCHES[precision] for precision in quantize or ()}
        return [(f"beir/{name}", lambda p=path, n=name: evaluate_beir_dims(
                    model, p, dims, batch_size=batch_size, bf16=bf16, searches=searches,
                    prompt_names=source_prompt_names(model, n)))
                for name, path in sets.items()]
    from train.eval import mteb_task

    # loaded once, when first needed
    st_model = functools.cache(lambda: _sentence_transformer(model_ref, trust_remote_code))
    if task == "mteb-beir":
        return [(f"mteb-beir/{name}",
                 lambda n=name, p=path: {model.dim: mteb_task.evaluate_local_beir(st_model(), n, p, batch_size)})
                for name, path in sets.items()]
    return [(task, lambda: {model.dim: mteb_task.evaluate_public(st_model(), task[len("mteb:"):], batch_size)})]


def source_prompt_names(model, source: str) -> tuple[str, str]:
    """(query, document) prompt names for a held-out set named like a training source: that source's own prompts
    (data.prompts, exported as <source> and <source>-document) where the model has them, else query / document."""
    prompts = getattr(model, "prompts", None) or {}
    return (source if source in prompts else "query",
            f"{source}-document" if f"{source}-document" in prompts else "document")


def _sentence_transformer(model_ref: str | Path, trust_remote_code: bool):
    """The export (or packaged model) in SentenceTransformer, which mteb drives natively."""
    from sentence_transformers import SentenceTransformer

    name = str(model_ref)
    path = packaged_model_path(name) if name.lower() in PACKAGED else Path(name)
    return SentenceTransformer(str(path), device="cpu", trust_remote_code=trust_remote_code)


def results_table(results: dict[str, dict]) -> str:
    """Markdown: one row per task and metric."""
    lines = ["| task | metric | value |", "| --- | --- | --- |"]
    for task, metrics in results.items():
        for metric, value in metrics.items():
            lines.append(f"| {task} | {metric} | {_format_value(value)} |")
    return "\n".join(lines) + "\n"


def compare_table(results_by_model: dict[str, dict[str, dict]]) -> str:
    """Markdown: one column per model, one row per task/metric (numbers only), then the mean nDCG@10 over BEIR sets
    (one row per dim when results hold `beir/<set>@<dim>`).

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
    beir_by_dim: dict[int | None, list[str]] = {}
    for task in sorted({t for results in results_by_model.values() for t in results if t.startswith("beir/")}):
        beir_by_dim.setdefault(split_result_name(task)[1], []).append(task)
    for dim, beir_sets in sorted(beir_by_dim.items(), key=lambda item: form_order(item[0])):
        cells = []
        for m in models:
            values = [results_by_model[m].get(t, {}).get("ndcg@10") for t in beir_sets]
            cells.append("-" if None in values else f"{sum(values) / len(values):.4f}")
        at = "" if dim is None else f" @{dim}"
        lines.append(f"| **BEIR average{at} ({len(beir_sets)} sets)** | ndcg@10 | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _check_writable(out: Path, card: Path | None) -> None:
    """Refuse, before anything is encoded, places the results could not be written to (they would be lost)."""
    problems, fixes = [], []
    if why := _unwritable(out):
        problems.append(f"{out}: the results cannot be written there ({why})")
        fixes.append("--out DIR (a writable folder)")
    if card is not None and (why := _unwritable(card)):
        problems.append(f"{card}: its model card cannot be updated ({why})")
        fixes.append("--no-card")
    if problems:
        raise EvalError(f"{'; '.join(problems)}; pass {' and '.join(fixes)}")


def _older_results(out: Path) -> bool:
    """An eval folder an older version wrote (before it was marked): results.json in our record's shape."""
    try:
        record = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and {"model", "results", "seconds"} <= set(record)


def _unwritable(folder: Path) -> str | None:
    """Why no file can be made in folder (made later if missing), or None. Probed by making a file in its nearest
    existing folder: permission bits say nothing about root, nor about a read-only mount."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _save(out: Path, card: Path | None, record: dict) -> None:
    """results.json/.md in out, then the model card. A write that fails anyway (a disk filling up meanwhile) keeps
    the results: printed as JSON before the message, or already in results.json when only the card fails."""
    header = (f"# Evaluation of {record['model']}\n\nbackend: {record['backend']}, bf16 autocast: {record['bf16']}, "
              f"batch size {record['batch_size']}.\n\n")
    try:
        claim_dir(out, "out", "gte eval", older=True)  # checked before the model loaded: create and mark it
        write_json(out / "results.json", record)
        write_text(out / "results.md", header + results_table(record["results"]))
    except OSError as exc:
        print(json.dumps(record, indent=2, allow_nan=False, default=str), flush=True)
        raise EvalError(f"{out}: the results cannot be written ({exc.strerror or exc}); they are printed above as "
                        "JSON; pass --out DIR (a writable folder with free space) to keep them in a file") from None
    print(f"[eval] wrote {out / 'results.json'} and {out / 'results.md'}")
    if card is None:
        return
    try:
        update_eval_results(card, {task: m for task, m in record["results"].items() if "skipped" not in m})
    except OSError as exc:
        raise EvalError(f"{card}: its model card cannot be updated ({exc.strerror or exc}); the results are in "
                        f"{out / 'results.json'}; free space or fix permissions and re-run, or pass --no-card"
                        ) from None


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


def _parse_dims(text: str) -> list[int]:
    try:
        return [int(d) for d in text.split(",") if d.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers, e.g. 256,128") from exc


def _parse_names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gte eval", description="Evaluate an exported model (or a packaged one).")
    parser.add_argument("model", help="export folder, or a packaged short name such as all-MiniLM-L6-v2")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="sts-b, long-text, beir, mteb-beir, mteb:<TaskName> (default: sts-b, plus beir when "
                        "sets are given)")
    parser.add_argument("--beir", nargs="+", default=[], metavar="DIR", help="BEIR-format folders to evaluate on")
    parser.add_argument("--data", default=None, metavar="PAIRS_DIR",
                        help="a `gte prep` output folder: evaluates the held-out BEIR set of every source")
    parser.add_argument("--out", default=None, help="where results.json/.md go (default: MODEL/eval)")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (faster on CPUs with bf16 units)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--no-card", action="store_true", help="do not write the results into the model card")
    parser.add_argument("--dims", type=_parse_dims, default=None, metavar="D1,D2,...",
                        help="also score sts-b, long-text and beir with embeddings cut to these dims (Matryoshka)")
    parser.add_argument("--quantize", type=_parse_names, default=None, metavar="int8,binary",
                        help="also score beir with int8 (calibrated ranges) and/or binary (rescored) embeddings")
    parser.add_argument("--backend", choices=["torch", *BACKENDS], default="torch",
                        help="torch, or the export's ONNX graph: onnx (fp32), onnx-int8 (into MODEL/eval-<backend>)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's own code (config.json auto_map); read it first")
    args = parser.parse_args(argv)
    results = evaluate(args.model, tasks=args.tasks, beir_dirs=args.beir, pairs_dir=args.data, out_dir=args.out,
                       bf16=args.bf16, batch_size=args.batch_size, update_card=not args.no_card, dims=args.dims,
                       quantize=args.quantize, backend=args.backend, trust_remote_code=args.trust_remote_code,
                       trust_flag="--trust-remote-code")
    print(results_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
