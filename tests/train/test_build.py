"""train.build's optimizer and the launch/loss rules it and the trainer read from their one home in train.config."""

from __future__ import annotations

import pytest

from train.build import build_optimizer
from train.config import LossConfig, TrainConfig, launch_zero_stage, launched_with_deepspeed


@pytest.mark.parametrize(("flag", "deepspeed"), [("true", True), ("TRUE", True), ("false", False), ("", False)])
def test_optimizer_is_fused_exactly_when_not_launched_under_deepspeed(monkeypatch, tiny_model, flag, deepspeed):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", flag)
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "1")
    assert launched_with_deepspeed() is deepspeed
    assert launch_zero_stage() == (1 if deepspeed else 0)
    optimizer = build_optimizer(tiny_model, TrainConfig())
    assert optimizer.defaults["fused"] is (not deepspeed)  # DeepSpeed wraps the optimizer: its plain path


def test_optimizer_decays_weights_but_not_biases_or_layer_norms(tiny_model):
    decay, no_decay = build_optimizer(tiny_model, TrainConfig()).param_groups
    names = {id(p): n for n, p in tiny_model.named_parameters()}
    assert decay["weight_decay"] > 0 and no_decay["weight_decay"] == 0.0
    assert all(names[id(p)].endswith("bias") or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert not any(names[id(p)].endswith("bias") for p in decay["params"])


@pytest.mark.parametrize(("distill_weight", "guide_margin", "uses"),
                         [(0.0, -1.0, False), (0.5, -1.0, True), (0.0, 0.0, True), (0.0, 0.1, True)])
def test_the_loss_uses_a_teacher_exactly_when_it_distils_or_guides(distill_weight, guide_margin, uses):
    loss = LossConfig(distill_weight=distill_weight, guide_margin=guide_margin)
    assert loss.uses_teacher is uses
    cfg = TrainConfig(loss=loss)
    cfg.data.train_dir = "pairs"
    teacher_errors = [e for e in cfg.validate(world_size=1, zero_stage=0) if "teacher.model" in e]
    assert bool(teacher_errors) is uses  # no teacher.model set: refused exactly when the loss needs one
