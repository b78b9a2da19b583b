"""Fused inference of mmcv's transformer bricks (ctvis.models.fused_layers) against mmcv's own
forward, and their use in the CTVIS head; the group norm's channels-last backward against
torch's."""
import warnings

import pytest
import torch
import torch.nn as nn
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention

from conftest import OpCounter, build_tiny_model
import ctvis.models.fused_layers as fused_layers
from ctvis.models.fused_layers import (FusedFFN, FusedGroupNorm, FusedMultiheadAttention,
                                       fuse_group_norms, fuse_transformer_layers)
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


def group_norm_pair(groups, channels, affine=True, dtype=torch.float32):
    """An ``nn.GroupNorm`` with non-trivial affine parameters and a retyped copy of it."""
    torch.manual_seed(0)
    reference = nn.GroupNorm(groups, channels, affine=affine).to(dtype)
    if affine:
        with torch.no_grad():
            reference.weight.uniform_(0.5, 1.5)
            reference.bias.uniform_(-1, 1)
    fused = nn.GroupNorm(groups, channels, affine=affine).to(dtype)
    fused.load_state_dict(reference.state_dict())
    fuse_group_norms(fused)
    return reference, fused


def forward_backward(norm, x, grad):
    x = x.clone().requires_grad_()
    out = norm(x)
    with OpCounter() as counter:
        out.backward(grad)
    params = [p.grad for p in norm.parameters()]
    return out, x.grad, params, counter.calls['aten::native_group_norm_backward']


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('shape, groups, affine', [
    ((3, 64, 10, 12), 32, True),  # 2 channels per group, as the pixel decoder's
    ((2, 4, 7, 3), 1, True),  # one group
    ((2, 6, 5, 4), 6, False),  # one channel per group, no affine parameters
    ((1, 4, 1, 5), 2, True),  # a one-row map
    ((2, 8, 3, 3), 2, True),  # the largest group that takes this backward
])
def test_group_norm_channels_last_backward_equals_torchs(dtype, shape, groups, affine):
    reference, fused = group_norm_pair(groups, shape[1], affine, dtype)
    gen = torch.Generator().manual_seed(1)
    # an offset mean: the backward must not lose the centring
    x = (torch.randn(shape, generator=gen, dtype=dtype) * 3 + 5).contiguous(
        memory_format=torch.channels_last)
    grad = torch.randn(shape, generator=gen, dtype=dtype)
    out, grad_x, grad_params, native_backward = forward_backward(fused, x, grad)
    ref_out, ref_grad_x, ref_grad_params, _ = forward_backward(reference, x, grad)
    assert native_backward == 0  # the channels-last backward ran
    assert torch.equal(out, ref_out)  # torch's forward
    assert grad_x.is_contiguous(memory_format=torch.channels_last)
    tol = dict(atol=1e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    torch.testing.assert_close(grad_x, ref_grad_x, **tol)
    for grad_param, ref_grad_param in zip(grad_params, ref_grad_params):
        torch.testing.assert_close(grad_param, ref_grad_param, **tol)


def test_group_norm_channels_last_backward_passes_gradcheck():
    _, fused = group_norm_pair(2, 4, dtype=torch.float64)
    weight, bias = (p.detach().clone().requires_grad_() for p in fused.parameters())
    x = torch.randn(2, 4, 3, 5, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x, w, b: fused_layers._ChannelsLastGroupNorm.apply(x, w, b, 2, 1e-5),
        (x, weight, bias))


def test_group_norm_takes_torchs_kernel_elsewhere(monkeypatch):
    _, fused = group_norm_pair(2, 4)

    def refuse(*args):
        raise AssertionError('the channels-last backward ran')

    channels_last = torch.randn(2, 4, 3, 5).contiguous(memory_format=torch.channels_last)
    assert forward_backward(fused, channels_last, torch.ones(2, 4, 3, 5))[3] == 0
    monkeypatch.setattr(fused_layers._ChannelsLastGroupNorm, 'apply', refuse)
    for x in (torch.randn(2, 4, 3, 5),  # contiguous
              torch.randn(2, 4, 1, 1),  # contiguous in both layouts
              torch.randn(2, 4, 6)):  # 3-d
        assert forward_backward(fused, x, torch.ones_like(x))[3] == 1
    _, half_norm = group_norm_pair(2, 4, dtype=torch.bfloat16)
    half = channels_last.to(torch.bfloat16)  # torch's kernel accumulates in float
    assert forward_backward(half_norm, half, torch.ones_like(half))[3] == 1
    _, larger_groups = group_norm_pair(2, 2 * (fused_layers.GROUP_NORM_MAX_GROUP_SIZE + 1))
    x = torch.randn(2, larger_groups.num_channels, 3, 5).contiguous(
        memory_format=torch.channels_last)
    assert forward_backward(larger_groups, x, torch.ones_like(x))[3] == 1
    with torch.no_grad():
        torch.testing.assert_close(fused(channels_last), nn.GroupNorm.forward(fused, channels_last))


def test_pixel_decoder_group_norms_are_retyped_keeping_their_state():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        pixel_decoder = build_tiny_model().track_head.pixel_decoder
    norms = [m for m in pixel_decoder.modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(type(m) is FusedGroupNorm for m in norms)
    assert all(set(vars(m)) == set(vars(nn.GroupNorm(2, 4))) for m in norms)  # no new state
