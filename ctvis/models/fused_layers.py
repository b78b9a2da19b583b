"""mmcv's transformer bricks (``FFN``, ``MultiheadAttention``) with a fused CPU inference forward.

In inference their products run through :func:`ctvis.ops.onednn.linear` (oneDNN on the CPU, the
ReLU and the residual add in the product's epilogue) and the attention through torch's
``scaled_dot_product_attention``; training, and whatever :func:`fuse_transformer_layers` does not
recognise, runs mmcv's forward. The classes add no state: built mmcv modules are retyped in place,
so parameters, state-dict keys and the seeded initialisation stay mmcv's.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from torch import Tensor

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
    forward; the fused path broadcasts it, which spares the per-head copies).
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
