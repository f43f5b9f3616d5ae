"""2 processes on gloo give the gradients of one process on the global batch (hard negatives, duplicate masking,
plain and cached steps); and the gather helpers are identities in one process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import make_tiny_model
from tests.train import dist_worker
from train.distributed import all_reduce_mean, gather_nograd, gather_with_grad, local_rows, world
from train.objective import make_loss_fn
from train.step import make_chunks, plain_step

WORKER = Path(dist_worker.__file__)
ROOT = WORKER.parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process(model_dir: Path, kind: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference: the whole global batch in one process, one forward, no gather."""
    model = make_tiny_model(model_dir, seed=0).eval()
    batch = dist_worker.local_batch(slice(None))
    texts = batch.queries + batch.documents()
    chunks, order = make_chunks(model.tokenize_ids(texts), len(texts), model.tokenizer.pad_token_id)
    teacher = dist_worker.teacher_vectors(batch, kind)
    loss_fn = make_loss_fn(batch, order, dist_worker.loss_config(kind), "cpu", teacher)
    loss = plain_step(lambda c: model(**c), chunks, loss_fn)
    return loss, {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory):
    out, model_dir = tmp_path_factory.mktemp("dist-out"), tmp_path_factory.mktemp("dist-model")
    accelerate = Path(sys.executable).parent / "accelerate"
    # --multi_gpu selects accelerate's torchrun launcher; the worker's Accelerator(cpu=True) then picks gloo.
    # (`accelerate launch --cpu --num_processes 2` starts ONE process: its simple launcher expects mpirun.)
    command = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port())]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    command += [str(WORKER), str(out), str(model_dir)]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt") for r in range(2)], model_dir


@pytest.mark.distributed
@pytest.mark.parametrize("mode", [f"{kind}-{step}" for kind, step in dist_worker.MODES])
def test_two_processes_give_the_single_process_gradients_with_hard_negatives(two_rank_results, mode):
    ranks, model_dir = two_rank_results
    loss, grads = single_process(model_dir, mode.split("-")[0])
    assert ranks[0][mode][2] == (3 if mode.endswith("cached") else 1)  # chunks per rank: the cache really chunked
    for rank_loss, rank_grads, _ in (results[mode] for results in ranks):
        assert torch.allclose(rank_loss, loss, rtol=1e-5, atol=1e-6)  # mean of the ranks' losses = global loss
        assert rank_grads.keys() == grads.keys() and len(grads) > 10
        for name, grad in grads.items():
            assert torch.allclose(rank_grads[name], grad, rtol=1e-4, atol=1e-5), (mode, name)


def test_gather_helpers_are_identities_in_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert world() == (0, 1) and local_rows(3) == slice(0, 3)
    assert gather_with_grad(x) is x and torch.equal(gather_nograd(x), x)
    mean = all_reduce_mean(x)
    assert torch.equal(mean, x) and mean is not x and not mean.requires_grad


@pytest.mark.distributed
def test_a_launch_that_asked_for_two_processes_and_got_one_says_so(tmp_path):
    """`accelerate launch --cpu --num_processes 2` (once the documented CPU check) starts ONE process."""
    from tests.train.tinydata import subprocess_env, tiny_args, write_tiny_pairs

    pairs = write_tiny_pairs(tmp_path / "pairs")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
               "--main_process_port", str(free_port()), "-m", "train",
               *tiny_args(tmp_path / "run", pairs, "train.max_steps=1", "optim.warmup_steps=0", "data.val_rows=0")]
    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[0].startswith("gte train: world_size=1 (single process on cpu)")
    assert "the launcher asked for several processes but started 1" in done.stderr
    assert "accelerate launch --multi_gpu --num_processes N" in done.stderr
