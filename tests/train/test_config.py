"""The training config: typed, unknown keys hinted, cross-field rules reported in override spelling."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.mine_config import MineConfig
from data_prep.prep_config import PrepConfig
from gte_model.core.config import ConfigError, load_config
from train.app.cli import main as gte
from train.app.pipeline import PipelineConfig
from train.config import TrainConfig, grad_cache_notice, launch_zero_stage, uses_grad_cache
from train.trainer import lr_factor

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny.yaml"


def _load(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, TINY, list(overrides))


@pytest.mark.parametrize("name", ["tiny", "pretrain", "finetune", "finetune_cpu"])
def test_shipped_configs_load_and_validate(name):
    cfg = load_config(TrainConfig, ROOT / "configs" / f"{name}.yaml")
    assert cfg.validate(world_size=1, zero_stage=0) == []


def test_stage_configs_follow_the_recipe():
    pre = load_config(TrainConfig, ROOT / "configs" / "pretrain.yaml")
    fine = load_config(TrainConfig, ROOT / "configs" / "finetune.yaml")
    assert (pre.loss.kind, pre.loss.temperature, pre.data.num_negatives, pre.sampler.alpha) == ("gte", 0.01, 0, 0.5)
    assert pre.train.grad_cache and pre.train.precision == "bf16" and pre.data.query_max_len == 128
    assert fine.data.num_negatives >= 1 and fine.optim.lr < pre.optim.lr
    assert fine.train.global_batch_size < pre.train.global_batch_size
    assert fine.model.init_from == "runs/stage1/export" == pre.run.dir + "/export"


def test_unknown_key_gets_a_close_match_hint():
    with pytest.raises(ConfigError, match=r"did you mean train\.max_steps"):
        _load("train.max_step=5")


def test_wrong_type_fails_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        _load("train.max_steps=many")


def test_wandb_off_survives_yaml_boolean_parsing():
    assert _load("log.wandb=off").log.wandb == "off"
    assert _load("log.wandb=on").log.wandb == "on"


def test_indivisible_global_batch_is_rejected_in_override_spelling():
    errors = _load().validate(world_size=3, zero_stage=0)
    assert any("train.global_batch_size=16" in e and "3 processes" in e for e in errors)


def test_chunk_larger_than_the_cached_batch_is_clamped_with_a_notice_not_refused():
    big = _load("train.chunk_size=1000")  # 16 pairs x (2 + 1 negative) = 48 texts per step
    assert not uses_grad_cache(big, world_size=1)
    assert "train.chunk_size=1000 clamped to the 48 texts" in grad_cache_notice(big, world_size=1)
    assert not uses_grad_cache(_load("train.chunk_size=48"), world_size=1)  # one chunk of all 48: no cache either
    assert uses_grad_cache(_load(), world_size=1) and grad_cache_notice(_load(), world_size=1) is None  # 16 < 48
    assert uses_grad_cache(_load("train.chunk_size=32"), world_size=1)
    assert not uses_grad_cache(_load("train.chunk_size=32"), world_size=2)  # 8 pairs x 3 = 24 texts per process
    assert uses_grad_cache(_load("train.chunk_size=1000", "train.chunk_tokens=256"), world_size=1)  # tokens bound it
    assert grad_cache_notice(_load("train.chunk_size=1000", "train.grad_cache=false"), world_size=1) is None


def test_grad_cache_with_zero2_says_what_to_use():
    errors = _load().validate(world_size=1, zero_stage=2)
    assert any("train.grad_cache=true" in e and "deepspeed_zero1" in e and "train.grad_cache=false" in e
               for e in errors)
    assert _load("train.grad_cache=false").validate(world_size=1, zero_stage=2) == []
    assert _load().validate(world_size=1, zero_stage=1) == []


def test_zero_stage_is_read_from_the_accelerate_launch_environment(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    assert launch_zero_stage() == 2
    with pytest.raises(ConfigError, match="ZeRO stage 2"):
        _load()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "false")
    assert launch_zero_stage() == 0


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        _load("loss.kind=triplet", "train.precision=fp8", "optim.warmup_steps=1000", "data.train_dir=''")
    message = str(info.value)
    for key in ("loss.kind=triplet", "train.precision=fp8", "optim.warmup_steps=1000", "data.train_dir"):
        assert key in message


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_lr_warms_up_linearly_then_decays_to_zero(schedule):
    f = [lr_factor(s, warmup=4, total=20, schedule=schedule) for s in range(21)]
    assert f[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(f[4:], f[5:])) and f[20] == pytest.approx(0.0)


def test_constant_schedule_stays_at_peak_after_warmup():
    assert [lr_factor(s, warmup=2, total=10, schedule="constant") for s in (0, 1, 5, 9)] == [0.5, 1.0, 1.0, 1.0]


# Every config-driven command: (command, a string key, a whole-number key), all read by gte_model.core.config
COMMANDS = [("train", "run.name", "train.seed"), ("prep", "out_dir", "seed"), ("mine", "out_dir", "negatives.seed"),
            ("run", "run.dir", "stage1.train.seed"), ("merge", "out_dir", "fit.rows")]


@pytest.mark.parametrize("command, text_key, int_key", COMMANDS)
def test_every_command_refuses_interpolation_huge_numbers_and_duplicate_keys_in_one_message(
        tmp_path, monkeypatch, capsys, command, text_key, int_key):
    monkeypatch.setenv("GTE_TEST_SECRET", "s3cr3t-value")
    duplicate = tmp_path / "dup.yaml"
    top = int_key.split(".")[0]
    duplicate.write_text(f"{top}: {{}}\n{top}: {{}}\n" if "." in int_key else f"{top}: 1\n{top}: 2\n")
    for argv, message in (([f"{text_key}=${{oc.env:GTE_TEST_SECRET}}"], "interpolation is not supported"),
                          ([f"{int_key}={'9' * 25}"], f"{int_key}={'9' * 25}: out of range"),
                          ([str(duplicate)], f"{duplicate}:2: key {top} appears twice (first at line 1)")):
        assert gte([command, *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"gte {command}: {duplicate}:2:" if argv == [str(duplicate)] else
                              f"gte {command}: invalid config:\n  ")
        assert message in err and "Traceback" not in err and "s3cr3t-value" not in err


@pytest.mark.parametrize("command, prefix", [("prep", ""), ("run", "prep.")])
def test_an_override_into_a_files_entry_works_or_names_the_list(tmp_path, capsys, command, prefix):
    data = tmp_path / "a.jsonl"
    data.write_text("")
    schema = PrepConfig if command == "prep" else PipelineConfig
    cfg = load_config(schema, None, [f"{prefix}files=[{{name: a, path: x}}]", f"{prefix}files.0.path={data}"])
    assert (cfg if command == "prep" else cfg.prep).files[0].path == str(data)
    assert gte([command, f"{prefix}files.0.path={data}"]) == 2
    err = capsys.readouterr().err
    assert f"{prefix}files.0: {prefix}files has no entries" in err and "Traceback" not in err


@pytest.mark.parametrize("override, message", [
    ("train.chunk_size=0", "train.chunk_size=0: must be >= 1"),
    ("optim.lr=0", "optim.lr=0.0: must be a finite number > 0 (BERT-sized models train at 1e-5 to 1e-4)"),
    ("optim.eps=2", "optim.eps=2.0: must be a finite number in (0, 1] (1e-8)"),
    ("loss.temperature=1e-4", "loss.temperature=0.0001: must be a finite number in [0.001, 10]"),
    ("model.lora.dropout=1", "model.lora.dropout=1.0: must be a finite number in [0, 0.99] (0 to 0.1)"),
    ("loss.kind=triplet", "loss.kind=triplet: choose one of infonce, gte"),
    ("optim.betas=[0.9,1.5]", "optim.betas=[0.9, 1.5]: must be two numbers in [0, 1)"),
])
def test_training_bounds_are_declared_on_the_fields_and_named_in_override_spelling(override, message):
    with pytest.raises(ConfigError) as err:
        _load(override)
    assert f"\n  {message}" in str(err.value)


@pytest.mark.parametrize("schema, overrides, message", [
    (PrepConfig, ["engine=spark"], "engine=spark: choose one of local, ray (local = this machine, the default; "
                                   "ray = a Ray cluster, pip install -e .[ray])"),
    (PrepConfig, ["files=[{name: a, path: a.jsonl, format: xls}]"], "files.0.format=xls: choose one of jsonl"),
    (PrepConfig, ["decontaminate.threshold=0"], "decontaminate.threshold=0.0: must be a finite number in (0, 1]"),
    (PrepConfig, ["on_error=ignore"], "on_error=ignore: choose one of raise, skip"),
    (MineConfig, ["input_dir=a", "out_dir=b", "ray.num_workers=0"], "ray.num_workers=0: must be >= 1"),
    (MineConfig, ["input_dir=a", "out_dir=b", "negatives.strategy=best"],
     "negatives.strategy=best: choose one of random, top"),
    (MineConfig, ["input_dir=a", "out_dir=b", "negatives.teacher_ratio=2"],
     "negatives.teacher_ratio=2.0: must be a finite number in (0, 1] (NV-Retriever: 0.95)"),
])
def test_data_bounds_are_declared_on_the_fields_and_named_in_override_spelling(tmp_path, schema, overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(schema, None, [*overrides, f"out_dir={tmp_path / 'out'}"] if schema is PrepConfig else overrides)
    assert f"\n  {message}" in str(err.value)
