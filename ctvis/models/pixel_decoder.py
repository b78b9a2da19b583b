"""Mask2Former's pixel decoder with ctvis' fused CPU kernel of multi-scale deformable attention.

mmdet's :class:`MSDeformAttnPixelDecoder` builds mmcv's ``MultiScaleDeformableAttention`` inside
its encoder layers. That module runs mmcv's compiled op on CUDA (and MLU) but, on the CPU, its
pure-PyTorch path (one ``grid_sample`` per level and large intermediates), which took two thirds of
a CPU frame. :class:`FusedMSDeformAttnPixelDecoder` is the same decoder (same parameters, same
state-dict keys, same initialisation) whose encoder attention runs ``ctvis.ops.ms_deform_attn`` on
the CPU instead; on CUDA and MLU nothing changes. In CPU inference the encoder's linear layers run
on oneDNN with their bias, ReLU and residual add fused (``ctvis.ops.onednn``): torch's MKL
products ran at half oneDNN's rate on AMD processors.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttention,
                                              MultiScaleDeformableAttnFunction)
from mmcv.utils import IS_CUDA_AVAILABLE, IS_MLU_AVAILABLE
from mmengine.model import ModuleList
from torch import Tensor

from mmdet.models.layers import MSDeformAttnPixelDecoder
from mmdet.registry import MODELS
from ..ops import extension_available, ms_deform_attn
from ..ops.multi_scale_deform_attn import ms_deform_attn_from_offsets
from ..ops.onednn import linear, needs_grad
from .fused_layers import fuse_group_norms, fuse_transformer_layers


def softmax_last_dim(x: Tensor) -> Tensor:
    """``x.softmax(-1)``; on the CPU computed over dimension -2 of ``x[..., None]``: torch 2.13's
    CPU softmax over a last dimension shorter than 16 runs several times slower than over another
    dimension (the attention weights' 12 = 3 levels x 4 points of the quickstart: forward and
    backward 7.3 -> 3.9 ms per encoder layer, 1 thread)."""
    if x.device.type != 'cpu':
        return x.softmax(-1)
    return x[..., None].softmax(-2)[..., 0]


@MODELS.register_module()
class FusedMultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` that samples with ctvis' kernel on the CPU.

    Same arguments, parameters and initialisation as its parent; only where the sampling runs
    differs: mmcv's compiled op for CUDA / MLU tensors (exactly as the parent), ctvis' fused
    kernel for CPU tensors (the parent's pure-PyTorch path gives the same values, to float
    rounding). In inference on the CPU with reference points (x, y), the kernel also computes the
    sampling locations and the softmax of the attention weights (:meth:`fused_inference`). It
    adds no state, so a built parent can be retyped in place (what
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

        value = linear(value, self.value_proj.weight, self.value_proj.bias)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_keys, self.num_heads, -1)
        heads_levels_points = (bs, num_queries, self.num_heads, self.num_levels, self.num_points)
        offsets = linear(query, self.sampling_offsets.weight, self.sampling_offsets.bias).view(
            *heads_levels_points, 2)
        logits = linear(query, self.attention_weights.weight, self.attention_weights.bias).view(
            bs, num_queries, self.num_heads, -1)
        if self.fused_inference(value, reference_points, offsets, logits):
            output = ms_deform_attn_from_offsets(value, spatial_shapes, level_start_index,
                                                 reference_points, offsets, logits)
            return self._project(output, identity)
        weights = softmax_last_dim(logits).view(*heads_levels_points)
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
        return self._project(output, identity)

    def _project(self, output: Tensor, identity: Tensor) -> Tensor:
        """The output projection plus the identity, in the input layout (in inference the add
        is fused into the projection)."""
        if self.training:  # mmcv's order, so that dropout draws the same mask
            output = self.output_proj(output)
            if not self.batch_first:
                output = output.permute(1, 0, 2)
            return self.dropout(output) + identity
        if self.batch_first:
            return linear(output, self.output_proj.weight, self.output_proj.bias,
                          residual=identity)
        return linear(output, self.output_proj.weight, self.output_proj.bias,
                      residual=identity.permute(1, 0, 2)).permute(1, 0, 2)

    @staticmethod
    def fused_inference(value: Tensor, reference_points: Tensor, offsets: Tensor,
                        logits: Tensor) -> bool:
        """Whether the kernel computes the sampling locations and the softmax itself
        (``ms_deform_attn_from_offsets``): for CPU tensors, reference points (x, y), no gradient
        needed (that op has no backward) and the extension built. Otherwise they are computed
        here, with autograd, and sampled by the device's op."""
        return (value.device.type == 'cpu' and reference_points.shape[-1] == 2
                and not needs_grad(value, reference_points, offsets, logits)
                and extension_available())

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


