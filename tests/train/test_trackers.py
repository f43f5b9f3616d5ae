"""log.report_to (train.metrics): accelerate's TensorBoard and MLflow trackers get the same scalars, names and steps
as metrics.jsonl (which stays the record), offline, into <run.dir>/trackers; unknown or missing trackers are config
problems found before anything runs."""

from __future__ import annotations

import json
import shutil

import pytest

from gte_model.core.record import RECORD_FILE
from tests.train.tinydata import train_tiny, write_tiny_pairs
from train.checkpoint import list_checkpoints
from train.config import TrainConfig
from train.metrics import TRACKER_DIR, MetricsLogger, tracker_name, tracker_problems

pytest.importorskip("tensorboard", reason="log.report_to=[tensorboard] needs the trackers extra")
pytest.importorskip("mlflow", reason="log.report_to=[mlflow] needs the trackers extra")

RECORDS = [{"kind": "train", "step": s, "loss": 2.0 / (s + 1), "lr": 1e-5 * s, "tokens": 100 * s} for s in range(4)]
RECORDS.append({"kind": "eval", "step": 3, "ndcg@10": 0.5, "note": "text is not a scalar"})


def _jsonl_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if isinstance(value, (int, float)) and key != "step":
                out.setdefault(tracker_name(f"{record['kind']}/{key}"), []).append((record["step"], float(value)))
    return out


def _tensorboard_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, pytest.approx(e.value)) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def _mlflow_scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=(run_dir / TRACKER_DIR / "mlruns").resolve().as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "gte-test"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "run-a"
    return {key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
            for key in run.data.metrics}


def test_tensorboard_and_mlflow_get_the_scalars_of_metrics_jsonl(tmp_path):
    logger = MetricsLogger(tmp_path, {}, wandb="off", project="gte-test", name="run-a",
                           report_to=["tensorboard", "mlflow"])
    for record in RECORDS:
        logger.log(record)
    logger.close()
    expected = _jsonl_scalars(tmp_path)
    assert sorted(expected) == ["eval/ndcg_at_10", "train/loss", "train/lr", "train/tokens"]  # MLflow has no @
    assert _tensorboard_scalars(tmp_path / TRACKER_DIR / "gte-test") == expected
    assert _mlflow_scalars(tmp_path) == expected


def test_a_resumed_run_leaves_each_step_once_in_the_trackers_with_the_values_of_metrics_jsonl(tmp_path):
    pairs, run = write_tiny_pairs(tmp_path / "pairs"), tmp_path / "run"
    args = ("train.max_steps=6", "train.checkpoint_every=2", "train.keep_checkpoints=3", "train.eval_every=2",
            "log.report_to=[tensorboard,mlflow]", "log.project=gte-test", "run.name=run-a")
    assert train_tiny(run, pairs, *args) == 0
    # A kill after the step-2 checkpoint: steps 3..6 are in metrics.jsonl and the trackers, the next start resumes
    # at step 2 (later checkpoints never landed), and the kill tore the event file's last record.
    for step, path in list_checkpoints(run):
        if step > 2:
            shutil.rmtree(path)
    (run / RECORD_FILE).unlink()
    shutil.rmtree(run / "export")
    events = sorted((run / TRACKER_DIR / "gte-test").glob("events.out.tfevents.*"))
    assert events, sorted(p.relative_to(run) for p in (run / TRACKER_DIR).rglob("*"))
    with open(events[-1], "ab") as fh:
        fh.write(b"\x30\x00\x00\x00")  # half a record header
    assert train_tiny(run, pairs, *args) == 0
    expected = _jsonl_scalars(run)
    assert [s for s, _ in expected["train/loss"]] == [1, 2, 3, 4, 5, 6]  # resumed at 2: metrics.jsonl was cut back
    assert _tensorboard_scalars(run / TRACKER_DIR / "gte-test") == expected  # the redone steps' values, once
    # MLflow cannot cut its history: the same run keeps what it held, each step once (the loss of a redone step is
    # the same under exact resume; throughput is the first attempt's)
    held = _mlflow_scalars(run)
    assert {k: [s for s, _ in v] for k, v in held.items()} == {k: [s for s, _ in v] for k, v in expected.items()}
    assert held["train/loss"] == [(s, pytest.approx(v, rel=1e-5)) for s, v in expected["train/loss"]]


def test_unknown_or_misplaced_trackers_are_config_problems():
    assert tracker_problems(["tensorboard", "mlflow"]) == []
    assert tracker_problems(["tensorbord"]) == [
        "log.report_to: 'tensorbord' is not a tracker; choose from tensorboard, mlflow, comet_ml, aim, clearml, "
        "dvclive, swanlab, trackio"]
    assert tracker_problems(["wandb"])[0].startswith("log.report_to: wandb has its own setting; set log.wandb=on")
    cfg = TrainConfig()
    cfg.log.report_to = ["aim"]  # not installed here: named with the extra that brings it
    problems = [p for p in cfg.validate(world_size=1, zero_stage=0) if "report_to" in p]
    assert problems == ["log.report_to: aim is not installed; run `pip install -e .[trackers]` or leave aim out of "
                        "log.report_to"]
