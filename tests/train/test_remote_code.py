"""model.trust_remote_code: a model folder with its own code (config.json auto_map -> a modeling .py the test
writes) is refused by default, naming the file, the code and the key; trusted, it trains (packed, through
gte_model.unpadded), the key is in the run record and the card says so, and the export keeps the code so that
transformers' AutoModel and sentence-transformers (trusting it) load it to the trained vectors."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

from gte_model import load_model
from gte_model.assets import ModelLoadError
from tests.conftest import write_vocab
from tests.train.tinydata import train_tiny, write_tiny_pairs

CODE = '''from transformers import BertConfig, BertModel


class TinyRemoteConfig(BertConfig):
    model_type = "tiny-remote"


class TinyRemoteModel(BertModel):
    config_class = TinyRemoteConfig
'''


def remote_folder(folder):
    """A tiny random model whose class only its own modeling_tiny.py defines."""
    from transformers import BertTokenizerFast

    folder.mkdir()
    (folder / "modeling_tiny.py").write_text(CODE)
    namespace: dict = {}
    exec(compile(CODE, str(folder / "modeling_tiny.py"), "exec"), namespace)  # the classes, to write the weights
    write_vocab(folder)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(0)
    config = namespace["TinyRemoteConfig"](
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        auto_map={"AutoConfig": "modeling_tiny.TinyRemoteConfig", "AutoModel": "modeling_tiny.TinyRemoteModel"})
    namespace["TinyRemoteModel"](config).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return remote_folder(tmp_path_factory.mktemp("remote") / "model")


def test_a_folder_with_its_own_code_is_refused_unless_trusted(folder):
    with pytest.raises(ModelLoadError, match=r"config.json: auto_map names the folder's own code \(modeling_tiny.py\)"
                                             r".*trust it: trust_remote_code=True"):
        load_model(folder)
    assert type(load_model(folder, trust_remote_code=True).backbone).__name__ == "TinyRemoteModel"


def test_gte_train_refuses_it_naming_the_key(folder, tmp_path, capsys, one_thread):
    rc = train_tiny(tmp_path / "run", write_tiny_pairs(tmp_path / "pairs"), f"model.init_from={folder}")
    assert rc != 0
    err = capsys.readouterr().err
    assert "modeling_tiny.py" in err and "model.trust_remote_code=true" in err


def test_trusted_it_trains_records_the_key_and_exports_the_code(folder, tmp_path, capsys, one_thread):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModel, AutoTokenizer

    run = tmp_path / "run"
    rc = train_tiny(run, write_tiny_pairs(tmp_path / "pairs"), f"model.init_from={folder}",
                    "model.trust_remote_code=true", "train.max_steps=3", "optim.warmup_steps=1",
                    "train.checkpoint_every=2", "train.eval_every=0", "data.val_rows=0")
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    assert "using padded chunks" not in out.out  # packed through the attention interface
    record = json.loads((run / "gte_record.json").read_text())
    assert record["config"]["model.trust_remote_code"] is True
    export = run / "export"
    assert (export / "modeling_tiny.py").read_text() == CODE
    assert "| remote code | modeling_tiny.py: loading runs it" in (export / "README.md").read_text()
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        load_model(export)

    texts = ["the cat plays piano", "stock price fell today on the news", "a"]
    want = load_model(export, trust_remote_code=True).encode(texts)
    st = SentenceTransformer(str(export), device="cpu", trust_remote_code=True)
    np.testing.assert_allclose(st.encode(texts), want, atol=1e-5)
    tok = AutoTokenizer.from_pretrained(str(export))
    model = AutoModel.from_pretrained(str(export), trust_remote_code=True).eval()
    batch = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    mean = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    np.testing.assert_allclose(mean.numpy(), want, atol=1e-5)
    assert "modeling_tiny" not in sys.modules  # the code ran from transformers' module cache, not imported here
