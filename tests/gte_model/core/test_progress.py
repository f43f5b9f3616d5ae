"""Off a terminal (SLURM, CI, a pipe) progress is whole log lines, never a carriage-return bar; on a terminal it is
tqdm's bar."""

from __future__ import annotations

import io
import subprocess
import sys

import torch

from gte_model.core.progress import LineProgress, progress
from tests.train.tinydata import ROOT, subprocess_env, tiny_args, write_tiny_pairs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_progress_prints_whole_lines_with_count_rate_and_postfix():
    log = io.StringIO()
    with progress(total=4, initial=1, desc="train", unit="step", every_s=0, stream=log) as bar:
        assert isinstance(bar, LineProgress)
        for loss in (3.5, 3.25, 3.0):
            bar.set_postfix(loss=f"{loss:.2f}")
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 3
    assert lines[0].startswith("train: 2/4 step (50%), ") and lines[0].endswith("loss=3.50")
    assert lines[-1].startswith("train: 4/4 step (100%), ") and " step/s" in lines[-1]


def test_lines_come_at_most_every_interval_and_the_last_count_always_shows():
    log = io.StringIO()
    for _ in progress(range(500), desc="encode", unit="batch", every_s=3600, stream=log):
        pass
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == ["encode: 1/500 batch (0%)",
                                                                          "encode: 500/500 batch (100%)"]


def test_a_disabled_progress_prints_nothing_and_a_terminal_gets_the_tqdm_bar():
    log = io.StringIO()
    with progress(total=3, desc="train", unit="step", disable=True, every_s=0, stream=log) as bar:
        bar.update(3)
    assert log.getvalue() == ""
    term = Terminal()
    with progress(total=3, desc="train", unit="step", stream=term) as bar:
        bar.update(3)
    assert "\r" in term.getvalue() and "3/3" in term.getvalue()


def test_a_logged_training_run_has_no_carriage_returns_and_no_deepspeed_probe_warning(tmp_path):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    args = tiny_args(tmp_path / "run", pairs, "train.max_steps=2", "optim.warmup_steps=1", "train.eval_every=0",
                     "data.val_rows=0")
    env = {k: v for k, v in subprocess_env().items() if k != "DS_ACCELERATOR"}
    done = subprocess.run([sys.executable, "-m", "train", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "\r" not in output and "train: 2/2 step (100%)" in done.stderr
    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert done.stdout.splitlines()[0] == (f"gte train: world_size=1 (single process on {device}), 16 pairs per "
                                           "process of train.global_batch_size=16")
    if device == "cpu":  # without any accelerator DeepSpeed is told so, and its probe stays silent
        assert "Setting accelerator to CPU" not in output
