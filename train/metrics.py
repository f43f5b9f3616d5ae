"""Run logging: <run.dir>/metrics.jsonl always, wandb when available, and a loss / learning-rate PNG.

Only the main process logs; other ranks get a NullLogger with the same methods. On resume the JSONL is cut back
to the byte offset stored in the checkpoint, so lines of steps that are redone never appear twice.

Every line is strict JSON (what jq, pandas and JSON.parse accept): a non-finite number (the loss of a skipped step)
is written as null and named in the line's `non_finite` field, {"loss": "nan"}; read_metrics turns it back into
the float. One line per step number and kind: a train line covers the applied steps since the previous one (its
`loss/<source>` keys: the mean loss of each source's steps among them), a skipped step has a `skipped` line of its own.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path

from gte_model.core.atomic import write_text
from gte_model.core.errors import extra_problem, import_extra, names_path

METRICS_FILE = "metrics.jsonl"
NON_FINITE = "non_finite"  # {key: "nan" | "inf" | "-inf"} of the values a line writes as null
PLOT_FILE = "metrics.png"
SOURCE_LOSS = "loss/"  # loss/<source> in a train line: the mean loss of that source's steps in it


class NullLogger:
    """What non-main ranks log with: nothing."""

    def log(self, record: dict) -> None:
        pass

    def offset(self) -> int:
        return 0

    def plot(self) -> Path | None:
        return None

    def close(self) -> None:
        pass


class MetricsLogger(NullLogger):
    """metrics.jsonl (+ wandb): one JSON object per line, each with a `kind` (train, eval, ...) and a `step`."""

    def __init__(self, run_dir: str | Path, config: dict, resume_offset: int = 0, wandb: str = "auto",
                 project: str = "gte-train", name: str = "", report_to: Sequence[str] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        truncate(self.path, resume_offset)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._wandb = _start_wandb(wandb, project, name or self.run_dir.name, self.run_dir, config)
        # (tracker, {name: last step it holds}): a resumed run sends each tracker only the steps it lacks
        self._trackers = start_trackers(report_to, project, name or self.run_dir.name, self.run_dir,
                                        last_step(self.path) if report_to else -1)

    def log(self, record: dict) -> None:
        with names_path(self.path):  # a full disk names metrics.jsonl, not `?`
            self._fh.write(to_json_line(record))
            self._fh.flush()  # a killed run keeps every line up to its last step
        numbers = {f"{record.get('kind', 'train')}/{k}": v for k, v in record.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
        if self._wandb is not None:
            self._wandb.log(numbers, step=int(record.get("step", 0)))
        if self._trackers:  # the same scalars and steps, under names every tracker accepts
            step = int(record.get("step", 0))
            named = {tracker_name(k): v for k, v in numbers.items()}
            for tracker, held in self._trackers:
                if fresh := {k: v for k, v in named.items() if step > held.get(k, -1)}:
                    tracker.log(fresh, step=step)

    def offset(self) -> int:
        """Byte position after the last line: what a checkpoint stores to cut the log back on resume."""
        self._fh.flush()
        return self._fh.tell()

    def plot(self) -> Path | None:
        return plot_metrics(self.path, self.run_dir / PLOT_FILE)

    def close(self) -> None:
        self._fh.close()
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        for tracker, _ in self._trackers:
            tracker.finish()
        self._trackers = []


def open_logger(is_main: bool, run_dir: str | Path, config: dict, resume_offset: int, wandb: str, project: str,
                name: str, report_to: Sequence[str] = ()) -> NullLogger:
    if not is_main:
        return NullLogger()
    return MetricsLogger(run_dir, config, resume_offset, wandb, project, name, report_to)


def truncate(path: Path, offset: int) -> None:
    """Cut `path` back to `offset` bytes (0 on a fresh start: lines of a run killed before its first checkpoint
    are dropped, since that run is redone from step 0)."""
    if path.is_file() and path.stat().st_size > offset:
        with open(path, "r+b") as fh:
            fh.truncate(offset)


def last_step(path: Path) -> int:
    """The highest step a metrics.jsonl holds (-1: none): after the cut on resume, the last step kept."""
    return max((int(r.get("step", 0)) for r in read_metrics(path)), default=-1)


def to_json_line(record: dict) -> str:
    """One strict-JSON line: non-finite numbers become null, named with their value in `non_finite`."""
    out, odd = {}, {}
    for key, value in record.items():
        if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
            value = float(value)  # numpy and torch scalars too
            if not math.isfinite(value):
                odd[key], value = str(value), None  # "nan", "inf", "-inf"
        out[key] = value
    if odd:
        out[NON_FINITE] = odd
    return json.dumps(out, default=_plain, allow_nan=False) + "\n"


def _plain(value) -> int | float:
    """numpy and torch scalars as JSON numbers (integers stay integers)."""
    return int(value) if isinstance(value, numbers.Integral) else float(value)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl, non-finite values restored as floats (lines written before they were
    nulled, with a bare NaN, read too)."""
    path = Path(path)
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for record in records:
        record.update({key: float(value) for key, value in record.pop(NON_FINITE, {}).items()})
    return records


