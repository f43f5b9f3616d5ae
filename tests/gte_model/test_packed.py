"""The unpadded forward (gte_model.packed) computes what the padded BertModel forward computes: same pooled vectors,
in any row order, with gradient checkpointing, and it refuses what it cannot do (gradients: test_packed_families)."""

from __future__ import annotations

import random

import pytest
import torch

from gte_model import collate, pack
from tests.conftest import MIXED_TEXTS, make_tiny_model

TEXTS = MIXED_TEXTS


@pytest.fixture
def model(tmp_path):
    return make_tiny_model(tmp_path, seed=0)


def padded(model, ids):
    return model(**collate(ids, model.tokenizer.pad_token_id))


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
@pytest.mark.parametrize("group_tokens", [16, 4096])  # one text per attention group / every text in one group
def test_packed_forward_equals_padded_forward(model, pooling, group_tokens):
    model.eval()
    model.pooling = pooling
    ids = model.tokenize_ids(TEXTS)  # unsorted on purpose
    with torch.no_grad():
        got = model(packed=pack(ids, group_tokens=group_tokens))
        want = padded(model, ids)
    assert got.shape == want.shape == (len(TEXTS), model.dim)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    assert not torch.allclose(got[0], got[1], atol=1e-3)  # the rows really differ


def test_gradient_checkpointing_recomputes_the_same_dropout(model):
    model.train()  # tiny preset: dropout 0.1 on hidden states and attention
    ids = model.tokenize_ids(TEXTS)
    out = []
    for checkpointing in (False, True):
        if checkpointing:
            model.backbone.activation_checkpointing_enable({"use_reentrant": False})
        model.zero_grad(set_to_none=True)
        torch.manual_seed(3)
        loss = model(packed=pack(ids)).pow(2).sum()
        loss.backward()
        out.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert all(layer.gradient_checkpointing for layer in model.backbone.encoder.layer)  # what packed_forward reads
    assert torch.equal(out[0][0], out[1][0])
    for name, g in out[0][1].items():
        assert torch.allclose(g, out[1][1][name], rtol=1e-5, atol=1e-7), name
    torch.manual_seed(4)
    assert not torch.equal(model(packed=pack(ids)).pow(2).sum().detach(), out[0][0])  # dropout is on


def test_pack_layout_covers_every_token_once_within_its_group():
    rng = random.Random(0)
    ids = [[rng.randrange(5, 50) for _ in range(rng.randrange(1, 60))] for _ in range(40)]
    p = pack(sorted(ids, key=len, reverse=True), group_tokens=256)
    assert p.input_ids.shape[0] == sum(map(len, ids)) == p.groups[-1][1]
    assert sum(rows for *_, rows, _ in p.groups) == len(ids)
    offset = 0
    for t0, t1, r0, rows, width in p.groups:
        assert width % 16 == 0 and (rows == 1 or rows * width <= 256)
        slots = p.dest[t0:t1] - offset  # within this group's [rows * width] buffer
        assert slots.unique().numel() == t1 - t0 and int(slots.min()) >= 0 and int(slots.max()) < rows * width
        offset += rows * width
        assert int(p.lengths[r0 : r0 + rows].max()) <= width
    second = sorted(ids, key=len, reverse=True)[1]
    assert p.input_ids[p.starts[1] : p.starts[1] + p.lengths[1]].tolist() == second


def test_attention_groups_keep_one_long_text_from_padding_many_short_ones():
    # one 128-token text and 31 of 16: one group would pad every short row to 128 (32 x 128^2 scores); split, the
    # long text is alone and the short ones share one group at width 16
    p = pack([[7] * 128] + [[7] * 16] * 31)
    assert [(rows, width) for *_, rows, width in p.groups] == [(1, 128), (31, 16)]
    # rows of one width past the group budget are cut into equal groups of whole rows, each within the budget
    p = pack([[7] * 64] * 10, group_tokens=256)
    assert [(rows, width) for *_, rows, width in p.groups] == [(3, 64), (3, 64), (4, 64)]


def test_pack_rejects_empty_input():
    with pytest.raises(ValueError, match="at least one text"):
        pack([])
    with pytest.raises(ValueError, match="empty token list"):
        pack([[1, 2], []])


def test_cpu_dropout_zeroes_a_fraction_p_scales_the_rest_and_replays_from_the_seed():
    from gte_model.packed import apply_dropout

    x = torch.ones(200_000, requires_grad=True)
    torch.manual_seed(0)
    y = apply_dropout(x, 0.1, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.004  # 200k draws: 3 sigma ~ 0.002
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.9))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # d(x * mask/(1-p))/dx = mask/(1-p)
    torch.manual_seed(0)
    assert torch.equal(apply_dropout(x, 0.1, training=True), y)  # the global RNG: the gradient cache can replay it
    assert apply_dropout(x, 0.1, training=False) is x and apply_dropout(x, 0.0, training=True) is x


def test_packed_to_moves_every_tensor_and_keeps_the_host_ints():
    p = pack([[1, 2, 3], [4]])
    p.fill_rows = 1
    moved = p.to("meta", non_blocking=True)
    tensors = ("input_ids", "position_ids", "seq_index", "dest", "lengths", "starts", "cu_seqlens")
    assert all(getattr(moved, name).device.type == "meta" for name in tensors)
    assert (moved.groups, moved.max_seqlen, moved.min_seqlen) == (p.groups, 3, 1)
    assert (moved.fill_rows, moved.real_rows, len(moved)) == (1, 1, 2)