class SeparableConv2d(nn.Sequential):
    """A depthwise convolution of ``conv``'s kernel, stride and padding, then a pointwise 1x1
    one to its output channels (the bias, if ``conv`` has one, on the latter). Both keep
    torch's initialisation: mmdet's ``init_weights`` initialises ``output_convs[i].conv`` by
    its ``weight``, which a sequence has not."""

    def __init__(self, conv: nn.Conv2d) -> None:
        channels = conv.in_channels
        super().__init__(
            nn.Conv2d(channels, channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, groups=channels, bias=False),
            nn.Conv2d(channels, conv.out_channels, 1, bias=conv.bias is not None))


class NoOutputConv(nn.Identity):
    """The place of a level's output convolution when it has none: the sum passes on as is.
    ``conv`` is None so that mmdet's ``init_weights``, which initialises
    ``output_convs[i].conv`` of every level, leaves it alone (and draws no random numbers)."""
    conv = None


@MODELS.register_module()
class FusedMSDeformAttnPixelDecoder(MSDeformAttnPixelDecoder):
    """mmdet's ``MSDeformAttnPixelDecoder`` whose encoder attention is
    :class:`FusedMultiScaleDeformableAttention` (ctvis' fused kernel on the CPU) and whose
    encoder FFNs are :class:`~ctvis.models.fused_layers.FusedFFN` (in CPU inference, products on
    oneDNN with the ReLU and the residual add fused).

    Takes the same arguments and holds the same parameters under the same names, so configs and
    converted checkpoints of the parent work unchanged. The encoder's modules are
    retyped in place after the parent built them: rebuilding them would draw their random
    initialisation a second time and shift every later draw of the seeded random stream.

    Like the official decoder, it always runs in float32, also under mixed precision (autocast
    off, inputs cast to float): deformable attention is not trained in half precision there.

    More than one level below the encoder's (e.g. a backbone's stride-2 stem map for stride-2
    mask features) works here: mmdet builds the FPN's lateral and output convolutions from the
    lowest resolution down but indexes them by level from the highest, which gives a level
    another level's convolutions (a shape error, or silently swapped weights when the channel
    counts agree); this decoder stores them by level. With one such level (Mask2Former's
    configs) the two orders are the same.

    Args:
        finest_output_conv (str, optional): The output convolution of the highest-resolution
            level, which for a stride-2 level is a fifth of a CPU training step of the
            quickstart (docs/benchmarks.md): ``'dense'`` (mmdet's 3x3 convolution, the
            default), ``'separable'`` (a depthwise 3x3 then a pointwise 1x1 convolution, an
            eighth of the products at 64 channels, the same norm and activation after), or
            None (no convolution: the level's lateral projection plus the upsampled coarser
            level go straight into the 1x1 mask projection).
        *args, **kwargs: :class:`MSDeformAttnPixelDecoder`'s arguments.
    """

    def __init__(self, *args, finest_output_conv: Optional[str] = 'dense', **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # by level, highest resolution first (mmdet appends them lowest resolution first)
        self.lateral_convs = ModuleList(reversed(list(self.lateral_convs)))
        self.output_convs = ModuleList(reversed(list(self.output_convs)))
        for layer in self.encoder.layers:
            attention: nn.Module = layer.self_attn
            if type(attention) is not MultiScaleDeformableAttention:
                raise TypeError('FusedMSDeformAttnPixelDecoder expects mmcv '
                                'MultiScaleDeformableAttention in the encoder layers, got '
                                f'{type(attention).__name__}')
            attention.__class__ = FusedMultiScaleDeformableAttention
        fuse_transformer_layers(self.encoder)
        fuse_group_norms(self)
        if finest_output_conv == 'separable':
            self.output_convs[0].conv = SeparableConv2d(self.output_convs[0].conv)
        elif finest_output_conv is None:
            self.output_convs[0] = NoOutputConv()
        elif finest_output_conv != 'dense':
            raise ValueError("finest_output_conv must be 'dense', 'separable' or None, got "
                             f'{finest_output_conv!r}')

    def forward(self, feats: List[Tensor], project: bool = True) -> Tuple[Tensor, List[Tensor]]:
        """Per-pixel embeddings and multi-scale features, in float32 whatever the autocast state.

        The computation of mmdet's forward (same values, bit for bit on the CPU, tested), written
        so that ``torch.compile`` traces it whole: level shapes come from ``feat.shape`` as
        Python ints (mmdet converts them to tensors in its level loop, a graph break), and since
        frames are never padded here the encoder gets no key padding mask (mmdet passes an
        all-False one, which costs a masked copy of the value in every encoder layer).

        Args:
            feats (list[Tensor]): Backbone features, (bs, c_i, h_i, w_i), highest resolution
                first (stride 4, or 2 with a stem level).
            project (bool): Apply the final 1x1 mask projection (``mask_feature``). CTVISHead
                passes False and folds it into its queries
                (:func:`~ctvis.models.ctvis_head.mask_logits`).

        Returns:
            tuple: ``mask_feature`` (bs, C, h_0, w_0) (before its projection with ``project``
            False) and the multi-scale features fed to the transformer decoder, each
            (bs, C, h_i, w_i), all float32.
        """
        with torch.autocast(feats[0].device.type, enabled=False):
            features, multi_scale = self._decode([feat.float() for feat in feats])
            return (self.mask_feature(features) if project else features), multi_scale

    def _decode(self, feats: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        batch_size = feats[0].shape[0]
        inputs, positions, points, shapes = [], [], [], []
        for i in range(self.num_encoder_levels):  # from the lowest resolution up
            level = self.num_input_levels - i - 1
            feat = feats[level]
            height, width = feat.shape[-2:]
            no_padding = feat.new_zeros((batch_size, height, width), dtype=torch.bool)
            position = (self.level_encoding.weight[i].view(1, -1, 1, 1) +
                        self.postional_encoding(no_padding))
            grid = self.point_generator.single_level_grid_priors((height, width), level,
                                                                 device=feat.device)
            stride = self.strides[level]
            points.append(grid / grid.new_tensor([width * stride, height * stride]))
            inputs.append(self.input_convs[i](feat).flatten(2).permute(0, 2, 1))
            positions.append(position.flatten(2).permute(0, 2, 1))
            shapes.append((height, width))
        device = feats[0].device
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=device)
        level_sizes = [height * width for height, width in shapes]
        starts = [sum(level_sizes[:i]) for i in range(len(level_sizes))]
        reference_points = torch.cat(points)[None, :, None].repeat(
            batch_size, 1, self.num_encoder_levels, 1)
        memory = self.encoder(
            query=torch.cat(inputs, dim=1),
            query_pos=torch.cat(positions, dim=1),
            key_padding_mask=None,
            spatial_shapes=spatial_shapes,
            level_start_index=torch.tensor(starts, dtype=torch.long, device=device),
            valid_ratios=None,
            reference_points=reference_points)
        # each level as a (bs, C, h, w) view of the (bs, hw, C) memory, channels-last strides
        # (reshaping the permuted (bs, C, N) memory instead gave a batch stride that sent the
        # FPN's bilinear upsampling through a strided copy: 60-90 ms per R50 frame, now 2)
        outs = [level_memory.unflatten(1, (height, width)).permute(0, 3, 1, 2)
                for level_memory, (height, width) in zip(torch.split(memory, level_sizes, dim=1),
                                                         shapes)]
        # FPN on the levels the encoder does not see, from the lowest resolution up
        for i in range(self.num_input_levels - self.num_encoder_levels - 1, -1, -1):
            lateral = self.lateral_convs[i](feats[i])
            outs.append(self.output_convs[i](lateral + F.interpolate(
                outs[-1], size=lateral.shape[-2:], mode='bilinear', align_corners=False)))
        return outs[-1], outs[:self.num_outs]