# Why the two curves sit at different heights (Trainer.validate): read each one's trend, not one against the other.
VAL_NOTE = ("validation differs from train loss: dev pairs, in-batch negatives only\n(no hard negatives, "
            "no distillation, no dropout), batches of min(global_batch_size,\nval_rows): compare it with itself "
            "across steps, not with train loss")


DEV_NDCG = "val_ndcg@10"  # train.trainer's in-batch nDCG@10 of the dev rows (train.best_metric's usual choice)


def plot_losses(ax, train: list[dict], evals: list[dict]) -> None:
    """Train loss of each source (one source per batch: a single curve jumps between sources), the trailing mean
    of all over ~10% of the points (the trend), and validation loss, on a matplotlib axis; the dev nDCG@10 on a
    right-hand axis of its own where the eval lines have it."""
    steps, losses = [r["step"] for r in train], [r["loss"] for r in train]
    for source, (at, values) in source_curves(train).items():
        ax.plot(at, values, lw=0.9, marker=".", ms=3, alpha=0.8, label=f"train loss: {source}")
    if train:
        window = max(1, len(losses) // 10)
        csum = [0.0]
        for x in losses:
            csum.append(csum[-1] + x)
        trend = [(csum[i + 1] - csum[max(0, i + 1 - window)]) / min(window, i + 1) for i in range(len(losses))]
        ax.plot(steps, trend, lw=2, color="black", alpha=0.6, label=f"train loss (all sources), mean of last {window}")
    if evals:
        ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange",
                label="validation loss (dev pairs)")
    ax.grid(alpha=0.3)
    ax.legend(title=VAL_NOTE if evals else None, title_fontsize=7, fontsize=8, alignment="left")
    scored = [r for r in evals if DEV_NDCG in r]
    if scored:  # the dev curve that train.best_metric picks the exported step from, on its own scale
        right = ax.twinx()
        right.plot([r["step"] for r in scored], [r[DEV_NDCG] for r in scored], "s--", color="tab:green",
                   label="dev nDCG@10 (in-batch, right axis)")
        right.set_ylabel("dev nDCG@10")
        right.legend(loc="upper center", fontsize=8)


def source_curves(train: list[dict]) -> dict[str, tuple[list[int], list[float]]]:
    """{source: (steps, losses)} from the train lines' loss/<source> keys; lines written before those keys give
    their own source and loss (exact with train.log_every=1)."""
    curves: dict[str, tuple[list[int], list[float]]] = {}
    for r in train:
        found = {k[len(SOURCE_LOSS):]: v for k, v in r.items() if k.startswith(SOURCE_LOSS)}
        for source, value in (found or ({r["source"]: r["loss"]} if "source" in r else {})).items():
            curves.setdefault(source, ([], []))
            curves[source][0].append(r["step"])
            curves[source][1].append(value)
    return dict(sorted(curves.items()))


def plot_metrics(jsonl: str | Path, png: str | Path) -> Path | None:
    """Train loss (and validation loss) and learning rate against the step, as a PNG; None with no lines."""
    records = read_metrics(jsonl)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval" and "val_loss" in r]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    plot_losses(ax_loss, train, evals)
    ax_loss.set_ylabel("loss")
    ax_lr.plot([r["step"] for r in train], [r["lr"] for r in train], color="tab:orange", lw=1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    tmp = Path(png).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, png)
    return Path(png)


# log.report_to name -> the module accelerate's tracker imports (wandb has its own setting, log.wandb)
TRACKERS = {"tensorboard": "tensorboard", "mlflow": "mlflow", "comet_ml": "comet_ml", "aim": "aim",
            "clearml": "clearml", "dvclive": "dvclive", "swanlab": "swanlab", "trackio": "trackio"}
TRACKER_DIR = "trackers"
MLFLOW_RUN_FILE = "mlflow_run_id"  # in <run.dir>/trackers: the MLflow run a resumed training logs into again
# the user's MLflow server, if any, read before mlflow.set_tracking_uri (which exports the variable) runs here: a
# second run in this process (gte run's stage 2) gets its own file store, not the first one's
_USER_MLFLOW_URI = os.environ.get("MLFLOW_TRACKING_URI")


def tracker_name(key: str) -> str:
    """A metric's name for the report_to trackers: MLflow takes only letters, digits and _-. :/ (ndcg@10 ->
    ndcg_at_10), and its file store makes each / a folder, so only the kind's / stays (train/loss/pydocs ->
    train/loss.pydocs, beside train/loss)."""
    kind, sep, name = key.partition("/")
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", kind + sep + name.replace("/", ".").replace("@", "_at_"))


