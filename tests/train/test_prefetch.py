"""The read-ahead (train.prefetch): the next step's batch is prepared in a background thread, and training is
bit-identical to preparing each batch when its step starts."""

from __future__ import annotations

import threading

import pytest
import torch

from gte_model.core.config import load_config
from tests.train.tinydata import TINY_CONFIG, write_tiny_pairs
from train.config import TrainConfig
from train.prefetch import ReadAhead
from train.trainer import Trainer


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs"))


def tiny_trainer(run_dir, pairs, *overrides: str) -> Trainer:
    cfg = load_config(TrainConfig, TINY_CONFIG, [f"run.dir={run_dir}", f"data.train_dir={pairs}", "log.wandb=off",
                                                 "data.val_rows=0", *overrides])
    return Trainer(cfg)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine's cores are shared
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("grad_cache", ["true", "false"])
def test_prefetch_trains_to_bit_identical_weights(tmp_path, pairs, one_thread, grad_cache):
    runs = []
    for prefetch in ("on", "off"):
        trainer = tiny_trainer(tmp_path / prefetch, pairs, f"train.prefetch={prefetch}", "train.max_steps=5",
                               f"train.grad_cache={grad_cache}")
        stats = [trainer.step(step) for step in range(5)]  # dropout on: the RNG stream must be untouched as well
        weights = {n: p.detach().clone() for n, p in trainer.gte.named_parameters()}
        runs.append(([(s.loss, s.source, s.rows, s.tokens) for s in stats], weights))
    (stats_on, weights_on), (stats_off, weights_off) = runs
    assert stats_on == stats_off
    assert weights_on.keys() == weights_off.keys()
    assert all(torch.equal(weights_on[n], weights_off[n]) for n in weights_on)


def test_read_ahead_serves_the_step_it_prepared_and_prepares_any_other_on_the_spot():
    calls = []

    def prepare(step):
        calls.append((step, threading.current_thread().name))
        if step == 9:
            raise ValueError("bad row")
        return step * 10

    ahead = ReadAhead(prepare, enabled=True)
    assert ahead.get(0) == 0 and calls[-1] == (0, threading.current_thread().name)
    ahead.start(1)
    ahead.wait()
    assert calls[-1][0] == 1 and calls[-1][1].startswith("gte-read-ahead")
    assert ahead.get(1) == 10 and len(calls) == 2  # served, not prepared again
    ahead.start(5)
    assert ahead.get(2) == 20  # a resume or a retry: the stale read-ahead is dropped
    assert [s for s, _ in calls] == [0, 1, 5, 2]
    ahead.start(9)
    with pytest.raises(ValueError, match="bad row"):  # the thread's error surfaces in the step that needed it
        ahead.get(9)
    ahead.start(4)
    ahead.close()  # drops the read-ahead: step 4 is prepared again when asked for
    assert ahead.get(4) == 40 and [s for s, _ in calls][-2:] == [4, 4]
    off = ReadAhead(prepare, enabled=False)
    off.start(3)
    assert off.get(3) == 30 and calls[-1] == (3, threading.current_thread().name)


def test_the_last_step_reads_nothing_ahead(tmp_path, pairs, one_thread):
    trainer = tiny_trainer(tmp_path, pairs, "train.max_steps=2", "optim.warmup_steps=1", "train.grad_cache=false",
                           "train.prefetch=on")
    trainer.step(0)
    assert trainer.read_ahead._pending[0] == 1
    trainer.step(1)
    assert trainer.read_ahead._pending is None


def test_auto_reads_ahead_on_cuda_only(tmp_path, pairs):
    trainer = tiny_trainer(tmp_path, pairs, "train.max_steps=2", "optim.warmup_steps=1")
    assert trainer.read_ahead.enabled is (trainer.accelerator.device.type == "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prepared_chunks_are_pinned_for_asynchronous_copies_on_cuda(tmp_path, pairs):
    for packed in ("true", "false"):
        trainer = tiny_trainer(tmp_path / packed, pairs, f"train.packed={packed}")
        ready = trainer.prepare(0)
        tensors = [t for c in ready.chunks for t in (c.__dict__ if packed == "true" else c).values()
                   if isinstance(t, torch.Tensor)]
        assert tensors and all(t.is_pinned() for t in tensors)
        assert torch.isfinite(torch.tensor(trainer.step(0).loss))
