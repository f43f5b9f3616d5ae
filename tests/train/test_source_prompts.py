"""data.prompts (an instruction per source): training tokenises each source's texts with its own prompts, the export
stores them as sentence-transformers prompts (<source>, <source>-document), and `gte encode --prompt-name` and
`gte eval` (beir/<source>) apply them by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

from gte_model import load_model
from gte_model.core.config import ConfigError, load_config
from gte_model.core.errors import UserError
from gte_model.encode import encode_main
from gte_model.export import export_model
from train.batch import Batch
from train.build import build_model
from train.config import TrainConfig
from train.eval.evaluate import source_prompt_names
from train.tokens import RoleTokenizer

PROMPTS = ["data.query_prompt='query: '",
           "data.prompts={debian: {query: 'Describe the package: ', document: ''}, gcide: {document: 'Gloss: '}}"]


def _config(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, None, ["data.train_dir=unused", "model.init_from=tiny", *overrides])


def test_each_source_is_tokenised_with_its_own_prompts(minilm):
    cfg = _config(*PROMPTS)
    d = cfg.data
    tokenize = RoleTokenizer(minilm.tokenizer, d.query_prompt, d.doc_prompt, 16, 16, dict(d.prompts))
    ids = lambda texts: minilm.tokenizer(texts, truncation=True, max_length=16)["input_ids"]  # noqa: E731
    assert tokenize(["vim"], "query", "debian") == ids(["Describe the package: vim"])
    assert tokenize(["an editor"], "document", "debian") == ids(["an editor"])  # "" overrides doc_prompt
    assert tokenize(["vim"], "query", "gcide") == ids(["query: vim"])  # gcide keeps the run's query prompt
    assert tokenize(["a word"], "document", "gcide") == ids(["Gloss: a word"])
    batch = Batch("debian", [0], ["vim"], ["an editor"], [[]])
    assert batch.token_ids(tokenize) == ids(["Describe the package: vim", "an editor"])
    plain = RoleTokenizer(minilm.tokenizer, d.query_prompt, d.doc_prompt, 16, 16)
    assert tokenize.key() != plain.key()  # a pretokenized cache of other prompts is never reused


def test_prompts_round_trip_through_the_export_and_gte_encode(tmp_path, capsys):
    model = build_model(_config(*PROMPTS))
    assert model.prompts == {"query": "query: ", "debian": "Describe the package: ", "debian-document": "",
                             "gcide-document": "Gloss: "}
    out = export_model(model, tmp_path / "export")
    stored = json.loads((out / "config_sentence_transformers.json").read_text())
    assert stored["prompts"] == model.prompts and stored["default_prompt_name"] is None
    loaded = load_model(out)
    assert loaded.prompts == model.prompts
    texts = ["vim", "emacs"]
    want = loaded.encode(["Describe the package: " + t for t in texts])
    np.testing.assert_allclose(loaded.encode(texts, prompt_name="debian"), want, atol=1e-6)
    st = SentenceTransformer(str(out), device="cpu")
    np.testing.assert_allclose(st.encode(texts, prompt_name="debian"), want, atol=1e-5)
    capsys.readouterr()
    assert encode_main(["--model", str(out), "--prompt-name", "debian", *texts]) == 0
    printed = capsys.readouterr().out.splitlines()[-2]  # the row of "vim": its similarity to "emacs" last
    assert printed.split()[-1] == f"{float(want[0] @ want[1]):.3f}"
    with pytest.raises(UserError, match=r"--prompt-name pydocs: the model has no such prompt; it has \['debian'"):
        encode_main(["--model", str(out), "--prompt-name", "pydocs", "vim"])
    # gte eval's beir/<source> sets take the source's prompts where the model has them
    assert source_prompt_names(loaded, "debian") == ("debian", "debian-document")
    assert source_prompt_names(loaded, "gcide") == ("query", "gcide-document")
    assert source_prompt_names(loaded, "pydocs") == ("query", "document")


def test_bad_prompt_roles_and_unknown_sources_are_config_errors():
    with pytest.raises(ConfigError) as err:
        _config("data.sources=[debian]", "data.prompts={debian: {qurey: x}, pydocs: {query: y}}")
    assert "data.prompts.debian: roles ['qurey'] are not query or document" in str(err.value)
    assert "data.prompts.pydocs: not one of data.sources=['debian']; drop it or add the source" in str(err.value)