def tracker_problems(report_to: Sequence[str]) -> list[str]:
    """Why log.report_to would fail (an unknown name, a package that is not installed), found without importing."""
    problems = []
    for name in report_to:
        if name == "wandb":
            problems.append("log.report_to: wandb has its own setting; set log.wandb=on and leave it out of report_to")
        elif name not in TRACKERS:
            problems.append(f"log.report_to: {name!r} is not a tracker; choose from {', '.join(TRACKERS)}")
        else:
            problems.append(extra_problem(TRACKERS[name], "log.report_to", "trackers",
                                          f"leave {name} out of log.report_to", package=name))
    return [p for p in problems if p]


def start_trackers(report_to: Sequence[str], project: str, name: str, run_dir: Path, kept_step: int = -1) -> list:
    """accelerate's trackers for the names in report_to, started, logging under <run_dir>/trackers: TensorBoard
    event files in trackers/<project>, an MLflow file store in trackers/mlruns (unless MLFLOW_TRACKING_URI says
    otherwise); returns [(tracker, {name: last step it holds})]. A resumed run (kept_step: the last step
    metrics.jsonl kept) cuts the TensorBoard files back to kept_step, as metrics.jsonl is cut, and logs into the same
    MLflow run, which keeps what it holds (its history cannot be cut): only later steps are sent to it."""
    if not report_to:
        return []
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    folder = run_dir / TRACKER_DIR
    trackers = []
    for tracker_name in report_to:
        import_extra(TRACKERS[tracker_name], "log.report_to", "trackers", f"leave {tracker_name} out of log.report_to",
                     package=tracker_name)
        cls = LOGGER_TYPE_TO_CLASS[tracker_name]
        if tracker_name == "mlflow" and not _USER_MLFLOW_URI:
            import mlflow

            # a file store needs no server nor database package (mlflow 3 keeps it behind this switch)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((folder / "mlruns").resolve().as_uri())
        if tracker_name == "tensorboard":
            truncate_tensorboard(folder / project, kept_step)
        tracker = cls(project, str(folder)) if cls.requires_logging_directory else cls(project)
        held, run_file = {}, folder / MLFLOW_RUN_FILE
        if tracker_name == "mlflow":
            tracker.run_name = name
            if not tracker.run_id and run_file.is_file():  # MLFLOW_RUN_ID, when set, still wins
                tracker.run_id = run_file.read_text().strip()
            tracker.start()
            write_text(run_file, tracker.active_run.info.run_id)
            held = _mlflow_last_steps(tracker.active_run.info.run_id)
        else:
            tracker.start()
        trackers.append((tracker, held))
    return trackers


def truncate_tensorboard(folder: Path, kept_step: int) -> None:
    """Cut the TensorBoard event files in folder back to kept_step: summaries of later steps (which a resumed run
    logs again) and a record torn by a kill are dropped, each file rewritten in place."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.summary.writer.record_writer import RecordWriter

    for path in sorted(folder.glob("events.out.tfevents.*")) if folder.is_dir() else []:
        records = list(RawEventFileLoader(str(path)).Load())
        kept = [r for r in records if not (e := Event.FromString(r)).HasField("summary") or e.step <= kept_step]
        if len(kept) == len(records) and path.stat().st_size == sum(len(r) + 16 for r in records):  # 16: framing
            continue
        tmp = folder / ".gte-truncating"  # no "tfevents" in the name: TensorBoard never reads it
        with open(tmp, "wb") as fh:
            writer = RecordWriter(fh)
            for record in kept:
                writer.write(record)
        os.replace(tmp, path)


def _mlflow_last_steps(run_id: str) -> dict[str, int]:
    """{metric: the last step the MLflow run holds}: empty for a new run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    return {key: max(m.step for m in client.get_metric_history(run_id, key))
            for key in client.get_run(run_id).data.metrics}


_WANDB_ON = dict(module="wandb", key="log.wandb=on", extra="wandb",
                 instead="set log.wandb=off (or auto: use it when installed)")


def missing_wandb(mode: str) -> str | None:
    """Why log.wandb=<mode> would fail for want of wandb (found without importing it), else None."""
    return extra_problem(**_WANDB_ON) if mode == "on" else None


def _start_wandb(mode: str, project: str, name: str, run_dir: Path, config: dict):
    """A wandb run, or None. auto: only when installed; offline without an API key (no login prompt)."""
    if mode == "off" or os.environ.get("WANDB_MODE") == "disabled":
        return None
    if mode == "on":  # asked for: its absence is the user's to fix, in one line
        wandb = import_extra(**_WANDB_ON)
    else:
        try:
            import wandb
        except ImportError:
            return None
    if not os.environ.get("WANDB_API_KEY") and "WANDB_MODE" not in os.environ:
        os.environ["WANDB_MODE"] = "offline"
    # One wandb run per run dir: a resumed run continues the same wandb run.
    id_file = run_dir / "wandb_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(6)
    id_file.write_text(run_id)
    return wandb.init(project=project, name=name, id=run_id, resume="allow", dir=str(run_dir), config=config)
