"""The MLM stage (train.mlm, `gte mlm`): the masking rule measured over many draws, sequences within the scheduled
length, the loss falling on a planted repetitive corpus, an exact resume after SIGKILL, and an export that stage 1
starts from with the MLM backbone's very weights. A tiny random BERT with a test-written vocabulary throughout."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import load_file

from gte_model.core.pairs import finish
from gte_model.core.record import Record
from tests.train.tinydata import ROOT, subprocess_env
from train.checkpoint import latest_checkpoint, list_checkpoints
from train.masking import IGNORE, mask_tokens
from train.metrics import read_metrics
from train.mlm import concatenate
from train.mlm_config import MLMConfig, max_len_at

# Three sentences over and over: a model that learns anything predicts their masked words.
PLANTED = ["the cat plays the piano", "a woman plays guitar", "stock price fell today on the news"]


def _write_corpus(out, rows: int = 96, heldout: int = 12):
    """A pairs dir (one source) whose queries and positives are the planted sentences."""
    records = [{"query": PLANTED[i % 3], "positive": PLANTED[(i + 1) % 3], "source": "alpha", "key": f"k{i}"}
               for i in range(rows + heldout)]
    (out / "alpha").mkdir(parents=True)
    entry = {}
    for split, part in (("train", records[:rows]), ("heldout", records[rows:])):
        pq.write_table(pa.Table.from_pylist(part), out / f"alpha/{split}-00000.parquet")
        entry[split] = {"files": [f"alpha/{split}-00000.parquet"], "rows": len(part)}
    finish(out, {"alpha": entry}, {}, Record("prep", 0, {"test": "planted"}))
    return out


def _tiny_init(folder):
    """An exported tiny random BERT around the test-written vocabulary (dropout as BERT's default)."""
    from gte_model.export import export_model
    from tests.conftest import make_tiny_model

    folder.mkdir(parents=True)
    return export_model(make_tiny_model(folder), folder / "export")


def _args(run_dir, pairs, init, *extra):
    return ["mlm", f"run.dir={run_dir}", f"data.train_dir={pairs}", f"model.init_from={init}", "log.wandb=off",
            "train.global_batch_size=16", "train.log_every=1", "train.eval_every=0", "data.val_rows=8",
            "optim.lr=1e-2", "optim.warmup_steps=2", "mlm.max_len_schedule=[[0,16],[6,32]]", *extra]


@pytest.fixture
def setup(tmp_path):
    return _write_corpus(tmp_path / "pairs"), _tiny_init(tmp_path / "init")


def test_masking_picks_the_rate_and_splits_80_10_10_over_many_draws():
    vocab, n = 1000, 400_000
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, vocab, (n,), generator=gen)
    maskable = torch.rand(n, generator=gen) > 0.1  # a tenth are special tokens: never picked
    for rate in (0.30, 0.15):
        inputs, targets = mask_tokens(ids, maskable, rate, mask_id=4, vocab_size=vocab, generator=gen)
        picked = targets != IGNORE
        assert not picked[~maskable].any()
        assert abs(picked[maskable].float().mean().item() - rate) < 0.003
        assert torch.equal(targets[picked], ids[picked]) and torch.equal(inputs[~picked], ids[~picked])
        as_mask = (inputs[picked] == 4).float().mean().item()
        kept = (inputs[picked] == ids[picked]).float().mean().item()  # a random draw equal to the original: 1/1000
        swapped = 1 - as_mask - kept
        assert abs(as_mask - 0.8) < 0.005 and abs(swapped - 0.1) < 0.005 and abs(kept - 0.1) < 0.005


def test_sequences_hold_every_text_in_order_within_the_length():
    texts = [[7] * 5, [8] * 30, [], [9] * 2, [10] * 3]
    seqs = concatenate(texts, max_len=12, cls_id=1, sep_id=2)
    assert all(len(s) <= 12 and s[0] == 1 and s[-1] == 2 for s in seqs)
    body = [t for s in seqs for t in s if t not in (1, 2)]
    assert body == [7] * 5 + [8] * 10 + [9] * 2 + [10] * 3  # the long text cut to 12 - 2 tokens, the empty dropped
    assert seqs[-1] == [1, 9, 9, 2, 10, 10, 10, 2]  # short texts share a sequence
    assert max_len_at([[0, 16], [6, 32]], 5) == 16 and max_len_at([[0, 16], [6, 32]], 6) == 32


def test_bad_schedule_and_columns_are_named_in_override_spelling():
    cfg = MLMConfig()
    cfg.data.train_dir, cfg.data.columns = "x", ["title"]
    cfg.mlm.max_len_schedule = [[5, 128], [3, 4]]
    errors = " ".join(cfg.validate(world_size=1, zero_stage=0))
    assert "mlm.max_len_schedule=[[5, 128], [3, 4]]: the first entry starts at step 0" in errors
    assert "every length must be >= 8" in errors and "data.columns=['title']" in errors


def test_an_unsorted_schedule_is_named_in_override_spelling():
    cfg = MLMConfig()
    cfg.data.train_dir = "x"
    cfg.mlm.max_len_schedule = [[0, 16], [8, 32], [4, 64]]
    errors = cfg.validate(world_size=1, zero_stage=0)
    assert errors == ["mlm.max_len_schedule=[[0, 16], [8, 32], [4, 64]]: the first entry starts at step 0 and steps "
                      "increase, e.g. [[0,128],[800,512]]"]


