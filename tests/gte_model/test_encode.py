"""encode: input order, padding independence, bad input, bf16."""

from __future__ import annotations

import numpy as np
import pytest

LONG = "the market fell today and the news report said the price of stock rose again " * 8


def test_padding_cannot_change_a_vector(tiny_model):
    alone = tiny_model.encode(["the cat plays"], batch_size=1)
    with_long = tiny_model.encode([LONG, "the cat plays", "a dog"], batch_size=3)
    np.testing.assert_allclose(with_long[1], alone[0], atol=1e-5)


@pytest.mark.integration
def test_padding_cannot_change_a_minilm_vector(minilm):
    alone = minilm.encode(["A man is playing a guitar."], batch_size=1)
    with_long = minilm.encode([LONG, "A man is playing a guitar."], batch_size=2)
    np.testing.assert_allclose(with_long[1], alone[0], atol=1e-5)


def test_encode_returns_input_order_whatever_the_batch_size(tiny_model):
    texts = ["a", LONG, "the cat plays guitar", "b c", "dog"]
    one_by_one = np.concatenate([tiny_model.encode([t]) for t in texts])
    for bs in (1, 2, 32):
        np.testing.assert_allclose(tiny_model.encode(texts, batch_size=bs), one_by_one, atol=1e-5)


def test_encode_output_is_float32_and_normalised_by_default(tiny_model):
    out = tiny_model.encode(["the cat", "a dog"])
    assert out.dtype == np.float32 and out.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    raw = tiny_model.encode(["the cat"], normalize=False)
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3


def test_empty_list_gives_empty_matrix(tiny_model):
    out = tiny_model.encode([])
    assert out.shape == (0, 32) and out.dtype == np.float32


@pytest.mark.parametrize("bad", [[None], ["ok", 3], ["ok", b"bytes"]])
def test_non_strings_get_a_type_error_naming_the_item(tiny_model, bad):
    with pytest.raises(TypeError, match=r"texts\[\d\]"):
        tiny_model.encode(bad)


def test_a_bare_string_is_refused(tiny_model):
    with pytest.raises(TypeError, match="single str"):
        tiny_model.encode("the cat")


def test_bf16_autocast_stays_close_to_fp32(tiny_model):
    texts = ["the cat plays guitar", LONG, "a dog"]
    fp32 = tiny_model.encode(texts)
    bf16 = tiny_model.encode(texts, bf16=True)
    assert bf16.dtype == np.float32
    cos = (fp32 * bf16).sum(axis=1)
    assert cos.min() > 0.99, cos


def test_encode_restores_training_mode(tiny_model):
    tiny_model.train()
    tiny_model.encode(["the cat"])
    assert tiny_model.training


def test_prompt_name_without_a_prompt_adds_nothing_and_literal_prompt_is_prepended(tiny_model):
    plain = tiny_model.encode(["the cat"])
    np.testing.assert_allclose(tiny_model.encode(["the cat"], prompt_name="query"), plain, atol=1e-6)
    np.testing.assert_allclose(
        tiny_model.encode(["the cat"], prompt="a "), tiny_model.encode(["a the cat"]), atol=1e-6
    )
    with pytest.raises(ValueError, match="not both"):
        tiny_model.encode(["the cat"], prompt_name="query", prompt="x")
