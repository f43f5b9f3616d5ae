"""trust_remote_code reaches every command that loads a model: a tiny folder that needs its own code (config.json
auto_map -> modeling_tiny.py, tests/train/test_remote_code.py) is refused by `gte eval`, `gte encode`, `gte export`,
`gte rotate`, `gte merge`, `gte mine` (its model and its teacher) and a training teacher, each refusal naming the
switch of the command that was run, and loads with that switch on; `gte run` with stage1.model.trust_remote_code=true
alone starts from such a folder and finishes through the merge, the rotation and every evaluation (and `gte mlm`
with its model.trust_remote_code). A refusal inside one of `gte run`'s phases names the pipeline's key that decides it
(stage1.model.trust_remote_code, stage2.teacher.trust_remote_code, ...), and a phase's key that the pipeline sets
from another one is refused when set true against it. A key added to a phase's section at its default
(stage0.model.trust_remote_code) reruns no phase after it."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from data_prep.mine import mine
from gte_model import load_model
from gte_model.assets import ModelLoadError
from gte_model.embed_config import TeacherConfig
from gte_model.encode import encode_main
from gte_model.export import export_main
from gte_model.merge import merge_main
from gte_model.rotate_cli import rotate_main
from tests.conftest import WORDS
from tests.data_prep.helpers import mine_config, sentences, write_pairs_dir
from tests.train.test_remote_code import remote_folder
from train.eval.evaluate import main as eval_main
from train.teacher import TeacherVectors

REFUSED = r"config.json: auto_map names the folder's own code \(modeling_tiny.py\).*trust it: "


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return remote_folder(tmp_path_factory.mktemp("remote") / "model")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    docs, queries = sentences(40, 1), sentences(40, 2)
    return write_pairs_dir(tmp_path_factory.mktemp("pairs") / "pairs", {"alpha": list(zip(queries, docs))})


def _is_remote(path) -> bool:
    return type(load_model(path, trust_remote_code=True).backbone).__name__ == "TinyRemoteModel"


@pytest.mark.integration  # STS-B
def test_gte_eval_needs_its_flag(folder, tmp_path, one_thread):
    argv = [str(folder), "--tasks", "sts-b", "--out", str(tmp_path / "eval"), "--batch-size", "256"]
    with pytest.raises(ModelLoadError, match=REFUSED + "--trust-remote-code$"):
        eval_main(argv)
    assert eval_main([*argv, "--trust-remote-code"]) == 0
    results = json.loads((tmp_path / "eval" / "results.json").read_text())["results"]
    assert isinstance(results["sts-b"]["cosine_spearman"], float)


def test_gte_encode_needs_its_flag(folder, capsys):
    with pytest.raises(ModelLoadError, match=REFUSED + "--trust-remote-code$"):
        encode_main(["--model", str(folder), "the cat", "a dog"])
    assert encode_main(["--model", str(folder), "--trust-remote-code", "the cat", "a dog"]) == 0
    assert "dim=32" in capsys.readouterr().out


def test_gte_export_needs_its_flag_and_its_onnx_graph_reads_the_trusted_folder_back(folder, tmp_path):
    pytest.importorskip("onnxruntime")
    with pytest.raises(ModelLoadError, match=REFUSED + "--trust-remote-code$"):
        export_main([str(folder), str(tmp_path / "out")])
    assert export_main([str(folder), str(tmp_path / "out"), "--trust-remote-code", "--onnx"]) == 0
    assert (tmp_path / "out" / "onnx" / "model.onnx").is_file() and _is_remote(tmp_path / "out")


def test_gte_rotate_needs_its_flag(folder, pairs, tmp_path, one_thread):
    argv = [str(folder), str(tmp_path / "out"), "--data", str(pairs), "--rows", "20", "--fp32"]
    with pytest.raises(ModelLoadError, match=REFUSED + "--trust-remote-code$"):
        rotate_main(argv)
    assert rotate_main([*argv, "--trust-remote-code"]) == 0
    assert load_model(tmp_path / "out", trust_remote_code=True).rotation is not None and _is_remote(tmp_path / "out")


def test_gte_merge_needs_its_key(folder, tmp_path):
    argv = [f"models=[{folder},{folder}]", "weights=[0.5,0.5]", f"out_dir={tmp_path / 'merged'}"]
    with pytest.raises(ModelLoadError, match=REFUSED + "trust_remote_code=true$"):
        merge_main(argv)
    assert merge_main([*argv, "trust_remote_code=true"]) == 0
    assert _is_remote(tmp_path / "merged")


def test_gte_mine_needs_its_key_for_the_model_and_the_teachers_for_the_teacher(folder, pairs, tmp_path, one_thread):
    teacher = TeacherConfig(model=str(folder), batch_size=16, max_seq_len=32, bf16=False, shard_size=64)
    cfg = mine_config(tmp_path, pairs, "mined", model=str(folder), teacher=teacher,
                      **{"negatives.margin": -10.0, "negatives.max_score": 10.0})
    with pytest.raises(ModelLoadError, match=REFUSED + "trust_remote_code=true$") as refused:
        mine(cfg)
    assert "teacher." not in str(refused.value)
    cfg.trust_remote_code = True
    with pytest.raises(ModelLoadError, match=REFUSED + "teacher.trust_remote_code=true$"):
        mine(cfg)
    cfg.teacher.trust_remote_code = True
    out = mine(cfg)
    record = json.loads((out / "gte_record.json").read_text())
    assert not [k for k in record["config"] if "trust_remote_code" in k]  # a permission: no part of the output's make


def test_a_training_teacher_needs_the_teachers_key(folder, tmp_path):
    cfg = TeacherConfig(model=str(folder), max_seq_len=32, bf16=False)
    with pytest.raises(ModelLoadError, match=REFUSED + "teacher.trust_remote_code=true$"):
        TeacherVectors(cfg, tmp_path / "cache")
    cfg.trust_remote_code = True
    assert type(TeacherVectors(cfg, tmp_path / "cache").model.backbone).__name__ == "TinyRemoteModel"


def _pair_file(path, n: int) -> None:
    """Question/answer rows over the test vocabulary (the remote folder's tokenizer knows every word)."""
    rows = [{"question": " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(3)) + f" {i}",
             "answer": " ".join(WORDS[(i * 5 + j * 3) % len(WORDS)] for j in range(8)) + f" {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


TINY_RUN = [
    "prep.sources=[]",
    "prep.split.heldout_fraction=0.25",
    "prep.split.max_heldout_queries=12",
    "prep.decontaminate.enabled=false",
    "stage1.model.trust_remote_code=true",  # the only switch: every later phase follows it
    "stage1.data.val_rows=0",
    "stage1.train.global_batch_size=16",
    "stage1.train.chunk_size=16",
    "stage1.train.max_steps=2",
    "stage1.train.checkpoint_every=0",
    "stage1.train.eval_every=0",
    "stage1.train.precision=fp32",
    "stage1.optim.warmup_steps=1",
    "stage1.log.wandb=off",
    "mine.max_queries_per_source=40",
    "mine.embed.bf16=false",
    "mine.negatives.margin=-10.0",
    "mine.negatives.max_score=10.0",
    "stage2.data.val_rows=0",
    "stage2.train.global_batch_size=8",
    "stage2.train.chunk_size=16",
    "stage2.train.max_steps=2",
    "stage2.train.checkpoint_every=0",
    "stage2.train.eval_every=0",
    "stage2.train.precision=fp32",
    "stage2.optim.warmup_steps=1",
    "stage2.log.wandb=off",
    "merge.models=[base,stage2]",
    "merge.weights=[0.5,0.5]",
    "rotate.rows=20",
    "eval.tasks=[beir]",
    "eval.bf16=false",
]


@pytest.mark.slow  # one tiny pipeline: about 17 s on the 2-core VM
def test_gte_run_trusting_stage_1_alone_finishes_from_a_folder_with_its_own_code(folder, tmp_path, one_thread):
    from train.app.cli import main as gte

    _pair_file(tmp_path / "qa.jsonl", 60)
    run = tmp_path / "run"
    files = f"prep.files=[{{name: qa, path: {tmp_path / 'qa.jsonl'}, query: question, positive: answer}}]"
    argv = ["run", f"run.dir={run}", files, f"stage1.model.init_from={folder}", *TINY_RUN]
    assert gte(argv) == 0
    for phase in ("mine", "merge"):  # trusting is a permission, left out of the phase records (same digests)
        assert not [k for k in json.loads((run / "phases" / f"{phase}.json").read_text())["config"]
                    if "trust_remote_code" in k]
    for name in ("base", "stage1", "stage2", "merged"):
        assert "beir/qa" in json.loads((run / "eval" / name / "results.json").read_text())["results"], name
    assert _is_remote(run / "export") and load_model(run / "export", trust_remote_code=True).rotation is not None


def test_gte_run_decides_in_one_place_which_phases_trust_their_models_code(tmp_path):
    from gte_model.core.config import load_config
    from train.app.pipeline import PipelineConfig

    plain = load_config(PipelineConfig, None, [f"run.dir={tmp_path}"])
    assert not (plain.mine.trust_remote_code or plain.stage2.model.trust_remote_code or plain.merge.trust_remote_code
                or plain.stage0.model.trust_remote_code)
    cfg = load_config(PipelineConfig, None, [f"run.dir={tmp_path}", "stage1.model.trust_remote_code=true",
                                             "mine.teacher.model=all-mpnet-base-v2",
                                             "mine.teacher.trust_remote_code=true"])
    assert cfg.mine.trust_remote_code and cfg.stage2.model.trust_remote_code and cfg.merge.trust_remote_code
    assert cfg.stage0.model.trust_remote_code  # with run.stage0 stage 1 starts from stage 0's export
    assert cfg.merge_config().trust_remote_code and cfg.stage2.teacher.trust_remote_code  # stage 2 distils from it
    tuned = load_config(PipelineConfig, None, [f"run.dir={tmp_path}", "run.tune_teacher=true",
                                               "teacher_ft.model.init_from=all-mpnet-base-v2",
                                               "teacher_ft.model.trust_remote_code=true",
                                               "stage2.loss.distill_weight=1.0"])
    assert tuned.stage2.teacher.trust_remote_code and not tuned.mine.trust_remote_code


@pytest.mark.parametrize(("overrides", "decider"), [
    (["stage2.model.trust_remote_code=true"], "stage1.model.trust_remote_code"),
    (["mine.trust_remote_code=true"], "stage1.model.trust_remote_code"),
    (["merge.trust_remote_code=true"], "stage1.model.trust_remote_code"),
    (["stage0.model.trust_remote_code=true"], "stage1.model.trust_remote_code"),
    (["mine.teacher.model=all-mpnet-base-v2", "stage2.teacher.trust_remote_code=true"],
     "mine.teacher.trust_remote_code"),
    (["run.tune_teacher=true", "teacher_ft.model.init_from=all-mpnet-base-v2", "stage2.loss.distill_weight=1.0",
      "stage2.teacher.trust_remote_code=true"], "teacher_ft.model.trust_remote_code"),
])
def test_gte_run_refuses_trust_set_on_a_key_another_key_decides(tmp_path, overrides, decider):
    from gte_model.core.config import ConfigError, load_config
    from train.app.pipeline import PipelineConfig

    set_key = overrides[-1].removesuffix("=true")
    with pytest.raises(ConfigError, match=f"{set_key}=true: in `gte run` {decider} decides .* set {decider}=true"):
        load_config(PipelineConfig, None, [f"run.dir={tmp_path}", *overrides])
    agreed = load_config(PipelineConfig, None, [f"run.dir={tmp_path}", *overrides, f"{decider}=true"])
    assert agreed.trust_source(set_key) == decider  # both true: consistent, accepted


def test_a_refusal_inside_gte_run_stage_1_names_the_stage_1_key(folder, tmp_path, capsys, one_thread):
    from train.app.cli import main as gte

    _pair_file(tmp_path / "qa.jsonl", 60)
    files = f"prep.files=[{{name: qa, path: {tmp_path / 'qa.jsonl'}, query: question, positive: answer}}]"
    run = [a for a in TINY_RUN if a != "stage1.model.trust_remote_code=true"]
    assert gte(["run", f"run.dir={tmp_path / 'run'}", files, f"stage1.model.init_from={folder}", *run]) == 2
    err = capsys.readouterr().err
    assert "modeling_tiny.py" in err and err.rstrip().endswith("trust it: stage1.model.trust_remote_code=true")


@pytest.mark.parametrize(("overrides", "flag"), [
    ([], "stage2.teacher.trust_remote_code=true"),  # stage 2's own teacher
    (["mine.teacher.model={folder}"], "mine.teacher.trust_remote_code=true"),  # mining's, which stage 2 reuses
])
def test_a_refusal_of_stage_2s_teacher_in_gte_run_names_the_key_that_decides_it(folder, tmp_path, overrides, flag):
    from gte_model.core.config import load_config
    from gte_model.load import UntrustedCodeError
    from train.app.pipeline import Phase, PipelineConfig, _naming_run_keys

    cfg = load_config(PipelineConfig, None, [f"run.dir={tmp_path}", f"stage2.teacher.model={folder}",
                                             "stage2.loss.distill_weight=1.0",
                                             *(o.format(folder=folder) for o in overrides)])
    stage2 = _naming_run_keys(cfg, Phase("stage2", cfg.stage2, lambda force: TeacherVectors(
        cfg.stage2.teacher, tmp_path / "cache")))
    with pytest.raises(UntrustedCodeError, match=REFUSED + f"{flag}$"):
        stage2.job(False)


def test_a_refusal_of_stage_2s_model_in_gte_run_names_stage_1s_key(folder, tmp_path):
    from gte_model.core.config import load_config
    from gte_model.load import UntrustedCodeError
    from train.app.pipeline import Phase, PipelineConfig, _naming_run_keys
    from train.build import build_model

    cfg = load_config(PipelineConfig, None, [f"run.dir={tmp_path}"])
    cfg.stage2.model.init_from = str(folder)  # as if stage 1's export carried this code
    stage2 = _naming_run_keys(cfg, Phase("stage2", cfg.stage2, lambda force: build_model(cfg.stage2)))
    with pytest.raises(UntrustedCodeError, match=REFUSED + "stage1.model.trust_remote_code=true$"):
        stage2.job(False)


def test_gte_mlm_needs_its_key(folder, tmp_path, capsys, one_thread):
    from tests.train.test_mlm import _args, _write_corpus
    from train.app.cli import main as gte

    pairs = _write_corpus(tmp_path / "pairs")
    argv = _args(tmp_path / "mlm", pairs, folder, "train.max_steps=2", "train.checkpoint_every=0")
    assert gte(argv) == 2
    err = capsys.readouterr().err
    assert "modeling_tiny.py" in err and err.rstrip().endswith("model.trust_remote_code=true")
    assert gte([*argv, "model.trust_remote_code=true"]) == 0, capsys.readouterr().err[-2000:]
    assert _is_remote(tmp_path / "mlm" / "export")


@dataclass
class _Section:
    lr: float = 1e-5


@dataclass
class _SectionWithAKeyAddedSince(_Section):
    trust_remote_code_like: bool = False  # any key a later version adds, at its default


def test_a_key_added_at_its_default_reruns_no_phase_downstream(tmp_path):
    from train.app.pipeline import Phase, _run_phase

    ran = []
    first = _run_phase(tmp_path, Phase("first", _Section(), lambda force: ran.append("first")), "")
    _run_phase(tmp_path, Phase("second", _Section(), lambda force: ran.append("second")), first)
    again = _run_phase(tmp_path, Phase("first", _SectionWithAKeyAddedSince(), lambda force: ran.append("first")), "")
    _run_phase(tmp_path, Phase("second", _Section(), lambda force: ran.append("second")), again)
    assert ran == ["first", "second"] and again == first
