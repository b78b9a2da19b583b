"""Mask2Former's pixel decoder with ctvis' fused CPU kernel of multi-scale deformable attention.

mmdet's :class:`MSDeformAttnPixelDecoder` builds mmcv's ``MultiScaleDeformableAttention`` inside
its encoder layers. That module runs mmcv's compiled op on CUDA (and MLU) but, on the CPU, its
pure-PyTorch path (one ``grid_sample`` per level and large intermediates), which took two thirds of
a CPU frame. :class:`FusedMSDeformAttnPixelDecoder` is the same decoder (same parameters, same
state-dict keys, same initialisation) whose encoder attention runs ``ctvis.ops.ms_deform_attn`` on
the CPU instead; on CUDA and MLU nothing changes.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttention,
                                              MultiScaleDeformableAttnFunction)
from mmcv.utils import IS_CUDA_AVAILABLE, IS_MLU_AVAILABLE
from torch import Tensor

from mmdet.models.layers import MSDeformAttnPixelDecoder
from mmdet.registry import MODELS
from ..ops import ms_deform_attn


@MODELS.register_module()
class FusedMultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` that samples with ctvis' kernel on the CPU.

    Same arguments, parameters and initialisation as its parent; only where the sampling runs
    differs: mmcv's compiled op for CUDA / MLU tensors (exactly as the parent), ctvis' fused
    kernel for CPU tensors (the parent's pure-PyTorch path gives the same values, to float
    rounding). It adds no state, so a built parent can be retyped in place (what
    :class:`FusedMSDeformAttnPixelDecoder` does).
    """

    def forward(self, query: Tensor, key: Optional[Tensor] = None,
                value: Optional[Tensor] = None, identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None,
                reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None,
                level_start_index: Optional[Tensor] = None, **kwargs) -> Tensor:
        """Deformable attention of the queries to a multi-level value.

        Args:
            query (Tensor): (bs, num_queries, embed_dims), or (num_queries, bs, embed_dims) when
                ``batch_first`` is False (as every tensor below).
            key (Tensor, optional): Unused (deformable attention has no keys).
            value (Tensor, optional): (bs, num_keys, embed_dims); defaults to ``query``.
            identity (Tensor, optional): Added to the output; defaults to ``query``.
            query_pos (Tensor, optional): Added to ``query`` before the projections.
            key_padding_mask (Tensor, optional): (bs, num_keys) bool, True where the value is
                padding (set to zero).
            reference_points (Tensor): (bs, num_queries, num_levels, 2) points (x, y) in [0, 1],
                or (bs, num_queries, num_levels, 4) boxes (cx, cy, w, h).
            spatial_shapes (Tensor): (num_levels, 2) int64, (h, w) of each level.
            level_start_index (Tensor): (num_levels,) int64, first key of each level.

        Returns:
            Tensor: (bs, num_queries, embed_dims), like ``query``.
        """
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.permute(1, 0, 2), value.permute(1, 0, 2)
        bs, num_queries, _ = query.shape
        num_keys = value.shape[1]

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_keys, self.num_heads, -1)
        heads_levels_points = (bs, num_queries, self.num_heads, self.num_levels, self.num_points)
        offsets = self.sampling_offsets(query).view(*heads_levels_points, 2)
        weights = self.attention_weights(query).view(bs, num_queries, self.num_heads, -1)
        weights = weights.softmax(-1).view(*heads_levels_points)
        locations = self.sampling_locations(reference_points, offsets, spatial_shapes)

        if (IS_CUDA_AVAILABLE and value.is_cuda) or (IS_MLU_AVAILABLE and value.is_mlu):
            # mmcv's op does not check the shapes (the CPU kernel does)
            if int(spatial_shapes.prod(1).sum()) != num_keys:
                raise ValueError(f'spatial_shapes {spatial_shapes.tolist()} hold '
                                 f'{int(spatial_shapes.prod(1).sum())} keys, value {num_keys}')
            output = MultiScaleDeformableAttnFunction.apply(value, spatial_shapes,
                                                            level_start_index, locations,
                                                            weights, self.im2col_step)
        else:
            output = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)

        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity

    def sampling_locations(self, reference_points: Tensor, offsets: Tensor,
                           spatial_shapes: Tensor) -> Tensor:
        """Where each head samples, normalised to [0, 1].

        Args:
            reference_points (Tensor): (bs, num_queries, num_levels, 2) points (x, y), offsets
                then count in pixels of each level; or (bs, num_queries, num_levels, 4) boxes
                (cx, cy, w, h), offsets then count in 1 / (2 * num_points) of the box size.
            offsets (Tensor): (bs, num_queries, num_heads, num_levels, num_points, 2).
            spatial_shapes (Tensor): (num_levels, 2), (h, w) of each level.

        Returns:
            Tensor: (bs, num_queries, num_heads, num_levels, num_points, 2), (x, y).
        """
        points = reference_points[:, :, None, :, None]
        if reference_points.shape[-1] == 2:
            level_wh = spatial_shapes.flip(-1)[None, None, None, :, None]
            return points + offsets / level_wh
        if reference_points.shape[-1] == 4:
            return points[..., :2] + offsets / self.num_points * points[..., 2:] * 0.5
        raise ValueError('reference_points must end in 2 (x, y) or 4 (cx, cy, w, h), got shape '
                         f'{tuple(reference_points.shape)}')


@MODELS.register_module()
class FusedMSDeformAttnPixelDecoder(MSDeformAttnPixelDecoder):
    """mmdet's ``MSDeformAttnPixelDecoder`` whose encoder attention is
    :class:`FusedMultiScaleDeformableAttention` (ctvis' fused kernel on the CPU).

    Takes the same arguments and holds the same parameters under the same names, so configs and
    converted checkpoints of the parent work unchanged. The encoder's attention modules are
    retyped in place after the parent built them: rebuilding them would draw their random
    initialisation a second time and shift every later draw of the seeded random stream.

    Like the official decoder, it always runs in float32, also under mixed precision (autocast
    off, inputs cast to float): deformable attention is not trained in half precision there.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for layer in self.encoder.layers:
            attention: nn.Module = layer.self_attn
            if type(attention) is not MultiScaleDeformableAttention:
                raise TypeError('FusedMSDeformAttnPixelDecoder expects mmcv '
                                'MultiScaleDeformableAttention in the encoder layers, got '
                                f'{type(attention).__name__}')
            attention.__class__ = FusedMultiScaleDeformableAttention

    def forward(self, feats: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """Per-pixel embeddings and multi-scale features, in float32 whatever the autocast state.

        Args:
            feats (list[Tensor]): Backbone features, (bs, c_i, h_i, w_i) from stride 4 up.

        Returns:
            tuple: ``mask_feature`` (bs, C, h_0, w_0) and the multi-scale features fed to the
            transformer decoder, each (bs, C, h_i, w_i), all float32.
        """
        with torch.autocast(feats[0].device.type, enabled=False):
            return super().forward([feat.float() for feat in feats])
