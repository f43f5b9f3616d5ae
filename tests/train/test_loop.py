"""The tiny config trains end to end through `main(argv)`: the loss falls, the export reloads to the trained
vectors in our loader and in sentence-transformers, a finished run is a no-op, and 2 DDP processes see the same
data order as one."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch

from tests.train.tinydata import ROOT, subprocess_env, tiny_args, train_command, write_tiny_pairs
from train.app.cli import main as gte
from train.metrics import read_metrics


def main(args: list[str]) -> int:
    """`gte train ARGS` in this process, through the command's error boundary."""
    return gte(["train", *args])


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_tiny_pairs(tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, pairs):
    """One in-process run of configs/tiny.yaml (40 steps, grad cache, 1 hard negative, checkpoint at 20)."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the test machine's cores are shared: more threads only contend
    try:
        assert main(tiny_args(run_dir, pairs)) == 0
    finally:
        torch.set_num_threads(threads)
    return run_dir


def _train_lines(run_dir):
    return [r for r in read_metrics(run_dir / "metrics.jsonl") if r["kind"] == "train"]


def test_tiny_run_loss_falls(tiny_run):
    losses = [r["loss"] for r in _train_lines(tiny_run)]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:5]), losses


def test_tiny_run_writes_config_metrics_plot_checkpoint_and_done(tiny_run):
    assert "max_steps: 40" in (tiny_run / "config.yaml").read_text()
    assert (tiny_run / "metrics.png").stat().st_size > 1000
    assert (tiny_run / "checkpoints" / "step-0000020" / "trainer_state.json").is_file()
    evals = [r for r in read_metrics(tiny_run / "metrics.jsonl") if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [20, 40] and all(0 <= r["val_acc"] <= 1 for r in evals)
    train = _train_lines(tiny_run)
    assert all(r["pairs_per_s"] > 0 and r["tokens_per_s"] > 0 for r in train)
    assert train[0]["lr"] < train[3]["lr"] and train[-1]["lr"] < train[3]["lr"]  # warmup, then decay
    assert json.loads((tiny_run / "gte_record.json").read_text())["stats"]["export_max_abs_diff"] < 1e-5


def test_export_loads_in_our_loader_and_sentence_transformers_with_the_trained_vectors(tiny_run):
    from sentence_transformers import SentenceTransformer

    from gte_model import load_model

    probe = json.loads((tiny_run / "export_probe.json").read_text())
    ours = load_model(tiny_run / "export")
    st = SentenceTransformer(str(tiny_run / "export"), device="cpu")
    # the export serves the base model's length (a tiny preset: 512), not the 24 tokens training truncated to
    assert ours.prompts == {"query": "query: "} and ours.max_seq_len == 512 and st.max_seq_length == 512
    for role in ("query", "document"):
        texts, want = probe[role]["texts"], np.asarray(probe[role]["vectors"])
        prompt = probe[role]["prompt"] or None
        np.testing.assert_allclose(ours.encode(texts, prompt=prompt), want, atol=1e-5)
        np.testing.assert_allclose(st.encode(texts, prompt=prompt, normalize_embeddings=True), want, atol=1e-5)
    meta = json.loads((tiny_run / "export" / "gte_export.json").read_text())
    assert meta["train_config"]["train"]["max_steps"] == 40


def test_rerunning_a_finished_run_is_a_no_op(tiny_run, pairs, capsys):
    before = (tiny_run / "metrics.jsonl").read_text()
    assert main(tiny_args(tiny_run, pairs)) == 0
    assert "finished already" in capsys.readouterr().out
    assert (tiny_run / "metrics.jsonl").read_text() == before


def test_a_finished_run_refuses_a_changed_key_or_input_naming_it(tiny_run, pairs, tmp_path, capsys):
    before = (tiny_run / "metrics.jsonl").read_text()
    assert main(tiny_args(tiny_run, pairs, "optim.lr=3e-4")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gte train: run.dir=") and "optim.lr" in err and "run.overwrite=true" in err
    other = write_tiny_pairs(tmp_path / "other", seed=1)
    assert main(tiny_args(tiny_run, other)) == 2
    assert "input data.train_dir" in capsys.readouterr().err
    assert (tiny_run / "metrics.jsonl").read_text() == before


def test_bad_data_dir_is_reported_not_raised(tmp_path, capsys):
    assert main(tiny_args(tmp_path / "run", tmp_path / "nowhere")) == 2
    assert "manifest.json does not exist" in capsys.readouterr().err


@pytest.mark.distributed
@pytest.mark.slow
def test_two_ddp_processes_train_on_the_same_data_order_as_one(tiny_run, pairs, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = [*train_command(2), *tiny_args(run_dir, pairs, "train.max_steps=6", "optim.warmup_steps=2",
                                          "train.checkpoint_every=3", "train.eval_every=3")]
    proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = _train_lines(run_dir)
    one = _train_lines(tiny_run)[:6]
    assert [(r["source"], r["rows_crc"]) for r in two] == [(r["source"], r["rows_crc"]) for r in one]
    assert all(np.isfinite(r["loss"]) for r in two)
    assert (run_dir / "checkpoints" / "step-0000003").is_dir() and (run_dir / "export" / "model.safetensors").is_file()


def test_wandb_logs_offline_without_an_api_key(tmp_path, monkeypatch):
    from train.metrics import MetricsLogger

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = MetricsLogger(tmp_path / "run", {"a": 1}, wandb="on", project="test")
    logger.log({"kind": "train", "step": 1, "loss": 0.5})
    logger.close()
    assert (tmp_path / "run" / "wandb_id.txt").read_text()
    assert list((tmp_path / "run").rglob("*.wandb")), "no offline wandb run file was written"


@pytest.mark.distributed
@pytest.mark.slow
def test_resume_across_a_changed_process_count_keeps_the_data_order(pairs, tmp_path):
    """2 gloo processes -> 1 -> 2 (a requeued job on another GPU count), each leg continuing the last checkpoint by a
    larger train.max_steps, against 2 processes straight through. The data order is identical, and with dropout
    off (the one thing the re-seeded RNG streams would change) the weights agree to 1e-5 (fp32 sums reorder)."""
    from safetensors.numpy import load_file

    from gte_model.export import export_model
    from tests.conftest import make_tiny_model

    (tmp_path / "vocab").mkdir()
    model = make_tiny_model(tmp_path / "vocab")
    model.backbone.config.hidden_dropout_prob = model.backbone.config.attention_probs_dropout_prob = 0.0
    init = export_model(model, tmp_path / "init")
    common = ("optim.schedule=constant", "optim.warmup_steps=1", "train.checkpoint_every=0", "data.val_rows=0",
              f"model.init_from={init}")

    def leg(run_dir, steps: int, procs: int) -> str:
        args = tiny_args(run_dir, pairs, *common, f"train.max_steps={steps}")
        cmd = [*train_command(procs), *args]
        proc = subprocess.run(cmd, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    straight, legs = tmp_path / "straight", tmp_path / "legs"
    leg(straight, 6, 2)
    leg(legs, 2, 2)
    assert "written by 2 processes, this run has 1" in leg(legs, 4, 1)
    assert "written by 1 processes, this run has 2" in leg(legs, 6, 2)
    order = [(r["step"], r["source"], r["rows_crc"]) for r in _train_lines(legs)]
    assert order == [(r["step"], r["source"], r["rows_crc"]) for r in _train_lines(straight)]
    a, b, start = (load_file(d / "model.safetensors") for d in (straight / "export", legs / "export", init))
    assert max(float(np.abs(a[k] - start[k]).max()) for k in a) > 1e-3  # the legs trained
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
