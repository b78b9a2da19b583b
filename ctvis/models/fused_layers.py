"""mmcv's transformer bricks (``FFN``, ``MultiheadAttention``) with a fused CPU inference forward,
and a group norm with a faster CPU backward for channels-last maps.

In inference their products run through :func:`ctvis.ops.onednn.linear` (oneDNN on the CPU, the
ReLU and the residual add in the product's epilogue) and the attention through torch's
``scaled_dot_product_attention``; training, and whatever :func:`fuse_transformer_layers` does not
recognise, runs mmcv's forward. The classes add no state: built mmcv / torch modules are retyped in
place, so parameters, state-dict keys and the seeded initialisation stay theirs.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..ops.onednn import linear, uses_onednn


# Rows per chunk of the fused FFN: the hidden activation of a chunk stays in cache instead of
# going through memory (the R50 encoder's FFN, 8505 x 256 -> 1024 -> 256, 2 threads, median ms:
# unchunked 37.4; chunks of 256 / 512 / 1024 / 2048 / 4096 rows 28.0 / 25.5 / 30.1 / 26.8 / 27.2).
FFN_CHUNK_ROWS = 512


class FusedFFN(FFN):
    """mmcv's two-layer ReLU ``FFN`` whose inference fuses the ReLU and the residual add into
    the two products and, on oneDNN, runs them over chunks of :data:`FFN_CHUNK_ROWS` rows."""

    @staticmethod
    def supports(ffn: nn.Module) -> bool:
        """Whether ``ffn`` is mmcv's FFN with two layers, a ReLU, an identity and no scale."""
        return (type(ffn) is FFN and ffn.num_fcs == 2 and ffn.add_identity
                and type(ffn.layers[0][1]) is nn.ReLU and type(ffn.gamma2) is nn.Identity)

    def forward(self, x: Tensor, identity: Optional[Tensor] = None) -> Tensor:
        """``identity + layers(x)`` (``identity`` defaults to ``x``), as mmcv's FFN."""
        if self.training:
            return super().forward(x, identity)
        identity = x if identity is None else identity
        channels = x.shape[-1]
        if (x.numel() <= FFN_CHUNK_ROWS * channels or identity.shape != x.shape
                or not uses_onednn(x, self.layers[1].weight)):
            return self._feed_forward(x, identity)
        chunks = zip(x.reshape(-1, channels).split(FFN_CHUNK_ROWS),
                     identity.reshape(-1, channels).split(FFN_CHUNK_ROWS))
        return torch.cat([self._feed_forward(*chunk) for chunk in chunks]).view(x.shape)

    def _feed_forward(self, x: Tensor, identity: Tensor) -> Tensor:
        hidden_layer, output_layer = self.layers[0][0], self.layers[1]
        hidden = linear(x, hidden_layer.weight, hidden_layer.bias, relu=True)
        return linear(hidden, output_layer.weight, output_layer.bias, residual=identity)


