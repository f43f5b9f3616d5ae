"""train.epochs: the run's length follows its data. One epoch is the sampler's pass over every source (n_i // global
batch size batches each), resolved once at start into train.max_steps of config.yaml, the run record and the
checkpoints: a SIGKILLed run resumes to the same step and weights; warmup is checked against the resolved count."""

from __future__ import annotations

import json
import signal

import pytest
import yaml

from gte_model.core.config import ConfigError, load_config
from tests.train.test_resume import _command, _kill_after_first_checkpoint, _run, _train_order, assert_same_export
from tests.train.tinydata import TINY_CONFIG, write_tiny_pairs
from train.checkpoint import list_checkpoints
from train.config import TrainConfig
from train.length import resolve_length
from train.metrics import read_metrics

# the tiny pairs dir: alpha 96, beta 64, gamma 48 train rows; at 16 pairs a batch one epoch is 6 + 4 + 3 steps
EPOCH = 13


def _cfg(pairs, *overrides):
    return load_config(TrainConfig, TINY_CONFIG, [f"data.train_dir={pairs}", *overrides])


def test_epochs_resolve_to_the_sampler_passes_over_the_sources_trained_on(tmp_path):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    lines = []
    cfg = _cfg(pairs, "train.epochs=1.5")
    resolved = resolve_length(cfg, log=lines.append)
    assert resolved.train.max_steps == 20  # ceil(1.5 x 13)
    assert cfg.train.max_steps == 40  # the caller's config is not changed
    assert "20 optimizer steps" in lines[0] and "train.epochs=1.5" in lines[0] and "208 train rows" in lines[0]
    assert resolve_length(_cfg(pairs, "train.epochs=1", "data.sources=[alpha,gamma]")).train.max_steps == 9
    assert resolve_length(_cfg(pairs, "train.epochs=1", "train.global_batch_size=32")).train.max_steps == 3 + 2 + 1
    assert resolve_length(_cfg(pairs, "train.epochs=0.1", "train.global_batch_size=32",
                               "optim.warmup_steps=0")).train.max_steps == 1  # 0.1 x 6 = 0.6 -> 1
    assert resolve_length(_cfg(pairs, "train.epochs=0")).train.max_steps == 40  # off: train.max_steps as given


def test_bad_epochs_and_a_warmup_longer_than_the_resolved_run_are_refused_naming_the_keys(tmp_path):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    for bad in ("-1", "inf", "nan"):
        with pytest.raises(ConfigError, match=r"train.epochs=.*: must be a finite number >= 0"):
            _cfg(pairs, f"train.epochs={bad}")
    # with train.epochs the steps are unknown until the data is read: train.max_steps does not bound the warmup
    cfg = _cfg(pairs, "train.epochs=0.2", "train.max_steps=1", "optim.warmup_steps=4")  # loads: validated
    with pytest.raises(ConfigError, match=r"optim.warmup_steps=4 exceeds the 3 steps of train.epochs=0.2"):
        resolve_length(cfg)  # ceil(0.2 x 13) = 3
    with pytest.raises(ConfigError, match="train.epochs=1.*no source fills one batch"):
        resolve_length(_cfg(pairs, "train.epochs=1", "train.global_batch_size=128"))


@pytest.mark.slow
def test_an_epochs_run_records_its_resolved_steps_and_a_killed_one_resumes_to_the_same_weights(tmp_path):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    epochs = ("train.epochs=3",)  # 39 steps (train.max_steps=40 of the command is replaced)
    out = _run([*_command(straight, pairs), *epochs])
    assert "39 optimizer steps = ceil(train.epochs=3.0 x 13 steps per epoch" in out.stdout
    record = json.loads((straight / "gte_record.json").read_text())
    assert record["config"]["train.max_steps"] == 39 and record["stats"]["step"] == 39
    assert yaml.safe_load((straight / "config.yaml").read_text())["train"]["max_steps"] == 39

    assert _kill_after_first_checkpoint([*_command(killed, pairs), *epochs], killed) == -signal.SIGKILL
    assert list_checkpoints(killed)[-1][0] < 39
    out = _run([*_command(killed, pairs), *epochs])
    assert f"resuming from {killed / 'checkpoints'}" in out.stdout
    assert_same_export(straight, killed)
    assert _train_order(killed) == _train_order(straight)
    assert [r["step"] for r in read_metrics(killed / "metrics.jsonl") if r["kind"] == "eval"] == [10, 20, 30, 39]

    # a longer length continues the finished run (like a larger train.max_steps): 39 -> 52 steps
    out = _run([*_command(killed, pairs), "train.epochs=4"])
    assert "resuming from" in out.stdout
    assert json.loads((killed / "gte_record.json").read_text())["stats"]["step"] == 4 * EPOCH
