"""merge.fit.split=dev: the merge weights fit on a pairs dir's dev rows (never trained on), recorded with the split and
every grid point's scores, which the pipeline's report shows; configs/domain.yaml fits its merge that way."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from gte_model import load_model
from gte_model.core.config import ConfigError, load_config
from gte_model.core.errors import UserError
from gte_model.core.pairs import fit_examples
from gte_model.export import export_model
from gte_model.merge import fit_weights, merge_main
from tests.conftest import make_tiny_model
from tests.data_prep.helpers import sentences, write_pairs_dir
from tests.train.test_domain_config import ROOT
from tests.train.tinydata import write_tiny_pairs
from train.app.pipeline import PipelineConfig
from train.app.report import _merge_lines


def _queries(pairs, source, split):
    return set(pq.read_table(pairs / source / f"{split}-00000.parquet").column("query").to_pylist())


def test_fit_examples_read_the_dev_rows_when_asked_and_say_how_to_cut_them_when_there_are_none(tmp_path):
    pairs = write_tiny_pairs(tmp_path / "pairs")
    dev = fit_examples([str(pairs)], 1000, "fit.data", "fit", split="dev")
    train = fit_examples([str(pairs)], 1000, "fit.data", "fit")
    for source in ("alpha", "beta", "gamma"):
        assert set(dev[f"pairs/{source}"][0]) == _queries(pairs, source, "dev")
        assert set(train[f"pairs/{source}"][0]) == _queries(pairs, source, "train")
    plain = write_pairs_dir(tmp_path / "plain", {"s": list(zip(sentences(8, 1), sentences(8, 2)))})
    with pytest.raises(UserError, match=r"fit.data=.*no source with dev rows to fit \(gte prep split.dev_fraction"):
        fit_examples([str(plain)], 8, "fit.data", "fit", split="dev")


def test_gte_merge_fits_on_the_dev_rows_and_the_report_lists_every_grid_point(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    a_dir = export_model(make_tiny_model(tmp_path / "a", seed=0), tmp_path / "ea")
    b_dir = export_model(make_tiny_model(tmp_path / "b", seed=1), tmp_path / "eb")
    pairs = write_tiny_pairs(tmp_path / "pairs")
    out = tmp_path / "merged"
    assert merge_main([f"models=[{a_dir},{b_dir}]", f"fit.data=[{pairs}]", "fit.split=dev", "fit.rows=16",
                       "fit.step=0.5", "bf16=false", f"out_dir={out}"]) == 0
    meta = json.loads((out / "gte_export.json").read_text())["train_config"]["merge"]
    assert meta["fit_split"] == "dev"
    tasks = fit_examples([str(pairs)], 16, "fit.data", "fit", split="dev")
    best, table = fit_weights([load_model(a_dir), load_model(b_dir)], tasks, step=0.5, log=lambda *_: None)
    assert meta["weights"] == list(best)
    assert {k: pytest.approx(v, abs=1e-6) for k, v in meta["fit"]["0.0,1.0"].items()} == table[(0.0, 1.0)]

    lines = "\n".join(_merge_lines(out / "gte_export.json"))
    assert f"{best[0]:g} x `{a_dir}`" in lines and "Fit on the dev rows of merge.fit.data" in lines
    for weights in ("0.0 / 1.0", "0.5 / 0.5", "1.0 / 0.0"):
        assert f"| {weights} | " in lines
    assert "| pairs/alpha | pairs/beta | pairs/gamma | mean |" in lines


def test_the_domain_recipe_fits_its_merge_on_prep_dev_rows_and_needs_a_dev_split():
    args = [f"run.dir={ROOT}/runs/domain-test"]
    cfg = load_config(PipelineConfig, ROOT / "configs" / "domain.yaml", args)
    assert cfg.merge.weights == [] and cfg.merge.fit.split == "dev" and cfg.merge.fit.data == ["pairs"]
    assert cfg.merge_config().fit.data == [cfg.prep.out_dir] and cfg.prep.split.dev_fraction > 0
    assert cfg.stage1.train.epochs == 1
    with pytest.raises(ConfigError, match=r"merge.fit.split=dev with merge.fit.data=\[pairs\]: .*prep.split.dev_fr"):
        load_config(PipelineConfig, ROOT / "configs" / "domain.yaml", [*args, "prep.split.dev_fraction=0"])