class FusedMultiheadAttention(MultiheadAttention):
    """mmcv's batch-first ``MultiheadAttention`` whose CPU inference projects on oneDNN, attends
    with ``scaled_dot_product_attention`` and fuses the identity into the output projection.

    The same computation as ``nn.MultiheadAttention`` (equal to float rounding), including its
    masks: a boolean ``attn_mask`` is True where a query may not attend, a float one is added to
    the logits; (num_queries, num_keys), (bs * num_heads, num_queries, num_keys), or also
    (bs, 1, num_queries, num_keys) for a mask shared by the heads (expanded per head for mmcv's
    forward; the fused path broadcasts it, which spares the per-head copies). One exception: a
    query whose every key is masked attends to nothing here (its attention output is 0, then
    projected), where ``nn.MultiheadAttention`` gives NaN; the CTVIS head never masks a whole
    row (it unmasks such rows, as Mask2Former).
    """

    @staticmethod
    def supports(attention: nn.Module) -> bool:
        """Whether ``attention`` is mmcv's batch-first MultiheadAttention over an
        ``nn.MultiheadAttention`` with one packed input projection and no extra key/value."""
        attn = getattr(attention, 'attn', None)
        return (type(attention) is MultiheadAttention and attention.batch_first
                and type(attn) is nn.MultiheadAttention and attn._qkv_same_embed_dim
                and attn.bias_k is None and not attn.add_zero_attn)

    def forward(self, query: Tensor, key: Optional[Tensor] = None,
                value: Optional[Tensor] = None, identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None, key_pos: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """``identity + attention(query + query_pos, key + key_pos, value)``, as mmcv's."""
        attn = self.attn
        if (self.training or key_padding_mask is not None
                or not uses_onednn(query, attn.in_proj_weight)):
            if attn_mask is not None and attn_mask.dim() == 4:  # shared by the heads
                attn_mask = per_head_mask(attn_mask, attn.num_heads)
            return super().forward(query, key, value, identity, query_pos, key_pos, attn_mask,
                                   key_padding_mask, **kwargs)
        key = query if key is None else key
        value = key if value is None else value
        identity = query if identity is None else identity
        if key_pos is None and query_pos is not None and query_pos.shape == key.shape:
            key_pos = query_pos  # mmcv's default (it warns when the shapes differ)
        query = query if query_pos is None else query + query_pos
        key = key if key_pos is None else key + key_pos
        weights = attn.in_proj_weight.chunk(3)
        biases = (None, ) * 3 if attn.in_proj_bias is None else attn.in_proj_bias.chunk(3)
        batch_size, num_queries, embed_dims = query.shape
        heads = attn.num_heads

        def split_heads(x: Tensor, i: int) -> Tensor:  # (bs, heads, length, head_dims)
            return linear(x, weights[i], biases[i]).view(batch_size, -1, heads,
                                                         embed_dims // heads).transpose(1, 2)

        if attn_mask is not None and attn_mask.dim() == 3:
            attn_mask = attn_mask.view(batch_size, heads, num_queries, -1)
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = ~attn_mask  # torch's scaled_dot_product_attention: True = attend
        out = F.scaled_dot_product_attention(split_heads(query, 0), split_heads(key, 1),
                                             split_heads(value, 2), attn_mask=attn_mask)
        out = out.transpose(1, 2).reshape(batch_size, num_queries, embed_dims)
        return linear(out, attn.out_proj.weight, attn.out_proj.bias, residual=identity)


def per_head_mask(mask: Tensor, num_heads: int) -> Tensor:
    """A (bs, 1, num_queries, num_keys) mask shared by the heads as ``nn.MultiheadAttention``
    takes it: (bs * num_heads, num_queries, num_keys)."""
    batch_size, _, num_queries, num_keys = mask.shape
    return mask.expand(batch_size, num_heads, num_queries, num_keys).reshape(
        -1, num_queries, num_keys)


def fuse_transformer_layers(module: nn.Module) -> None:
    """Retype in place every mmcv ``FFN`` / ``MultiheadAttention`` under ``module`` that the
    fused classes compute."""
    for child in module.modules():
        for fused in (FusedFFN, FusedMultiheadAttention):
            if fused.supports(child):
                child.__class__ = fused


class _ChannelsLastGroupNorm(torch.autograd.Function):
    """Group norm of a channels-last (N, C, H, W) map: torch's forward, a backward from
    per-channel sums over the map (each a reduction over rows of C contiguous floats)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                num_groups: int, eps: float) -> Tensor:
        batch_size, channels, height, width = x.shape
        out, mean, rstd = torch.native_group_norm(x, weight, bias, batch_size, channels,
                                                  height * width, num_groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor) -> Tuple[Optional[Tensor], ...]:
        x, weight, mean, rstd = ctx.saved_tensors  # mean, rstd: (N, G)
        batch_size, channels, height, width = x.shape
        group_size = channels // mean.shape[1]

        def per_channel(stat: Tensor) -> Tensor:  # (N, G) -> (N, 1, 1, C)
            return stat.repeat_interleave(group_size, 1)[:, None, None]

        x = x.permute(0, 2, 3, 1)  # (N, H, W, C), contiguous
        grad_out = grad_out.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)
        sum_grad_x = (grad_out * x).sum((1, 2), keepdim=True)  # (N, 1, 1, C)
        sum_grad = grad_out.sum((1, 2), keepdim=True)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            gamma = x.new_ones(channels) if weight is None else weight
            count = height * width * group_size

            def per_group(stat: Tensor) -> Tensor:  # (N, 1, 1, C) -> (N, G)
                return (stat * gamma).view(batch_size, -1, group_size).sum(-1)

            # d out / d x = rstd * gamma * grad + x_coef * x + shift (aten's group-norm backward)
            sum_grad_x_g, sum_grad_g = per_group(sum_grad_x), per_group(sum_grad)
            x_coef = (sum_grad_g * mean - sum_grad_x_g) * rstd.pow(3) / count
            shift = -x_coef * mean - sum_grad_g * rstd / count
            grad_x = torch.addcmul(per_channel(shift), grad_out, per_channel(rstd) * gamma)
            grad_x.addcmul_(x, per_channel(x_coef))
            grad_x = grad_x.permute(0, 3, 1, 2)
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = ((sum_grad_x - sum_grad * per_channel(mean)) *
                           per_channel(rstd)).sum((0, 1, 2))
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = sum_grad.sum((0, 1, 2))
        return grad_x, grad_weight, grad_bias, None, None


# Largest group (channels per group) whose channels-last backward runs here rather than in
# torch: (20, C, 48, 64) maps, 32 groups, forward and backward, median ms, 1 / 2 threads, torch
# -> here: 2 channels 36.0 -> 18.8 / 23.3 -> 12.9, 4 channels 44.7 -> 44.8 / 32.0 -> 23.0,
# 8 channels 115.8 -> 162.0 / 63.4 -> 98.8.
GROUP_NORM_MAX_GROUP_SIZE = 4


class FusedGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose backward on a channels-last CPU map with small groups runs over
    contiguous channel rows instead of torch's channels-last kernel.

    torch 2.13's kernel reads each group's channels across the whole map, which is slow for
    groups of a few channels (the quickstart pixel decoder's 64 channels in 32 groups, training
    batches of 20 frames): :data:`GROUP_NORM_MAX_GROUP_SIZE`. The forward is torch's (the same
    values); the backward equals torch's to float rounding. Elsewhere (CUDA, contiguous maps,
    larger groups, half precision, no gradient) this is ``nn.GroupNorm``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (x.device.type == 'cpu' and x.dim() == 4 and torch.is_grad_enabled()
                and x.dtype in (torch.float32, torch.float64)
                and self.num_channels // self.num_groups <= GROUP_NORM_MAX_GROUP_SIZE
                and x.is_contiguous(memory_format=torch.channels_last)
                and not x.is_contiguous()):
            return _ChannelsLastGroupNorm.apply(x, self.weight, self.bias, self.num_groups,
                                                self.eps)
        return super().forward(x)


def fuse_group_norms(module: nn.Module) -> None:
    """Retype in place every ``nn.GroupNorm`` under ``module`` as :class:`FusedGroupNorm`."""
    for child in module.modules():
        if type(child) is nn.GroupNorm:
            child.__class__ = FusedGroupNorm
