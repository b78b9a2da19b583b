"""Fused inference of mmcv's transformer bricks (ctvis.models.fused_layers) against mmcv's own
forward, and their use in the CTVIS head."""
import warnings

import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention

from conftest import OpCounter, build_tiny_model
import ctvis.models.fused_layers as fused_layers
from ctvis.models.fused_layers import (FusedFFN, FusedMultiheadAttention,
                                       fuse_transformer_layers)
from ctvis.ops.onednn import onednn_fusion_available

ONEDNN_OP = 'mkldnn::_linear_pointwise'


def build_attention(bias=True, batch_first=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    attention = MultiheadAttention(16, 4, batch_first=batch_first, bias=bias, **kwargs)
    fuse_transformer_layers(attention)
    return attention.eval()


def inputs(batch=2, queries=5, keys=7, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, queries, 16, generator=gen),
            torch.randn(batch, keys, 16, generator=gen),
            torch.randn(batch, queries, 16, generator=gen),
            torch.randn(batch, keys, 16, generator=gen))


def masks(batch=2, queries=5, keys=7, seed=0):
    """Masks in nn.MultiheadAttention's conventions: True / -inf where a query may not attend;
    every query keeps at least one key."""
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.rand(batch * 4, queries, keys, generator=gen) < 0.5
    hidden[..., 0] = False
    return {
        'none': None,
        'per head (bool)': hidden,
        'shared (bool)': hidden[0],
        'per head (float)': torch.randn(batch * 4, queries, keys, generator=gen),
        'shared by the heads (bool, 4-d)': hidden.view(batch, 4, queries, keys)[:, :1],
    }


def per_head(mask):
    """The mask as mmcv's MultiheadAttention takes it."""
    if mask is None or mask.dim() < 4:
        return mask
    batch, _, queries, keys = mask.shape
    return mask.expand(batch, 4, queries, keys).reshape(-1, queries, keys)


@torch.no_grad()
@pytest.mark.parametrize('mask', list(masks()))
@pytest.mark.parametrize('bias', [True, False])
def test_cross_attention_equals_mmcvs(mask, bias):
    attention = build_attention(bias=bias)
    assert type(attention) is FusedMultiheadAttention
    query, key, query_pos, key_pos = inputs()
    kwargs = dict(query=query, key=key, value=key, query_pos=query_pos, key_pos=key_pos,
                  attn_mask=masks()[mask])
    assert onednn_fusion_available()
    with OpCounter() as counter:
        output = attention(**kwargs)
    assert counter.calls[ONEDNN_OP] == 4  # q, k, v and output (+ identity) projections
    expected = MultiheadAttention.forward(attention,
                                          **{**kwargs, 'attn_mask': per_head(kwargs['attn_mask'])})
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    if mask != 'none':  # the mask matters: ignoring it gives another result
        unmasked = MultiheadAttention.forward(attention, **{**kwargs, 'attn_mask': None})
        assert not torch.allclose(output, unmasked, atol=1e-3)


@torch.no_grad()
def test_self_attention_defaults_equal_mmcvs():
    attention = build_attention()
    query, _, query_pos, _ = inputs()
    identity = torch.randn_like(query)
    for kwargs in (dict(query=query, query_pos=query_pos),
                   dict(query=query, key=query, value=query, query_pos=query_pos,
                        key_pos=query_pos, identity=identity)):
        torch.testing.assert_close(attention(**kwargs),
                                   MultiheadAttention.forward(attention, **kwargs),
                                   atol=1e-5, rtol=1e-5)


def test_training_gradients_and_padding_masks_take_mmcvs_forward():
    attention = build_attention(attn_drop=0.5)
    query, key, query_pos, key_pos = inputs()
    kwargs = dict(query=query, key=key, value=key, query_pos=query_pos, key_pos=key_pos)
    attention.train()
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            torch.manual_seed(3)
            output = attention(**kwargs)  # attention dropout: the same draws as mmcv's
            torch.manual_seed(3)
            assert torch.equal(output, MultiheadAttention.forward(attention, **kwargs))
    attention.eval()
    with OpCounter() as counter:
        attention(**kwargs)  # eval, but the weights need gradients
        with torch.no_grad():
            attention(**kwargs, key_padding_mask=torch.zeros(2, 7, dtype=torch.bool))
    assert counter.calls[ONEDNN_OP] == 0
    shared = masks()['shared by the heads (bool, 4-d)']  # expanded per head for mmcv's forward
    torch.testing.assert_close(attention(**kwargs, attn_mask=shared),
                               MultiheadAttention.forward(attention, **kwargs,
                                                          attn_mask=per_head(shared)))


def test_only_supported_modules_are_retyped():
    assert type(build_attention(batch_first=False)) is MultiheadAttention
    assert type(build_attention(kdim=8, vdim=8)) is MultiheadAttention
    assert type(build_attention(add_bias_kv=True)) is MultiheadAttention
    ffns = [FFN(16, 32), FFN(16, 32, act_cfg=dict(type='GELU')), FFN(16, 32, num_fcs=3)]
    for ffn in ffns:
        fuse_transformer_layers(ffn)
    assert [type(ffn) for ffn in ffns] == [FusedFFN, FFN, FFN]


def test_head_decoder_layers_are_fused():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        head = build_tiny_model().track_head
    for layer in head.transformer_decoder.layers:
        assert type(layer.cross_attn) is FusedMultiheadAttention
        assert type(layer.self_attn) is FusedMultiheadAttention
        assert type(layer.ffn) is FusedFFN


@torch.no_grad()
@pytest.mark.parametrize('rows, chunks', [(8, 1), (9, 2), (18, 3)])
def test_ffn_runs_in_chunks_of_rows_beyond_the_chunk_size(monkeypatch, rows, chunks):
    monkeypatch.setattr(fused_layers, 'FFN_CHUNK_ROWS', 8)
    torch.manual_seed(0)
    ffn = FFN(16, 32)
    fuse_transformer_layers(ffn)
    ffn.eval()
    x = torch.randn(rows, 16).view(1, rows, 16).expand(2, rows, 16)[:1]  # a strided view
    identity = torch.randn(1, rows, 16)
    with OpCounter() as counter:
        output = ffn(x, identity=identity)
    assert counter.calls[ONEDNN_OP] == 2 * chunks
    assert counter.calls['aten::cat'] == (chunks > 1)
    assert output.shape == x.shape
    torch.testing.assert_close(output, FFN.forward(ffn, x, identity=identity), atol=1e-5,
                               rtol=1e-5)
    with OpCounter() as counter:  # an identity that broadcasts: one pass, no chunks
        broadcast = ffn(x, identity=identity[:, :1])
    assert counter.calls['aten::cat'] == 0
    torch.testing.assert_close(broadcast, FFN.forward(ffn, x, identity=identity[:, :1]),
                               atol=1e-5, rtol=1e-5)
