"""Exact resume: a run SIGKILLed after its first checkpoint and re-run with the same command ends with the same
weights (fp32, CPU, 1e-6) and the same data order as an uninterrupted run, and its metrics log has no duplicates;
with a teacher, for every packed family (RoBERTa, XLM-R, MPNet, ModernBERT; BERT is the plain case) and for tiny
Qwen3- and Llama-shaped decoders (last-token pooling; Llama's with LoRA and bidirectional attention). Every variant
trains on the packed path (decoders: causal or bidirectional within each text, gte_model.unpadded)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from safetensors.numpy import load_file

from tests.conftest import FAMILIES
from tests.gte_model.tiny_decoders import DECODERS
from tests.train.tinydata import ROOT, subprocess_env, tiny_args, write_tiny_pairs
from train.checkpoint import list_checkpoints
from train.metrics import read_metrics

# 40 steps with checkpoints every 5: the kill lands with most of the run still ahead of it.
OVERRIDES = ("train.max_steps=40", "train.checkpoint_every=5", "train.eval_every=10", "optim.warmup_steps=5",
             "train.keep_checkpoints=2")


def _command(run_dir, pairs, *extra):
    return [sys.executable, "-m", "train", *tiny_args(run_dir, pairs, *OVERRIDES, *extra)]


def _teacher_overrides(folder):
    """Distillation over the in-batch documents, guided masking and Matryoshka, from a tiny exported teacher whose
    vectors the run caches as it meets the texts (a resumed run reads those it cached before the kill)."""
    from gte_model.export import export_model
    from tests.conftest import make_tiny_model

    folder.mkdir()
    teacher = export_model(make_tiny_model(folder, seed=3), folder / "export")
    return (f"teacher.model={teacher}", "teacher.bf16=false", "teacher.max_seq_len=32", "loss.distill_weight=1.0",
            "loss.distill_in_batch=true", "loss.guide_margin=0.2", "loss.matryoshka_dims=[32,16]")


def _family_overrides(folder, family):
    """A tiny random backbone of another family (packed path; dropout as the family's default)."""
    from gte_model.export import export_model
    from tests.conftest import make_tiny_family_model

    (folder / "vocab").mkdir(parents=True)
    return (f"model.init_from={export_model(make_tiny_family_model(folder / 'vocab', family), folder / 'init')}",)


def _decoder_overrides(folder, kind):
    """A tiny random decoder folder with last-token pooling; the Llama one trains LoRA adapters, attending both
    ways."""
    from tests.gte_model.tiny_decoders import make_tiny_decoder

    lora = ("model.lora.r=4", "model.lora.alpha=8", "model.bidirectional=true") if kind == "llama" else ()
    return (f"model.init_from={make_tiny_decoder(folder, kind)}", "model.pooling=last", *lora)


def _run(cmd):
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _kill_after_first_checkpoint(cmd, run_dir):
    proc = subprocess.Popen(cmd, cwd=ROOT, env=subprocess_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not list_checkpoints(run_dir) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    return proc.returncode


def assert_same_export(straight, resumed) -> dict:
    """Both runs exported the same tensors, each within 1e-6; returns the first run's weights."""
    a, b = (load_file(d / "export" / "model.safetensors") for d in (straight, resumed))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)
    return a


def _train_order(run_dir):
    lines = [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]
    return [(r["step"], r["source"], r["rows_crc"]) for r in lines], [r["loss"] for r in lines]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["plain", "teacher", *FAMILIES, *DECODERS])
def test_sigkilled_run_resumes_to_the_same_weights_and_data_order(tmp_path, variant):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    teacher = variant == "teacher"
    extra = (_teacher_overrides(tmp_path / "teacher") if teacher else
             _family_overrides(tmp_path / "family", variant) if variant in FAMILIES else
             _decoder_overrides(tmp_path / "decoder", variant) if variant in DECODERS else ())
    _run(_command(straight, pairs, *extra))

    assert _kill_after_first_checkpoint(_command(killed, pairs, *extra), killed) == -signal.SIGKILL
    assert not (killed / "DONE").exists(), "the run finished before the kill; the test did not test a resume"
    resumed_at = list_checkpoints(killed)[-1][0]
    assert resumed_at < 40
    out = _run(_command(killed, pairs, *extra))
    assert f"resuming from {killed / 'checkpoints'}" in out.stdout
    assert "using padded chunks" not in out.stdout  # the packed path resumed

    assert_same_export(straight, killed)
    order_a, loss_a = _train_order(straight)
    order_b, loss_b = _train_order(killed)
    assert [s for s, _, _ in order_b] == list(range(1, 41))  # no duplicate or missing step lines
    assert order_b == order_a
    np.testing.assert_allclose(loss_b, loss_a, rtol=0, atol=1e-6)
    evals = [r["step"] for r in read_metrics(killed / "metrics.jsonl") if r["kind"] == "eval"]
    assert evals == [10, 20, 30, 40]
    assert len(list_checkpoints(killed)) == 2  # keep_checkpoints
    if teacher:
        assert list((killed / "teacher_cache").glob("*/shard-*.npy"))  # its vectors were cached in the run dir


def test_a_half_written_checkpoint_is_ignored_and_cleaned(tmp_path):
    from train.checkpoint import clean_partial, latest_checkpoint

    ckpts = tmp_path / "checkpoints"
    (ckpts / "step-0000005").mkdir(parents=True)
    (ckpts / "step-0000005" / "trainer_state.json").write_text('{"step": 5}')
    (ckpts / ".tmp-step-0000010").mkdir()  # a crash mid-save
    (ckpts / "step-0000015").mkdir()  # no trainer_state.json: never complete
    assert latest_checkpoint(tmp_path) == ckpts / "step-0000005"
    clean_partial(tmp_path)
    assert not (ckpts / ".tmp-step-0000010").exists()


@pytest.mark.slow
def test_sigterm_finishes_the_step_checkpoints_exits_75_and_resumes_exactly(tmp_path):
    """SLURM's preemption notice: SIGTERM (or SIGUSR1) mid-run -> a checkpoint at the step that was running, exit
    75; the same command then ends with the weights and data order of an uninterrupted run."""
    pairs = write_tiny_pairs(tmp_path / "pairs")
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    overrides = ("train.checkpoint_every=0",)  # only the preemption writes a checkpoint before the end
    _run([*_command(straight, pairs), *overrides])
    proc = subprocess.Popen([*_command(stopped, pairs), *overrides], cwd=ROOT, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = stopped / "metrics.jsonl", time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:  # signal once a few steps are logged
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-2000:]
    assert "SIGTERM received" in out and "re-run the same command to resume" in err
    (step, path), = list_checkpoints(stopped)
    assert 3 <= step < 40 and f"checkpoint at step {step}" in err
    resumed = _run([*_command(stopped, pairs), *overrides])
    assert f"resuming from {path} (step {step})" in resumed.stdout
    assert_same_export(straight, stopped)
    assert _train_order(stopped) == _train_order(straight)
