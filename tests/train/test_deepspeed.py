"""DeepSpeed ZeRO-1 (gradient cache on) and ZeRO-2 (cache off: refused with ZeRO>=2) train the tiny config with 2
processes on the CPU, with the losses, gradient norms and final weights of 2-process DDP on the same batches.

Tolerance: losses rtol 1e-5, gradient norms rtol 1e-4, weights after 3 Adam steps max |diff| 1e-5 (fp32; the only
difference is the order of the reductions)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.train.test_distributed import free_port
from tests.train.tinydata import ROOT, subprocess_env, tiny_args, write_tiny_pairs
from train.metrics import read_metrics

OVERRIDES = ("train.max_steps=3", "optim.warmup_steps=1", "train.checkpoint_every=2", "train.eval_every=0",
             "data.val_rows=0")
# launcher config, gradient cache
RUNS = {"ddp": ("ddp", "true"), "zero1": ("deepspeed_zero1", "true"), "zero2": ("deepspeed_zero2", "false")}


def _require_deepspeed():
    if importlib.util.find_spec("deepspeed") is None:  # scripts/setup.sh installs the extra: CI must run this
        message = "deepspeed is not installed: pip install -e '.[deepspeed]'"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def launch_two(config: str, run_dir, pairs, *overrides: str) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file configs/accelerate/<config>.yaml --num_processes 2 -m train` on the CPU,
    as docs/cluster.md gives it."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / f"{config}.yaml"), "--num_processes", "2",
           "--main_process_port", str(free_port()), "-m", "train", *tiny_args(run_dir, pairs, *overrides)]
    # The first DeepSpeed run JIT-builds a small op with g++ (~25 s), cached under ~/.cache/torch_extensions.
    return subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=540)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    _require_deepspeed()
    tmp = tmp_path_factory.mktemp("deepspeed")
    pairs = write_tiny_pairs(tmp / "pairs")
    out = {}
    for name, (config, cache) in RUNS.items():
        proc = launch_two(config, tmp / name, pairs, *OVERRIDES, f"train.grad_cache={cache}")
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
        out[name] = (tmp / name, proc)
    return out


def _own_lines(proc) -> list[str]:
    """Our stdout lines: without DeepSpeed's start-up lines (the launcher's one accelerator probe warning, as
    accelerate launch imports DeepSpeed for a DeepSpeed config; each rank's "op built" line from its group set-up).
    The training processes name the CPU accelerator and print no probe warning."""
    probe = [line for line in proc.stdout.splitlines() if "Setting accelerator to CPU" in line]
    assert len(probe) <= 1, probe
    return [line for line in proc.stdout.splitlines() if line not in probe and not line.startswith("DeepSpeed ")]


def _train_lines(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("name", ["zero1", "zero2"])
def test_deepspeed_with_two_processes_matches_ddp(runs, name):
    (ds_dir, proc), (ddp_dir, _) = runs[name], runs["ddp"]
    stage = name[-1]
    # The micro batch comes from DeepSpeed's own world size (it refused 16 != 16 * 1 * 2 before), and it says so.
    assert _own_lines(proc)[0] == (f"gte train: world_size=2 (DeepSpeed ZeRO-{stage} over gloo on cpu), "
                                   "8 pairs per process of train.global_batch_size=16")
    # A DeepSpeed engine checkpoint with the optimizer state partitioned over both ranks: ZeRO really ran.
    engine = ds_dir / "checkpoints" / "step-0000002" / "deepspeed"
    assert (engine / "latest").is_file()
    assert len(list(engine.glob("*/zero_pp_rank_[01]_mp_rank_00_optim_states.pt"))) == 2
    ds, ddp = _train_lines(ds_dir), _train_lines(ddp_dir)
    assert [r["rows_crc"] for r in ds] == [r["rows_crc"] for r in ddp] and len(ds) == 3
    np.testing.assert_allclose([r["loss"] for r in ds], [r["loss"] for r in ddp], rtol=1e-5)
    np.testing.assert_allclose([r["grad_norm"] for r in ds], [r["grad_norm"] for r in ddp], rtol=1e-4)
    ds_weights, ddp_weights = (load_file(d / "export" / "model.safetensors") for d in (ds_dir, ddp_dir))
    assert ds_weights.keys() == ddp_weights.keys()
    worst = max(float(np.abs(ds_weights[k] - ddp_weights[k]).max()) for k in ddp_weights)
    assert worst < 1e-5, worst


@pytest.mark.slow
@pytest.mark.distributed
def test_ddp_launch_says_two_processes_over_gloo(runs):
    _, proc = runs["ddp"]
    assert proc.stdout.splitlines()[0] == ("gte train: world_size=2 (DDP over gloo on cpu), 8 pairs per process of "
                                           "train.global_batch_size=16")
    assert "Setting accelerator to CPU" not in proc.stdout + proc.stderr
    assert "\r" not in proc.stderr and "train: 3/3 step (100%)" in proc.stderr  # off a terminal: log lines
