"""A pairs dir's content identity (issue 21, findings 14 and 15): every shard's sha256 is recorded when the dir is
finished and checked by its readers, and the fingerprint a run or a mined output records is that content, not the
files' paths or times. Dirs written before the digests existed are read and fingerprinted as before."""

from __future__ import annotations

import hashlib
import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gte_model.core.pairs import PairsFormatError, check_shards, digest_note, finish, manifest_digest, resolve
from gte_model.core.record import Record
from train.data import PairsData

ROWS = {"alpha": ["the cat plays piano", "a dog runs", "red stock price fell", "music of the market"],
        "beta": ["python package file", "a small green model", "the query and the answer"]}


def _write(folder):
    """A finished two-source pairs dir whose shards are uncompressed, so a byte of a text can be flipped in place."""
    sources = {}
    for name, texts in ROWS.items():
        (folder / name).mkdir(parents=True)
        entry = {}
        for split, part in (("train", texts), ("heldout", texts[:1])):
            rel = f"{name}/{split}-00000.parquet"
            table = pa.table({"query": part, "positive": [t + " today" for t in part]})
            pq.write_table(table, folder / rel, compression="none")
            entry[split] = {"files": [rel], "rows": len(part)}
        sources[name] = entry
    finish(folder, sources, {"stats": {"wall_s": 1.0}}, Record("prep", 1))
    return folder


def _flip_a_letter(path, text: str = "piano") -> None:
    """Change one byte inside a stored string: the file stays valid parquet with the same rows."""
    data = bytearray(path.read_bytes())
    at = data.index(text.encode())
    data[at] = ord("P")
    path.write_bytes(bytes(data))


def _manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def test_finish_records_each_shards_sha256_in_files_order(tmp_path):
    folder = _write(tmp_path / "pairs")
    for name, entry in _manifest(folder)["sources"].items():
        for split in ("train", "heldout"):
            part = entry[split]
            want = [hashlib.sha256(resolve(folder, f).read_bytes()).hexdigest() for f in part["files"]]
            assert part["sha256"] == want and part["rows"] == (len(ROWS[name]) if split == "train" else 1)


def test_a_flipped_byte_that_leaves_a_valid_shard_is_refused_naming_the_shard(tmp_path):
    folder = _write(tmp_path / "pairs")
    shard = folder / "alpha" / "train-00000.parquet"
    _flip_a_letter(shard)
    assert pq.read_table(shard).num_rows == 4  # still readable: only the digest can tell
    with pytest.raises(PairsFormatError, match=rf"{shard}: its bytes differ from the sha256 recorded for it "
                                               r"\(.*manifest.json sources.alpha.train.sha256\[0\]\)"):
        PairsData(folder, cache_dir=tmp_path / "cache")


def test_an_identical_copy_without_file_times_has_the_same_fingerprint(tmp_path):
    folder = _write(tmp_path / "pairs")
    copy = shutil.copytree(folder, tmp_path / "copy", copy_function=shutil.copy)  # cp -r: new mtimes
    assert (copy / "alpha" / "train-00000.parquet").stat().st_mtime_ns != (
        folder / "alpha" / "train-00000.parquet").stat().st_mtime_ns
    assert manifest_digest(copy) == manifest_digest(folder)
    assert PairsData(copy, cache_dir=tmp_path / "cache").train_sizes() == {"alpha": 4, "beta": 3}


def test_a_changed_shard_changes_the_fingerprint_of_its_source_only(tmp_path):
    folder = _write(tmp_path / "pairs")
    before = manifest_digest(folder)
    _flip_a_letter(folder / "alpha" / "train-00000.parquet")
    finish(folder, _manifest(folder)["sources"], {}, Record("prep", 1))  # rewritten: digests recorded afresh
    after = manifest_digest(folder)
    old, new = dict(p.split("=") for p in before.split(",")[1:]), dict(p.split("=") for p in after.split(",")[1:])
    assert old["alpha"] != new["alpha"] and old["beta"] == new["beta"]


def test_a_dir_without_digests_is_read_and_fingerprinted_as_before(tmp_path):
    folder = _write(tmp_path / "pairs")
    manifest = _manifest(folder)
    for entry in manifest["sources"].values():
        for part in entry.values():
            del part["sha256"]
    (folder / "manifest.json").write_text(json.dumps(manifest))  # what the code before the digests wrote
    assert manifest_digest(folder).startswith("manifest.json:sha256=")
    assert PairsData(folder, cache_dir=tmp_path / "cache").train_sizes() == {"alpha": 4, "beta": 3}
    copy = shutil.copytree(folder, tmp_path / "copy", copy_function=shutil.copy)
    old, new = manifest_digest(folder), manifest_digest(copy)
    assert old != new and "cp -a" in digest_note(old, new)  # times are all it has: the message says so


def test_a_sha256_list_that_does_not_match_the_files_is_refused(tmp_path):
    folder = _write(tmp_path / "pairs")
    part = _manifest(folder)["sources"]["beta"]["train"]
    part["files"].append(part["files"][0])  # a file listed by hand, without its digest
    with pytest.raises(PairsFormatError, match="beta.train: lists 2 files but sha256 holds 1"):
        check_shards([resolve(folder, f) for f in part["files"]], part, "beta.train")


def test_the_rotation_and_merge_fit_refuse_a_damaged_shard_too(tmp_path):
    from gte_model.core.pairs import fit_examples

    folder = _write(tmp_path / "pairs")
    assert set(fit_examples([str(folder)], 2, "--data", "fit")) == {"pairs/alpha", "pairs/beta"}
    _flip_a_letter(folder / "alpha" / "train-00000.parquet")
    with pytest.raises(PairsFormatError, match=r"alpha/train-00000.parquet: its bytes differ"):
        fit_examples([str(folder)], 2, "--data", "fit")
