"""data_prep uses the shared core as the one owner of each contract: no second copy of the pairs format, no import
cycles hidden in functions, hashes that stay bit-identical to the formulas the published figures were made with,
and expected failures that are one-line UserErrors."""

from __future__ import annotations

import ast
import hashlib
from pathlib import Path

import pytest

from data_prep.mine import mine
from data_prep.mine_io import read_extra_corpus
from data_prep.readers import FieldMap, read_records
from data_prep.sources.gcide import iter_gcide
from data_prep.split import key_hash
from gte_model.core.errors import UserError, user_message
from gte_model.core.text import canonical, canonical_hash, content_hash64, fold_hash64
from tests.data_prep.helpers import mine_config

DATA_PREP = Path(__file__).resolve().parents[2] / "data_prep"
PROJECT = ("data_prep", "gte_model", "train")


def _modules() -> list[Path]:
    return sorted(DATA_PREP.rglob("*.py"))


def test_no_project_module_is_imported_inside_a_function():
    found = []
    for path in _modules():
        for func in ast.walk(ast.parse(path.read_text())):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                found += [f"{path.name}:{node.lineno} {n}" for n in names if n.split(".")[0] in PROJECT]
    assert not found, f"function-local imports of project modules (an import cycle in hiding?): {found}"


def test_the_pairs_format_and_completion_marker_have_no_second_copy_in_data_prep():
    for path in _modules():
        text = path.read_text()
        assert "gte-pairs/" not in text and "_COMPLETE" not in text and "pa.schema(" not in text, path


def _blake_u64(text: str, digest_size: int = 8) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=digest_size).digest()[:8], "little")


@pytest.mark.parametrize("text", ["Hello,  World!", "ﬁle café", "", "a\x1fb", "x " * 300])
def test_hashes_are_bit_identical_to_the_formulas_of_the_published_outputs(text):
    assert canonical_hash(text) == _blake_u64(canonical(text))  # the former data_prep.dedup.text_hash
    assert key_hash(text, 3) == _blake_u64(f"3\x1f{text}")
    assert int(content_hash64([text])[0]) == _blake_u64(text, digest_size=16)  # 16-byte digest, first 8 bytes
    assert int(fold_hash64([text])[0]) == _blake_u64(" ".join(text.casefold().split()), digest_size=16)


def test_hash_values_are_pinned():
    # Printed by the code before the move (data_prep.dedup.text_hash, embed_cache.hash64 / norm_hash64,
    # split.key_hash): prep splits, dedup and mined negatives depend on them.
    assert canonical_hash("Hello, World!") == 5814608031911216775
    assert int(content_hash64(["Hello, World!"])[0]) == 218964762628035896
    assert int(fold_hash64(["Hello,  WORLD!"])[0]) == 10089305243869624060
    assert key_hash("synset 42", 0) == 10991336282021094082


# ---- finding 13: every expected failure is a UserError with a one-line message ---------------------------------
@pytest.mark.parametrize("name", ["missing user file", "missing Debian package", "missing extra corpus",
                                  "unknown mine source", "input that is not a pairs dir", "bad extra corpus line"])
def test_expected_failures_are_one_line_user_errors(tmp_path, pairs_dir, name):
    (tmp_path / "docs.jsonl").write_text('{"text": "a"}\n{"txt": "b"}\n')
    jobs = {
        "missing user file": lambda: list(read_records(tmp_path / "nope.jsonl", FieldMap(), "s")),
        "missing Debian package": lambda: next(iter_gcide(tmp_path)),
        "missing extra corpus": lambda: read_extra_corpus([str(tmp_path / "gone.txt")]),
        "bad extra corpus line": lambda: read_extra_corpus([str(tmp_path / "docs.jsonl")]),
        "unknown mine source": lambda: mine(mine_config(tmp_path, pairs_dir, "m", sources=["gamma"])),
        "input that is not a pairs dir": lambda: mine(mine_config(tmp_path, tmp_path / "docs", "m")),
    }
    with pytest.raises(UserError) as err:
        jobs[name]()
    message = user_message(err.value)
    assert message and "\n" not in message and "; " in message, message
    assert not (tmp_path / "m").exists()


def test_prep_main_raises_a_user_error_for_a_missing_input_file(tmp_path):
    from data_prep.prep import main

    with pytest.raises(UserError, match=r"files\.0\.path=.*nope.jsonl: does not exist; check the path"):
        main(["sources=[]", f"out_dir={tmp_path / 'out'}", f"files=[{{name: a, path: {tmp_path}/nope.jsonl}}]"])
    assert not (tmp_path / "out").exists()
