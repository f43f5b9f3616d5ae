"""train.compile: bucketed chunk shapes (filler rows that change no real embedding), and a compiled encoder that
trains like the eager one. On the CPU the compiled tests use the aot_eager backend (dynamo + AOT autograd, no C++
build); the CUDA test runs the product's inductor backend."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import train.trainer as trainer_mod
from gte_model import Packed
from gte_model.core.config import load_config
from tests.conftest import make_tiny_model
from tests.train.tinydata import TINY_CONFIG, write_tiny_pairs
from train.config import TrainConfig
from train.step import BUCKET_TOKENS, BUCKET_WIDTH, make_chunks


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs"))


def lengths_of(n_rows, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, 120, (n_rows,), generator=g).tolist()


def test_bucketed_packed_chunks_are_filled_to_a_multiple_of_256_tokens_by_short_filler_rows():
    ids = [[5] * n for n in lengths_of(40)]
    plain, order = make_chunks(ids, chunk_size=16, pad_id=0, max_tokens=1000, packed=True)
    bucketed, order_b = make_chunks(ids, chunk_size=16, pad_id=0, max_tokens=1000, packed=True, bucket=True)
    assert torch.equal(order, order_b) and len(plain) == len(bucketed)
    for a, b in zip(plain, bucketed):
        assert isinstance(b, Packed) and b.input_ids.numel() % BUCKET_TOKENS == 0
        assert b.input_ids.numel() - a.input_ids.numel() < BUCKET_TOKENS
        assert b.real_rows == len(a) and torch.equal(b.lengths[: len(a)], a.lengths)
        assert torch.equal(b.input_ids[: a.input_ids.numel()], a.input_ids)
        assert (b.input_ids[a.input_ids.numel() :] == 0).all()  # filler is pad_id
        assert b.max_seqlen == a.max_seqlen  # filler rows are no longer than the chunk's longest text


def test_bucketed_padded_chunks_round_widths_up_to_a_multiple_of_64():
    ids = [[5] * n for n in lengths_of(40, seed=1)]
    chunks, _ = make_chunks(ids, chunk_size=8, pad_id=0, max_tokens=2048, bucket=True)
    widths = {c["input_ids"].shape[1] for c in chunks}
    assert widths <= {64, 128} and all(w % BUCKET_WIDTH == 0 for w in widths)


def test_filler_rows_change_no_real_embedding(tmp_path):
    model = make_tiny_model(tmp_path).eval()
    ids = model.tokenize_ids(["the cat plays piano", "a", "stock price fell today", "python package library"])
    (plain,), _ = make_chunks(ids, 8, model.tokenizer.pad_token_id, packed=True)
    (bucketed,), _ = make_chunks(ids, 8, model.tokenizer.pad_token_id, packed=True, bucket=True)
    assert bucketed.fill_rows > 0
    with torch.no_grad():
        want, got = model(packed=plain), model(packed=bucketed)[: bucketed.real_rows]
    assert torch.allclose(got, want, atol=1e-6), (got - want).abs().max()


def tiny_trainer(run_dir, pairs, *overrides: str):
    cfg = load_config(TrainConfig, TINY_CONFIG, [f"run.dir={run_dir}", f"data.train_dir={pairs}", "log.wandb=off",
                                                 "data.val_rows=0", "train.max_steps=3", "optim.warmup_steps=1",
                                                 *overrides])
    return trainer_mod.Trainer(cfg)


def run_steps(trainer, steps, dropout=None):
    """Losses of `steps` steps and the gradients of the first (recorded before its update)."""
    if dropout is not None:
        for m in trainer.gte.modules():
            if isinstance(m, nn.Dropout):
                m.p = dropout
    grads, update = [], trainer.updater.update

    def recording(loss, lr):
        if not grads:
            grads.append({n: p.grad.clone() for n, p in trainer.gte.named_parameters() if p.grad is not None})
        return update(loss, lr)

    trainer.updater.update = recording
    return [trainer.step(s).loss for s in range(steps)], grads[0]


def assert_close(a, b, loss_tol, grad_tol):
    (losses_a, grads_a), (losses_b, grads_b) = a, b
    assert losses_a == pytest.approx(losses_b, abs=loss_tol, rel=loss_tol)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 10
    for name, g in grads_a.items():
        assert (g - grads_b[name]).norm() <= grad_tol * grads_b[name].norm() + 1e-7, name


@pytest.fixture
def aot_eager(monkeypatch):
    monkeypatch.setattr(trainer_mod, "COMPILE_BACKEND", "aot_eager")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("packed", ["true", "false"])
def test_compiled_training_reaches_the_eager_loss(tmp_path, pairs, aot_eager, packed):
    # Dropout off: the bucketed chunks hold filler tokens, which draw dropout masks the eager chunks do not.
    runs = [run_steps(tiny_trainer(tmp_path / c, pairs, f"train.compile={c}", f"train.packed={packed}"), 3, 0.0)
            for c in ("true", "false")]
    assert_close(*runs, loss_tol=1e-4, grad_tol=1e-4)


@pytest.mark.slow
def test_compiled_cached_step_replays_dropout_like_the_plain_step(tmp_path, pairs, aot_eager):
    runs = [run_steps(tiny_trainer(tmp_path / c, pairs, "train.compile=true", f"train.grad_cache={c}"), 2)
            for c in ("true", "false")]  # tiny preset: dropout 0.1 on
    assert_close(*runs, loss_tol=1e-5, grad_tol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_inductor_compiled_cached_step_matches_the_eager_plain_step_on_cuda(tmp_path, pairs):
    torch._dynamo.reset()
    compiled = run_steps(tiny_trainer(tmp_path / "c", pairs, "train.compile=true", "train.precision=bf16"), 2)
    eager = run_steps(tiny_trainer(tmp_path / "e", pairs, "train.grad_cache=false", "train.precision=bf16"), 2)
    plain = run_steps(tiny_trainer(tmp_path / "p", pairs, "train.compile=true", "train.grad_cache=false",
                                   "train.precision=bf16"), 2)
    assert_close(compiled, plain, loss_tol=1e-3, grad_tol=3e-2)  # the cache replays the compiled dropout
    assert abs(compiled[0][0] - eager[0][0]) < 0.25 * abs(eager[0][0])  # same data, other dropout masks


@pytest.mark.parametrize("bucket, precision, bucketed", [("on", "fp32", True), ("off", "bf16", False),
                                                         ("auto", "fp32", False), ("auto", "bf16", True)])
def test_train_bucket_rounds_packed_chunks_without_compiling_and_by_default_on_a_cpu_in_bf16(
        tmp_path, pairs, bucket, precision, bucketed):
    trainer = tiny_trainer(tmp_path, pairs, f"train.bucket={bucket}", f"train.precision={precision}",
                           "train.packed=true")
    chunks, _ = trainer.chunks([[5] * n for n in lengths_of(40)])
    tokens = [c.input_ids.numel() for c in chunks]
    assert all(t % BUCKET_TOKENS == 0 for t in tokens) == bucketed
