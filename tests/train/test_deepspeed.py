"""DeepSpeed ZeRO-1 runs the tiny config on the CPU, gradient cache on, with the same losses and gradient norms as
the plain step without DeepSpeed (the engine must not step per chunk nor drop the gradients of early chunks)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.train.tinydata import ROOT, subprocess_env, tiny_args, write_tiny_pairs
from train.app.cli import main as gte
from train.metrics import read_metrics

OVERRIDES = ("train.max_steps=3", "optim.warmup_steps=1", "train.checkpoint_every=2", "train.eval_every=0",
             "data.val_rows=0")


def _train_lines(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.slow
@pytest.mark.distributed
def test_zero1_with_grad_cache_matches_the_plain_step_without_deepspeed(tmp_path):
    if importlib.util.find_spec("deepspeed") is None:  # scripts/setup.sh installs the extra: CI must run this
        message = "deepspeed is not installed: pip install -e '.[deepspeed]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    pairs = write_tiny_pairs(tmp_path / "pairs")
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "deepspeed_zero1.yaml"), "--num_processes", "1", "-m", "train",
           *tiny_args(tmp_path / "zero1", pairs, *OVERRIDES, "train.grad_cache=true")]
    # The first run JIT-builds a small DeepSpeed op with g++ (~25 s), cached under ~/.cache/torch_extensions.
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=540)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # A DeepSpeed engine checkpoint, not accelerate's plain one: DeepSpeed really ran.
    assert (tmp_path / "zero1" / "checkpoints" / "step-0000002" / "deepspeed" / "latest").is_file()

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess: the test machine's cores are shared
    try:
        assert gte(["train", *tiny_args(tmp_path / "plain", pairs, *OVERRIDES, "train.grad_cache=false")]) == 0
    finally:
        torch.set_num_threads(threads)
    zero1, plain = _train_lines(tmp_path / "zero1"), _train_lines(tmp_path / "plain")
    assert [r["rows_crc"] for r in zero1] == [r["rows_crc"] for r in plain]
    np.testing.assert_allclose([r["loss"] for r in zero1], [r["loss"] for r in plain], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in zero1], [r["grad_norm"] for r in plain], rtol=1e-4)
