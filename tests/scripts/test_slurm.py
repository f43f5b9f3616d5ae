"""scripts/slurm_multinode.sbatch, run verbatim on the CPU with stub `sbatch`, `srun` and `scontrol` that emulate a
2-node allocation on this machine (1 process per "node", DDP over gloo): SIGUSR1 to the batch shell (SLURM's
--signal=B:USR1 notice) -> SIGTERM through srun to both launchers -> a checkpoint -> exit 75 -> `scontrol requeue`
-> the requeued job resumes and ends with the weights and data order of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.train.test_distributed import free_port
from tests.train.tinydata import ROOT, subprocess_env, tiny_args, write_tiny_pairs
from train.metrics import read_metrics

SCRIPT = ROOT / "scripts" / "slurm_multinode.sbatch"
OVERRIDES = ("train.max_steps=12", "optim.warmup_steps=2", "train.checkpoint_every=0", "train.eval_every=0",
             "data.val_rows=0")

# srun: records its options, starts the command once per node with that node's SLURM_* variables, forwards SIGTERM
# to every copy (as srun forwards signals to its tasks), and with --kill-on-bad-exit ends the rest when one fails.
SRUN = """#!{python}
import json, os, signal, subprocess, sys, time
args = sys.argv[1:]
opts = []
while args[0].startswith("--"):
    opts.append(args.pop(0))
with open(os.environ["STUB_LOG"], "a") as fh:
    fh.write(json.dumps(["srun", *opts]) + "\\n")
nodes = int(os.environ["SLURM_NNODES"])
cpus = [o.split("=", 1)[1] for o in opts if o.startswith("--cpus-per-task=")]
tasks = []
for node in range(nodes):
    env = dict(os.environ, SLURM_NODEID=str(node), SLURM_PROCID=str(node), SLURM_LOCALID="0",
               SLURM_STEP_NUM_TASKS=str(nodes), SLURM_CPUS_PER_TASK=cpus[0] if cpus else "1")
    tasks.append(subprocess.Popen(args, env=env))
signal.signal(signal.SIGTERM, lambda s, f: [t.send_signal(s) for t in tasks if t.poll() is None])
while any(t.poll() is None for t in tasks):
    if "--kill-on-bad-exit=1" in opts and any(t.poll() not in (None, 0) for t in tasks):
        [t.kill() for t in tasks if t.poll() is None]
    time.sleep(0.05)
codes = [t.returncode if t.returncode >= 0 else 128 - t.returncode for t in tasks]
sys.exit(max(codes))
"""

SCONTROL = """#!/usr/bin/env bash
echo "[\\"scontrol\\", \\"$*\\"]" >> "$STUB_LOG"
case "$1" in
    show) printf '127.0.0.1\\n127.0.0.1\\n' ;;  # both "nodes" are this machine
    requeue) touch "$STUB_DIR/requeued" ;;
esac
"""

# sbatch --wait, in effect: runs the batch script with the job's variables in the submit directory, writes the
# batch shell's pid (the test signals it, as SLURM's B:USR1 would), and runs it again while it asked for a requeue.
SBATCH = """#!/usr/bin/env bash
export SLURM_JOB_ID=4242 SLURM_JOB_NODELIST="node[1-2]" SLURM_NNODES=2 SLURM_CPUS_PER_TASK=1
export SLURM_SUBMIT_DIR="$PWD" SLURM_RESTART_COUNT=0
while :; do
    rm -f "$STUB_DIR/requeued"
    bash "$@" & echo $! > "$STUB_DIR/batch.pid"
    wait $! && rc=0 || rc=$?
    echo "[\\"job\\", \\"exit $rc\\"]" >> "$STUB_LOG"
    [ -e "$STUB_DIR/requeued" ] || exit $rc
    SLURM_RESTART_COUNT=$((SLURM_RESTART_COUNT + 1))
done
"""


def write_stubs(folder: Path) -> Path:
    folder.mkdir()
    for name, text in (("srun", SRUN.format(python=sys.executable)), ("scontrol", SCONTROL), ("sbatch", SBATCH)):
        (folder / name).write_text(text)
        (folder / name).chmod(0o755)
    return folder


def _train_order(run_dir):
    lines = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    return [(r["step"], r["rows_crc"]) for r in lines]


@pytest.mark.slow
@pytest.mark.distributed
def test_sbatch_script_on_two_stub_nodes_is_preempted_requeued_and_resumes_to_the_straight_weights(tmp_path):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    stubs, run_dir, straight = write_stubs(tmp_path / "stubs"), tmp_path / "run", tmp_path / "straight"
    env = {**subprocess_env(), "PATH": f"{stubs}:{os.environ['PATH']}", "STUB_DIR": str(stubs),
           "STUB_LOG": str(stubs / "log"), "NUM_GPUS": "1", "PORT": str(free_port()),
           "ACCELERATE": str(Path(sys.executable).parent / "accelerate")}
    args = [str(a) for a in tiny_args(run_dir, pairs, *OVERRIDES)]
    job = subprocess.Popen(["sbatch", str(SCRIPT), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    metrics, deadline = run_dir / "metrics.jsonl", time.monotonic() + 240
    while job.poll() is None and time.monotonic() < deadline:  # SLURM's notice once a few steps are logged
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.02)
    assert job.poll() is None, "".join(job.communicate())[-3000:]  # still running: the notice lands mid-run
    os.kill(int((stubs / "batch.pid").read_text()), signal.SIGUSR1)
    out, err = job.communicate(timeout=300)
    assert job.returncode == 0, out[-2000:] + err[-3000:]

    calls = [json.loads(line) for line in (stubs / "log").read_text().splitlines()]
    # srun got the cores (not inherited since Slurm 22.05), the job requeued itself once, then finished.
    srun = ["srun", "--kill-on-bad-exit=1", "--ntasks-per-node=1", "--cpus-per-task=1"]
    assert [c for c in calls if c[0] == "srun"] == [srun, srun]
    assert [c for c in calls if c[0] != "srun"] == [["scontrol", "show hostnames node[1-2]"],
                                                    ["scontrol", "requeue 4242"], ["job", "exit 75"],
                                                    ["scontrol", "show hostnames node[1-2]"], ["job", "exit 0"]]
    assert "SIGTERM received" in out and "requeueing job 4242 to resume" in out and "resuming from" in out
    assert out.count("gte train: world_size=2 (DDP over gloo on cpu), 8 pairs per process") == 2

    # The reference: the same 2 processes on the same global batches, uninterrupted (each rank draws its own dropout,
    # so one process would differ).
    straight_cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", str(free_port()), "-m", "train", *tiny_args(straight, pairs, *OVERRIDES)]
    done = subprocess.run(straight_cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _train_order(run_dir) == _train_order(straight)
    a, b = (load_file(d / "export" / "model.safetensors") for d in (straight, run_dir))
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst < 1e-6, worst
