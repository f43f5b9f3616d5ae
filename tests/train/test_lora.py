"""LoRA fine-tuning (model.lora.*) on the tiny config: only the adapters train and only they have optimizer state
(in memory and in the checkpoint), the cached step gives the plain step's gradients through the adapters, a SIGKILLed
LoRA run resumes to the same weights, and bad settings are config errors."""

from __future__ import annotations

import signal
import subprocess

import pytest
import torch
from safetensors.numpy import load_file
from torch import nn

from gte_model.core.config import ConfigError, load_config
from gte_model.lora import add_lora
from tests.conftest import make_tiny_model
from tests.train import test_grad_cache as gc
from tests.train import test_resume as resume
from tests.train.tinydata import ROOT, TINY_CONFIG, subprocess_env, tiny_args, train_command, write_tiny_pairs
from train.checkpoint import list_checkpoints
from train.config import TrainConfig
from train.grad_cache import cached_step
from train.step import plain_step
from train.trainer import Trainer

pytest.importorskip("peft")
LORA = ("model.lora.r=4", "model.lora.alpha=8", "model.lora.dropout=0.1")


def make_config(run_dir, pairs, *overrides):
    return load_config(TrainConfig, TINY_CONFIG, [f"run.dir={run_dir}", f"data.train_dir={pairs}", "log.wandb=off",
                                                  "data.val_rows=0", *overrides])


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs"))


def test_lora_trains_only_the_adapters_and_the_optimizer_holds_only_them(pairs, tmp_path):
    trainer = Trainer(make_config(tmp_path / "run", pairs, *LORA, "train.max_steps=3", "optim.warmup_steps=1"))
    before = {n: p.detach().clone() for n, p in trainer.gte.named_parameters()}
    for step in range(3):
        assert trainer.step(step).applied
    changed = {n for n, p in trainer.gte.named_parameters() if not torch.equal(p, before[n])}
    adapters = {n for n, p in trainer.gte.named_parameters() if p.requires_grad}
    assert adapters and all("lora_" in n for n in adapters)
    assert {n for n in changed if "lora_B" in n} == {n for n in adapters if "lora_B" in n}  # B moved off zero
    assert changed <= adapters, sorted(changed - adapters)[:3]
    optimized = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for n, p in trainer.gte.named_parameters() if n in adapters}
    assert len(trainer.optimizer.state) == len(adapters)
    saved = load_file(trainer.save(3, {}) / "optimizer.safetensors")
    assert len([k for k in saved if k.endswith(".exp_avg")]) == len(adapters)
    lora_floats = sum(p.numel() for p in trainer.gte.parameters() if p.requires_grad)
    assert sum(v.size for k, v in saved.items() if not k.endswith(".step")) == 2 * lora_floats


@pytest.fixture
def adapted(tmp_path):
    """The tiny BERT with adapters (B random, so the base weights' gradients would show if they had any), dropout 0.2
    everywhere (the adapters' own included): a wrong replay in the cached step shows."""
    model = make_tiny_model(tmp_path, seed=0)
    add_lora(model.backbone, r=4, alpha=8, dropout=0.1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.2
    return model.train()


@pytest.mark.parametrize("packed", [False, True])
def test_cached_step_gives_the_plain_gradients_of_the_adapters(adapted, packed):
    _, chunks, loss_fn = gc.setup(adapted, chunk_size=5, packed=packed)
    plain = gc.run(adapted, plain_step, chunks, loss_fn)
    cached = gc.run(adapted, cached_step, chunks, loss_fn)
    assert all("lora_" in n for n in plain[1])
    gc.assert_same(cached, plain)


def test_lora_settings_are_checked_with_a_one_line_error(pairs, tmp_path):
    with pytest.raises(ConfigError, match=r"model\.lora\.r=-1: must be >= 0"):
        make_config(tmp_path / "run", pairs, "model.lora.r=-1")
    with pytest.raises(ConfigError, match=r"model\.lora\.export=both: choose one of merged, adapter"):
        make_config(tmp_path / "run", pairs, "model.lora.export=both")
    cfg = make_config(tmp_path / "run", pairs, "model.lora.r=4", "model.lora.target_modules=[query,q_proj]")
    with pytest.raises(ConfigError) as err:
        Trainer(cfg)
    assert str(err.value) == ("model.lora.target_modules=['query', 'q_proj']: BertModel has no Linear layer named "
                              "q_proj; choose from query, key, value, dense or all-linear")


@pytest.mark.slow
def test_sigkilled_lora_run_resumes_to_the_same_weights(tmp_path):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    resume._run([*resume._command(straight, pairs), *LORA])
    command = [*resume._command(killed, pairs), *LORA]
    assert resume._kill_after_first_checkpoint(command, killed) == -signal.SIGKILL
    assert not (killed / "DONE").exists() and list_checkpoints(killed)[-1][0] < 40
    assert "resuming from" in resume._run(command).stdout
    assert not any("lora" in k for k in resume.assert_same_export(straight, killed))  # merged: a plain model
    assert resume._train_order(killed) == resume._train_order(straight)


def test_trainer_exports_the_adapter_folder_and_it_reloads_to_the_trained_vectors(pairs, tmp_path):
    trainer = Trainer(make_config(tmp_path / "run", pairs, *LORA, "model.lora.export=adapter", "train.max_steps=2",
                                  "optim.warmup_steps=1"))
    for step in range(2):
        trainer.step(step)
    folder, diff = trainer.export({"note": "test"})
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    assert diff <= 1e-5


@pytest.mark.distributed
@pytest.mark.slow
def test_two_ddp_processes_train_the_adapters_with_the_grad_cache(pairs, tmp_path):
    """DDP over a model whose base is frozen: no rank waits for a gradient that never comes, and the checkpoint holds
    optimizer state for the adapters only."""
    run_dir = tmp_path / "ddp"
    cmd = [*train_command(2), *tiny_args(run_dir, pairs, *LORA, "train.max_steps=4", "optim.warmup_steps=1",
                                          "train.checkpoint_every=4")]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = load_file(run_dir / "checkpoints" / "step-0000004" / "model.safetensors")
    optimizer = load_file(run_dir / "checkpoints" / "step-0000004" / "optimizer.safetensors")
    adapters = [k for k in model if "lora_" in k]
    assert adapters and len([k for k in optimizer if k.endswith(".exp_avg")]) == len(adapters)
    assert (run_dir / "export" / "model.safetensors").is_file()
