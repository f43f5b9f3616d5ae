"""engine=ray writes the same bytes as engine=local: prep (user files with planted duplicates, the built-in sources
capped small) and mining (any worker count). One local Ray (2 CPUs, 1 GiB object store) serves the whole module."""

from __future__ import annotations

import builtins
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_prep.mine import mine
from data_prep.prep import prep
from gte_model.core.errors import UserError
from gte_model.embed_config import TeacherConfig
from gte_model.export import export_model
from tests.conftest import make_tiny_model
from tests.data_prep.helpers import mine_config, prep_config, write_prep_sources

ray = pytest.importorskip("ray")

# Manifest keys that describe the run (timings, memory, engine settings, where it was written and where its vectors
# were cached), not the output.
RUN_KEYS = ("wall_time_s", "step_seconds", "step_peak_rss_mb", "step_peak_private_mb", "peak_rss_mb",
            "peak_private_mb", "mining")
RUN_CONFIG_KEYS = ("out_dir", "engine", "ray", "num_proc")


@pytest.fixture(scope="module")
def ray_cluster():
    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=1 << 30, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    ray.shutdown()


def output_content(folder: Path) -> dict[str, bytes]:
    """Every file of an output (report.md aside: it prints timings), the manifest without its run keys."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if not path.is_file() or rel in ("report.md", "mine_stats.json"):
            continue
        data = path.read_bytes()
        if rel == "manifest.json":
            manifest = {k: v for k, v in json.loads(data).items() if k not in RUN_KEYS}
            for key in ("config", "mine_config"):
                if key in manifest:
                    manifest[key] = {k: v for k, v in manifest[key].items() if k not in RUN_CONFIG_KEYS}
                    for section in ("embed", "teacher"):  # where each run kept its vectors
                        manifest[key].get(section, {}).pop("cache_dir", None)
            data = json.dumps(manifest, sort_keys=True).encode()
        files[rel] = data
    return files


def write_planted_duplicates(folder: Path) -> None:
    """The files of `write_prep_sources` plus exact copies (within faq, and from faq into notes) and near copies."""
    write_prep_sources(folder)
    faq = [json.loads(line) for line in (folder / "faq.jsonl").read_text().splitlines()]
    planted = [dict(faq[10], id="copy1"), dict(faq[20], id="copy2"),
               dict(faq[30], answer=faq[30]["answer"] + " again", id="near1")]
    with open(folder / "faq.jsonl", "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in planted)
    with open(folder / "notes.jsonl", "a") as fh:
        fh.write(json.dumps({"title": faq[40]["question"], "body": faq[40]["answer"]}) + "\n")


# ---- prep --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_prep_of_user_files_with_planted_duplicates_equals_local(tmp_path, ray_cluster):
    write_planted_duplicates(tmp_path)
    local = prep(prep_config(tmp_path, tmp_path / "local"))
    on_ray = prep(prep_config(tmp_path, tmp_path / "ray", engine="ray", **{"ray.num_workers": 2}))
    stats = json.loads((local / "manifest.json").read_text())["stats"]
    assert stats["faq"]["exact_dups_within"] == 2 and stats["notes"]["exact_dups_across"] == 1
    assert stats["faq"]["near_dups_within"] == 1  # pair mode: the planted copy of write_prep_sources has another query
    assert output_content(on_ray) == output_content(local)
    assert "Engine: ray" in (on_ray / "report.md").read_text()
    private = json.loads((on_ray / "manifest.json").read_text())["peak_private_mb"]  # the driver and a worker
    assert private["main"] > 0 and private["largest_worker"] > 0


@pytest.mark.slow
@pytest.mark.integration
def test_ray_prep_of_builtin_sources_capped_equals_local(tmp_path, ray_cluster):
    from data_prep.prep import PrepConfig
    from gte_model.core.config import load_config

    def run(name: str, *extra: str) -> Path:
        return prep(load_config(PrepConfig, "configs/prep.yaml",
                                [f"out_dir={tmp_path / name}", "max_pairs.default=300", *extra]))

    local, on_ray = run("local"), run("ray", "engine=ray", "ray.num_workers=2")
    stats = json.loads((local / "manifest.json").read_text())["stats"]
    assert sum(s["exact_dups_within"] + s["near_dups_within"] for s in stats.values()) > 0
    assert output_content(on_ray) == output_content(local)


@pytest.mark.slow
@pytest.mark.integration
def test_a_killed_ray_prep_reruns_only_the_sources_it_had_not_staged(tmp_path, ray_cluster, capfd):
    out = tmp_path / "pairs"
    args = [f"out_dir={out}", "max_pairs.default=300"]
    cmd = [sys.executable, "-m", "train.app.cli", "prep", "configs/prep.yaml", *args, "engine=ray",
           "ray.num_workers=2", "ray.num_cpus=2"]
    child = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    stage = tmp_path / ".pairs.prep-stage"
    deadline = time.monotonic() + 300
    while not list(stage.glob("*/source-000/done.json")) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # the driver and the Ray it started, mid step 1
    child.wait()
    finished = sorted(p.parent.name for p in stage.glob("*/source-*/done.json"))
    assert finished and len(finished) < 6 and not out.exists()
    capfd.readouterr()
    from data_prep.prep import PrepConfig
    from gte_model.core.config import load_config

    resumed = prep(load_config(PrepConfig, "configs/prep.yaml", [*args, "engine=ray", "ray.num_workers=2"]))
    err = capfd.readouterr().err
    assert err.count("step 1 reused") == len(finished)  # the finished sources are loaded, not read again
    assert not stage.exists()  # a finished prep removes its staging
    fresh = prep(load_config(PrepConfig, "configs/prep.yaml", [f"out_dir={tmp_path / 'fresh'}", *args[1:]]))
    assert output_content(resumed) == output_content(fresh)


def test_engine_ray_without_ray_installed_is_one_line_user_error(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    write_prep_sources(tmp_path)
    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(UserError) as info:
        prep(prep_config(tmp_path, tmp_path / "out", engine="ray"))
    assert str(info.value) == "engine=ray: Ray is not installed; run `pip install -e .[ray]` or set engine=local"
    assert not (tmp_path / "out").exists()


# ---- mining ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_mining_equals_local_for_one_and_two_workers(tmp_path, pairs_dir, tiny_model, ray_cluster):
    # shard_size 64 and query_chunk 16: several cache shards to spread over actors, several search tasks.
    common = {"index.query_chunk": 16}
    local = mine(mine_config(tmp_path, pairs_dir, "local", **common), tiny_model)
    outputs = [mine(mine_config(tmp_path, pairs_dir, f"ray{n}", engine="ray", **common, **{"ray.num_workers": n}),
                    tiny_model) for n in (1, 2)]
    stats = json.loads((outputs[1] / "mine_stats.json").read_text())["sources"]["alpha"]
    assert stats["embedded_texts"] > 64 and stats["cached_texts"] == 0  # its own cache: every text via the actors
    for out in outputs:
        assert output_content(out) == output_content(local)
    # IVF shards built in Ray tasks: the same indexes as built here
    ivf = {**common, "index.shards": 2, "index.ivf_threshold": 20, "index.nlist": 2}
    local_ivf = mine(mine_config(tmp_path, pairs_dir, "local-ivf", **ivf), tiny_model)
    ray_ivf = mine(mine_config(tmp_path, pairs_dir, "ray-ivf", engine="ray", **ivf), tiny_model)
    ivf_stats = json.loads((ray_ivf / "mine_stats.json").read_text())["sources"]["alpha"]
    assert ivf_stats["index"] == "ivf" and ivf_stats["index_shards"] == 2
    assert output_content(ray_ivf) == output_content(local_ivf)
    again = mine(mine_config(tmp_path, pairs_dir, "ray1", engine="ray", overwrite=True, **common), tiny_model)
    reused = json.loads((again / "mine_stats.json").read_text())["sources"]["alpha"]
    assert reused["embedded_texts"] == 0 and reused["cached_texts"] == stats["embedded_texts"]  # the shared cache


@pytest.mark.slow
def test_ray_mining_with_a_teacher_equals_local(tmp_path, pairs_dir, tiny_model, ray_cluster):
    (tmp_path / "t").mkdir()
    teacher_dir = export_model(make_tiny_model(tmp_path / "t", seed=7), tmp_path / "teacher")
    teacher = TeacherConfig(model=str(teacher_dir), batch_size=16, max_seq_len=32, bf16=False, shard_size=64)
    common = {"index.query_chunk": 16, "negatives.margin": -10.0, "negatives.max_score": 10.0,
              "negatives.teacher_ratio": 0.9}
    local = mine(mine_config(tmp_path, pairs_dir, "local", teacher=teacher, **common), tiny_model)
    on_ray = mine(mine_config(tmp_path, pairs_dir, "ray", teacher=teacher, engine="ray", **common,
                              **{"ray.num_workers": 2}), tiny_model)
    stats = json.loads((local / "mine_stats.json").read_text())["sources"]["alpha"]
    assert stats["dropped_teacher"] > 0  # the teacher vetted candidates, on both engines alike
    assert output_content(on_ray) == output_content(local)


# ---- paths anywhere ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_prep_reads_and_writes_fsspec_urls_and_gives_the_local_output(tmp_path, ray_cluster):
    import fsspec

    write_planted_duplicates(tmp_path)
    fs = fsspec.filesystem("memory")
    for name in ("faq.jsonl", "notes.jsonl"):
        fs.pipe(f"memory://in/{name}", (tmp_path / name).read_bytes())
    local = prep(prep_config(tmp_path, tmp_path / "local"))
    cfg = prep_config(tmp_path, "memory://out", engine="ray")
    for spec in cfg.files:
        spec.path = spec.path.replace(str(tmp_path), "memory://in")
    assert prep(cfg) == "memory://out"
    fs.get("memory://out", str(tmp_path / "copy"), recursive=True)
    got, want = output_content(tmp_path / "copy"), output_content(local)
    assert set(got) == set(want) and "gte_record.json" in got
    assert all(got[rel] == want[rel] for rel in want if rel.endswith((".parquet", ".jsonl", ".tsv")))
    assert json.loads(got["manifest.json"])["stats"] == json.loads(want["manifest.json"])["stats"]
    before = fs.info("memory://out/manifest.json")["created"]
    assert prep(cfg) == "memory://out"  # a re-run finds the remote output complete and uploads nothing
    assert fs.info("memory://out/manifest.json")["created"] == before


def test_prep_with_file_urls_gives_the_plain_path_output(tmp_path):
    write_prep_sources(tmp_path)
    local = prep(prep_config(tmp_path, tmp_path / "local"))
    cfg = prep_config(tmp_path, f"file://{tmp_path / 'by-url'}")
    for spec in cfg.files:
        spec.path = f"file://{spec.path}"
    assert prep(cfg) == tmp_path / "by-url"
    got, want = output_content(tmp_path / "by-url"), output_content(local)  # the record and config name the URLs
    assert set(got) == set(want)
    assert all(got[rel] == want[rel] for rel in want if rel.endswith((".parquet", ".jsonl", ".tsv")))
    assert json.loads(got["manifest.json"])["stats"] == json.loads(want["manifest.json"])["stats"]


def test_mining_reads_and_writes_fsspec_urls_and_gives_the_local_output(tmp_path, pairs_dir, tiny_model):
    import fsspec

    fs = fsspec.filesystem("memory")
    (pairs_dir / "beir" / "alpha" / "corpus.jsonl").write_text('{"_id": "d0", "text": "a doc"}\n')
    fs.put(str(pairs_dir), "memory://in/pairs", recursive=True)
    local = mine(mine_config(tmp_path, pairs_dir, "local"), tiny_model)
    cfg = mine_config(tmp_path, pairs_dir, "unused", input_dir="memory://in/pairs", out_dir="memory://out/mined")
    cfg.embed.cache_dir = str(tmp_path / "cache-url")
    assert mine(cfg, tiny_model) == "memory://out/mined"
    fs.get("memory://out/mined", str(tmp_path / "copy"), recursive=True)
    got, want = output_content(tmp_path / "copy"), output_content(local)
    mined = [rel for rel in want if "/train-" in rel]  # the local output points at its input's held-out files
    assert mined and all(got[rel] == want[rel] for rel in mined) and {r for r in got if "/train-" in r} == set(mined)
    held = json.loads(got["manifest.json"])["sources"]["alpha"]  # copied along: the local input copy is gone
    assert not Path(held["beir"]).is_absolute() and (tmp_path / "copy" / held["beir"] / "corpus.jsonl").is_file()
    assert all((tmp_path / "copy" / f).is_file() for f in held["heldout"]["files"])
    before = fs.info("memory://out/mined/manifest.json")["created"]
    assert mine(cfg, tiny_model) == "memory://out/mined"  # complete for this input listing: nothing uploaded
    assert fs.info("memory://out/mined/manifest.json")["created"] == before
