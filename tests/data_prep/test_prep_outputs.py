"""What `gte prep` does with its output folder: never deletes what it did not write, builds atomically, decides
"already done" from the completion record (config + input fingerprints) and refuses to call zero rows a success."""

from __future__ import annotations

import json
import os

import pytest

from data_prep import prep as prep_module
from data_prep.prep import NoTrainingRows, PrepConfig, prep
from data_prep.sources import stsb_test_sentences
from gte_model.core.atomic import OWNER_FILE
from gte_model.core.config import ConfigError, load_config
from gte_model.core.errors import UserError
from gte_model.core.record import RECORD_FILE, StaleOutput, read_record
from tests.data_prep.helpers import prep_config, write_prep_sources

pytestmark = pytest.mark.integration


def _leftovers(folder) -> list[str]:
    """Temp folders of an atomic build left beside the output."""
    return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# ---- finding 3: data loss -------------------------------------------------------------------------------------
@pytest.mark.parametrize("overwrite", [False, True])
def test_prep_never_deletes_a_folder_it_did_not_write(tmp_path, overwrite):
    write_prep_sources(tmp_path)
    out = tmp_path / "mine_of_the_user"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # what made the old code take the folder for its own
    (out / "thesis.tex").write_text("years of work")
    with pytest.raises(UserError, match=rf"out_dir={out}: the folder is not empty and was not written by gte"):
        prep(prep_config(tmp_path, out, overwrite=overwrite))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "thesis.tex"]
    assert (out / "thesis.tex").read_text() == "years of work" and not _leftovers(tmp_path)


def test_prep_never_replaces_a_mine_output_even_with_overwrite(tmp_path, pairs_dir, tiny_model):
    from data_prep.mine import mine
    from tests.data_prep.helpers import mine_config, read_rows

    mined = mine(mine_config(tmp_path, pairs_dir, "mined", sources=["beta"]), tiny_model)
    rows = read_rows(mined)
    write_prep_sources(tmp_path)
    for overwrite in (False, True):
        with pytest.raises(UserError, match=r"out_dir=.*mined: holds the output of `gte mine`, which `gte prep` "
                                            r"never replaces; nothing was deleted"):
            prep(prep_config(tmp_path, mined, overwrite=overwrite))
    assert read_rows(mined) == rows and read_record(mined).kind == "mine"


def test_an_interrupted_prep_leaves_the_old_output_as_it_was(tmp_path, monkeypatch):
    write_prep_sources(tmp_path)
    out = prep(prep_config(tmp_path, tmp_path / "pairs"))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # a kill while writing the new output

    monkeypatch.setattr(prep_module, "write_report", crash)
    with pytest.raises(KeyboardInterrupt):
        prep(prep_config(tmp_path, out, overwrite=True))
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert not _leftovers(tmp_path)


# ---- finding 4: stale outputs ---------------------------------------------------------------------------------
def test_prep_refuses_an_output_built_from_an_older_version_of_an_input_file(tmp_path):
    write_prep_sources(tmp_path)
    out = prep(prep_config(tmp_path, tmp_path / "pairs"))
    with open(tmp_path / "faq.jsonl", "a") as fh:
        fh.write(json.dumps({"question": "a new question", "answer": "a brand new answer here", "id": "new"}) + "\n")
    with pytest.raises(StaleOutput, match=r"input files\.0\.path .*overwrite=true"):
        prep(prep_config(tmp_path, out))


def test_prep_keeps_a_complete_output_when_only_speed_settings_change(tmp_path, capsys):
    write_prep_sources(tmp_path)
    out = prep(prep_config(tmp_path, tmp_path / "pairs"))
    stamp = (out / RECORD_FILE).stat().st_mtime_ns
    prep(prep_config(tmp_path, out, num_proc=2, batch_size=7))
    assert (out / RECORD_FILE).stat().st_mtime_ns == stamp
    assert "nothing to do" in capsys.readouterr().err


def test_prep_overwrite_rebuilds_even_a_complete_output_of_the_same_config(tmp_path):
    write_prep_sources(tmp_path)
    out = prep(prep_config(tmp_path, tmp_path / "pairs"))
    manifest = json.loads((out / "manifest.json").read_text())
    os.utime(out / RECORD_FILE, ns=(0, 0))
    prep(prep_config(tmp_path, out, overwrite=True))
    assert (out / RECORD_FILE).stat().st_mtime_ns != 0 and (out / OWNER_FILE).is_file()
    assert json.loads((out / "manifest.json").read_text())["sources"] == manifest["sources"]


# ---- finding 8: zero training rows ----------------------------------------------------------------------------
def _one_file(tmp_path, lines: list[str], **over) -> PrepConfig:
    (tmp_path / "in.jsonl").write_text("".join(line + "\n" for line in lines))
    overrides = ["sources=[]", f"out_dir={tmp_path / 'out'}", f"files=[{{name: in, path: {tmp_path}/in.jsonl}}]",
                 *[f"{k}={v}" for k, v in over.items()]]
    return load_config(PrepConfig, None, overrides)


def _pair(query: str, positive: str = "a positive text of several words") -> str:
    return json.dumps({"query": query, "positive": positive})


@pytest.mark.parametrize("lines, over, cause, fix", [
    ([], {}, "no input rows", "check the paths and contents of files"),
    (["not json", '{"q": 1}'], {"on_error": "skip"}, r"all 2 rows were malformed .*in.jsonl:1: invalid JSON",
     "fix those rows"),
    ([_pair(f"query {i}") for i in range(4)], {"length.positive_min_tokens": 50},
     r"cleaning dropped every pair \(positive_too_short 4\)", "loosen the length bounds"),
    ([_pair("what is a cat")] * 5, {"split.heldout_fraction": 0.99},
     r"all 1 pairs left after dedup went to the held-out split .*held out 1", "lower split.heldout_fraction"),
    ([_pair(s) for s in stsb_test_sentences()[:3]], {"decontaminate.heldout": False},
     "decontamination removed all 3 remaining training pairs", "turn off the evaluation texts that match"),
])
def test_prep_with_no_training_pair_fails_naming_the_cause_and_writes_nothing(tmp_path, lines, over, cause, fix):
    with pytest.raises(NoTrainingRows, match=rf"out_dir=.*: no training pairs: {cause}.*; {fix}") as err:
        prep(_one_file(tmp_path, lines, **over))
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)


def test_a_negative_max_pairs_is_a_config_error_in_override_spelling(tmp_path):
    with pytest.raises(ConfigError, match=r"max_pairs\.default=-5: must be >= 0"):
        _one_file(tmp_path, [_pair("a query")], **{"max_pairs.default": -5})