def test_a_scheduled_length_beyond_the_models_positions_is_named(tmp_path, setup, capsys, one_thread):
    from train.app.cli import main as gte

    pairs, init = setup  # the exported tiny BERT has 512 positions
    argv = _args(tmp_path / "mlm", pairs, init, "train.max_steps=2", "mlm.max_len_schedule=[[0,16],[1,32],[2,600]]")
    assert gte(argv) == 2
    err = capsys.readouterr().err
    assert "mlm.max_len_schedule=[[0, 16], [1, 32], [2, 600]]: 600 tokens exceed the 512 positions" in err
    assert not (tmp_path / "mlm" / "checkpoints").exists()  # refused before any step


def test_mlm_loss_falls_on_a_planted_repetitive_corpus(tmp_path, setup, one_thread):
    from train.app.cli import main as gte

    pairs, init = setup
    assert gte(_args(tmp_path / "run", pairs, init, "train.max_steps=40", "train.checkpoint_every=0")) == 0
    lines = read_metrics(tmp_path / "run" / "metrics.jsonl")
    losses = [r["loss"] for r in lines if r["kind"] == "train"]
    assert len(losses) == 40 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:3]), losses


def test_export_is_stage_1_init_with_the_mlm_backbone_weights(tmp_path, setup, one_thread):
    from train.app.cli import main as gte
    from train.build import build_model
    from train.config import TrainConfig

    pairs, init = setup
    run = tmp_path / "run"
    assert gte(_args(run, pairs, init, "train.max_steps=6", "train.checkpoint_every=3")) == 0
    trained = load_file(latest_checkpoint(run) / "model.safetensors")  # MaskedLM: gte.backbone.* and head.*
    backbone = {k.removeprefix("gte.backbone."): v for k, v in trained.items() if k.startswith("gte.backbone.")}
    assert any(k.startswith("head.") for k in trained)
    cfg = TrainConfig()
    cfg.model.init_from, cfg.data.train_dir = str(run / "export"), str(pairs)
    stage1 = build_model(cfg).backbone.state_dict()
    assert set(backbone) <= set(stage1)
    assert max(float(np.abs(stage1[k].numpy() - v).max()) for k, v in backbone.items()) == 0.0
    original = load_file(init / "model.safetensors")
    moved = [k for k in original if k in backbone and not np.array_equal(original[k], backbone[k])]
    assert moved, "MLM changed no weight: the test compared the initial model with itself"


# (schedule, the checkpoint step the kill waits for, the step the killed run must resume from): one switch, killed
# before it; three lengths, killed between the two switches (resumed at 6, it still has the switch at 8 ahead)
@pytest.mark.parametrize(("schedule", "wait_for", "resume_range"), [
    ("[[0,16],[6,32]]", 1, range(1, 12)),
    ("[[0,16],[4,24],[8,32]]", 6, range(4, 8)),
])
def test_sigkilled_mlm_run_resumes_bit_identical(tmp_path, setup, schedule, wait_for, resume_range):
    pairs, init = setup
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    extra = ("train.max_steps=12", "train.checkpoint_every=3", "train.eval_every=4",
             f"mlm.max_len_schedule={schedule}")

    def command(run_dir):
        return [sys.executable, "-m", "train.app.cli", *_args(run_dir, pairs, init, *extra)]

    env = subprocess_env()
    done = subprocess.run(command(straight), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen(command(killed), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not any(step >= wait_for for step, _ in list_checkpoints(killed)) and proc.poll() is None and (
            time.monotonic() < deadline):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert not (killed / "export").exists(), "the run finished before the kill; the test did not test a resume"
    assert list_checkpoints(killed)[-1][0] in resume_range, list_checkpoints(killed)
    again = subprocess.run(command(killed), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and f"resuming from {killed / 'checkpoints'}" in again.stdout, again.stderr[-3000:]
    a, b = load_file(straight / "export" / "model.safetensors"), load_file(killed / "export" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)

    def log(run_dir):
        return [(r["kind"], r["step"], r.get("loss"), r.get("rows_crc"), r.get("val_loss"))
                for r in read_metrics(run_dir / "metrics.jsonl")]

    assert log(straight) == log(killed)  # same data, masks and losses at every step; no line twice


def test_gte_run_stage0_feeds_stage_1_and_the_report_shows_the_mlm_loss(tmp_path, setup, one_thread):
    from gte_model.core.config import load_config
    from train.app.cli import main as gte
    from train.app.pipeline import PipelineConfig
    from train.app.report import write_report

    root = tmp_path / "pipeline"
    cfg = load_config(PipelineConfig, None, [f"run.dir={root}", "run.stage0=true"])
    assert cfg.stage1.model.init_from == str(root / "stage0" / "export")
    assert cfg.stage0.data.train_dir == cfg.prep.out_dir and cfg.stage0.run.dir == str(root / "stage0")
    plain = load_config(PipelineConfig, None, [f"run.dir={root}", "stage1.model.init_from=gte-mini"])
    assert plain.stage1.model.init_from == "gte-mini"  # without stage 0 the user's start stays
    pairs, init = setup
    assert gte(_args(root / "stage0", pairs, init, "train.max_steps=4", "train.checkpoint_every=0")) == 0
    report = write_report(root).read_text()
    assert "## Stage 0: masked-LM loss" in report and "| 4 |" in report
    assert (root / "report.png").is_file()
