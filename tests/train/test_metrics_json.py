"""metrics.jsonl is strict JSON with one line per step: a skipped step's non-finite loss is null and named in
`non_finite`, read back as the float; a skipped step is its skipped line only; a full disk names the file."""

from __future__ import annotations

import errno
import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from gte_model.core.errors import user_message
from tests.train.tinydata import tiny_args, write_tiny_pairs
from train.app.cli import main as gte
from train.metrics import METRICS_FILE, MetricsLogger, plot_metrics, read_metrics


def _strict(line: str) -> dict:
    def refuse(constant: str):
        raise AssertionError(f"{constant} is not JSON: {line}")

    return json.loads(line, parse_constant=refuse)


def test_non_finite_values_are_null_and_named_and_read_back_as_floats(tmp_path):
    logger = MetricsLogger(tmp_path, {}, wandb="off")
    logger.log({"kind": "skipped", "step": 3, "loss": float("nan"), "lr": np.float32(0.5),
                "grad_norm": torch.tensor(float("inf")).item(), "rows": np.int64(7)})
    logger.close()
    line = _strict((tmp_path / METRICS_FILE).read_text())
    assert line == {"kind": "skipped", "step": 3, "loss": None, "lr": 0.5, "grad_norm": None, "rows": 7,
                    "non_finite": {"loss": "nan", "grad_norm": "inf"}}
    (back,) = read_metrics(tmp_path / METRICS_FILE)
    assert math.isnan(back["loss"]) and back["grad_norm"] == math.inf and "non_finite" not in back


def test_a_diverging_run_logs_strict_json_and_each_step_once(tmp_path, capsys):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    run = tmp_path / "run"
    code = gte(["train", *tiny_args(run, pairs, "optim.lr=1e6", "train.max_steps=15", "optim.warmup_steps=2",
                                    "train.eval_every=0", "data.val_rows=0", "train.checkpoint_every=0",
                                    f"data.cache_dir={tmp_path / 'cache'}")])
    assert code == 2 and "train stopped at step" in capsys.readouterr().err
    lines = [_strict(text) for text in (run / METRICS_FILE).read_text().splitlines()]
    steps = [r["step"] for r in lines if r["kind"] in ("train", "skipped")]
    assert len(steps) == len(set(steps)), f"a step logged twice: {lines}"
    skipped = [r for r in lines if r["kind"] == "skipped"]
    assert len(skipped) == 3 and all(r["loss"] is None and r["non_finite"]["loss"] == "nan" for r in skipped)
    assert all(math.isfinite(r["loss"]) for r in lines if r["kind"] == "train")
    assert plot_metrics(run / METRICS_FILE, tmp_path / "metrics.png") is not None  # the plot reads them


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root (CI runs as root)")
def test_a_full_disk_while_logging_names_metrics_jsonl(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], check=True)
    logger = MetricsLogger(disk / "run", {}, wandb="off")
    try:
        _fill(disk / "filler")
        with pytest.raises(OSError) as caught:
            logger.log({"kind": "train", "step": 1, "loss": 1.0})
        assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(disk / "run" / METRICS_FILE)
        assert user_message(caught.value).startswith(f"{disk / 'run' / METRICS_FILE}: No space left on device")
    finally:
        (disk / "filler").unlink()
        logger.close()
        subprocess.run(["umount", str(disk)], check=True)


def _fill(path: Path) -> None:
    """Write zeros until the file system is full."""
    with open(path, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
