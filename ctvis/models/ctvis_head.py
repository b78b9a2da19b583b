"""Per-frame Mask2Former head that also returns re-id embeddings for tracking."""
from typing import List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import Conv2d as MMCVConv2d
from mmcv.ops import point_sample
from mmengine.model import caffe2_xavier_init
from mmengine.structures import InstanceData, PixelData
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from mmdet.models.dense_heads import Mask2FormerHead
from mmdet.models.task_modules.assigners import (ClassificationCost, CrossEntropyLossCost,
                                                 DiceCost, HungarianAssigner)
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmdet.models.task_modules.samplers import MaskPseudoSampler
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import InstanceList
from .fused_layers import FusedMultiheadAttention, fuse_transformer_layers, per_head_mask
from .mask_utils import mask_centroids
from .pixel_decoder import FusedMSDeformAttnPixelDecoder


class _MaskProduct(torch.autograd.Function):
    """``einsum('bqc,bchw->bqhw', embeds, features)`` with a backward of one batched product per
    input, the features' gradient written in their own memory layout.

    Autograd's einsum backward permutes and copies around its products and returns an NCHW
    gradient, which a channels-last map behind the features then copies back. With the mask
    projection folded into the queries (:func:`mask_logits`) that ate the fold's gain in the
    CPU training step; with this product the fold saves 3-4 % of it (docs/benchmarks.md). Same
    values as the einsum (tested)."""

    @staticmethod
    def forward(ctx, embeds: Tensor, features: Tensor) -> Tensor:
        ctx.save_for_backward(embeds, features)
        b, _, h, w = features.shape
        return torch.bmm(embeds, _pixels_by_channel(features).transpose(1, 2)).view(b, -1, h, w)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        embeds, features = ctx.saved_tensors
        b, c, h, w = features.shape
        grad = grad.reshape(b, -1, h * w)
        dtype = grad.dtype  # the products' dtype (autocast's in mixed precision)
        grad_embeds = grad_features = None
        if ctx.needs_input_grad[0]:
            grad_embeds = torch.bmm(grad, _pixels_by_channel(features).to(dtype)).to(embeds.dtype)
        if ctx.needs_input_grad[1]:
            embeds = embeds.to(dtype)
            if features.is_contiguous(memory_format=torch.channels_last):
                grad_features = torch.bmm(grad.transpose(1, 2), embeds).view(b, h, w, c).permute(
                    0, 3, 1, 2)
            else:
                grad_features = torch.bmm(embeds.transpose(1, 2), grad).view(b, c, h, w)
            grad_features = grad_features.to(features.dtype)
        return grad_embeds, grad_features


def _pixels_by_channel(features: Tensor) -> Tensor:
    """(B, C, h, w) features as (B, h * w, C), a view for channels-last ones."""
    b, c, h, w = features.shape
    if features.is_contiguous(memory_format=torch.channels_last):
        return features.permute(0, 2, 3, 1).view(b, h * w, c)
    return features.reshape(b, c, h * w).transpose(1, 2)


def foldable(projection: Optional[nn.Module]) -> bool:
    """Whether :func:`mask_logits` can fold ``projection`` into the queries: a plain 1x1
    convolution (torch's, or mmcv's wrapper of it, which mmdet builds)."""
    return (type(projection) in (nn.Conv2d, MMCVConv2d) and projection.kernel_size == (1, 1)
            and projection.stride == (1, 1) and projection.padding == (0, 0)
            and projection.dilation == (1, 1) and projection.groups == 1)


def mask_logits(mask_embed: Tensor, features: Tensor,
                projection: Optional[nn.Conv2d] = None) -> Tensor:
    """Mask logits of queries on per-pixel features, (B, Q, h, w).

    Args:
        mask_embed (Tensor): The queries' mask embeddings (B, Q, C).
        features (Tensor): Per-pixel features (B, C', h, w).
        projection (nn.Conv2d, optional): The pixel decoder's 1x1 mask projection (C' -> C),
            still to be applied to ``features``. It is folded into the queries instead, ``(E W)
            x + E b`` for ``E (W x + b)``: the same logits to float rounding, without a
            convolution over every pixel (and its backward in training).
    """
    bias = None
    if projection is not None:
        if projection.bias is not None:
            bias = mask_embed @ projection.bias
        mask_embed = mask_embed @ projection.weight.flatten(1)
    logits = _MaskProduct.apply(mask_embed, features)
    return logits if bias is None else logits + bias[..., None, None]


def build_mlp(channels: int, num_layers: int) -> nn.Module:
    """``num_layers`` Linear(channels, channels) with ReLU between (no output activation)."""
    if num_layers == 0:
        return nn.Identity()
    layers: List[nn.Module] = []
    for i in range(num_layers):
        layers.append(nn.Linear(channels, channels))
        if i < num_layers - 1:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


@MODELS.register_module()
class CTVISHead(Mask2FormerHead):
    """Mask2Former head of CTVIS: frames are independent images, queries carry re-id embeddings.

    Identical to mmdet's :class:`Mask2FormerHead` (which provides the losses and matching) plus a
    ``reid_embed`` MLP on the final decoder layer's normalised query features. The embeddings are
    not normalised: the contrastive loss and the tracker use raw dot products.

    The pixel decoder's final 1x1 mask projection is folded into the queries' mask embeddings
    (:func:`mask_logits`): the same masks to float rounding, without a convolution over every
    pixel of the highest-resolution map and its backward (``foldable``; mmdet's pixel decoders,
    which project their own output, are used as they are).

    With ``position_prior`` (not in CTVIS; off by default) every stage after the first adds
    ``-d^2 / (2 sigma^2)`` to its mask logits, ``d`` the distance from the centroid of the query's
    previous-stage mask and ``sigma`` predicted from the query (a linear layer, starting at
    ``prior_sigma`` of the frame): a mask product on features that are alike for two look-alike
    instances tends to cover both, and the prior pulls each stage's mask towards the instance its
    previous mask mostly covered. The centre comes from the mask, not from the query, so queries
    are not tied to places (a centre predicted from the query lost association on held-out videos;
    docs/benchmarks.md). Inference then computes the intermediate masks at full resolution, as
    training does.

    With ``query_dropout`` (not in CTVIS; off by default) each training frame decodes its own
    random subset of the learned queries, ``query_dropout * num_queries`` (half rounded up) left
    out. A query that holds an instance through a clip lets the contrastive loss be met by the
    query's own signature in the embedding, and then two look-alikes that cross swap identities
    with the queries that follow them; with the subsets drawn anew per frame an instance changes
    query within a clip, and its embedding has to describe the instance. Inference decodes all
    queries.

    Args:
        num_reid_layers (int): Linear layers of the re-id MLP (3 in CTVIS; 0 = identity).
        position_prior (bool): Add the position prior to the masks of stages 1 and later.
        prior_sigma (float): The prior's starting scale, a fraction of the frame (0.15: about a
            toy object's size).
        query_dropout (float): Fraction of the queries left out of each training frame, in
            [0, 1).
        **kwargs: Arguments of :class:`Mask2FormerHead`.
    """

    # the train_cfg keys mmdet's Mask2FormerHead reads; any other one would be ignored
    TRAIN_CFG_KEYS = ('assigner', 'sampler', 'num_points', 'oversample_ratio',
                      'importance_sample_ratio')

    def __init__(self, *args, num_reid_layers: int = 3, position_prior: bool = False,
                 prior_sigma: float = 0.15, query_dropout: float = 0.0, **kwargs) -> None:
        unknown = sorted(set(kwargs.get('train_cfg') or {}) - set(self.TRAIN_CFG_KEYS))
        if unknown:
            raise ValueError(f'{type(self).__name__}: train_cfg has unknown keys {unknown}; it '
                             f'takes {", ".join(self.TRAIN_CFG_KEYS)}')
        super().__init__(*args, **kwargs)
        self.reid_embed = build_mlp(self.decoder_embed_dims, num_reid_layers)
        if position_prior and not prior_sigma > 0:
            raise ValueError(f'{type(self).__name__}: prior_sigma must be > 0, got {prior_sigma}')
        # log sigma of each query's prior
        self.prior_scale = nn.Linear(self.decoder_embed_dims, 1) if position_prior else None
        self.prior_sigma = prior_sigma
        if not 0 <= query_dropout < 1:
            raise ValueError(f'{type(self).__name__}: query_dropout must be in [0, 1), got '
                             f'{query_dropout}')
        # queries left out of each training frame, half rounded up
        self.num_dropped_queries = int(query_dropout * self.num_queries + 0.5)
        if self.num_dropped_queries >= self.num_queries:
            raise ValueError(f'{type(self).__name__}: query_dropout={query_dropout} leaves no '
                             f'query of {self.num_queries} in a training frame')
        fuse_transformer_layers(self.transformer_decoder)  # fused CPU inference, same parameters

    def init_weights(self) -> None:
        super().init_weights()
        for m in self.reid_embed.modules():
            if isinstance(m, nn.Linear):
                caffe2_xavier_init(m, bias=0)
        if self.prior_scale is not None:
            self.prior_scale.reset_parameters()
            nn.init.constant_(self.prior_scale.bias, float(np.log(self.prior_sigma)))

    def position_bias(self, decoder_out: Tensor, previous_masks: Tensor) -> Tensor:
        """The position prior, (B, Q, h, w) at the resolution of ``previous_masks``.

        Args:
            decoder_out (Tensor): Normalised query features of this stage (B, Q, C).
            previous_masks (Tensor): Mask logits of the previous stage (B, Q, h, w); the centre
                is their centroid weighted by ``sigmoid - 0.5`` where positive (not a gradient
                path), the frame's centre for a mask with no pixel above probability 0.5.
        """
        h, w = previous_masks.shape[-2:]
        ys = (torch.arange(h, device=decoder_out.device, dtype=decoder_out.dtype) + 0.5) / h
        xs = (torch.arange(w, device=decoder_out.device, dtype=decoder_out.dtype) + 0.5) / w
        weights = (previous_masks.detach().sigmoid() - 0.5).clamp(min=0) + 1e-6
        centre = mask_centroids(weights)
        centre_x, centre_y = centre[..., 0] / w, centre[..., 1] / h
        half_inv_var = 0.5 * torch.exp(-2 * self.prior_scale(decoder_out)[..., 0])
        dy = (ys - centre_y[..., None]) ** 2
        dx = (xs - centre_x[..., None]) ** 2
        return -(dy[..., :, None] + dx[..., None, :]) * half_inv_var[..., None, None]

    def forward(self, x: List[Tensor], batch_data_samples: SampleList
                ) -> Tuple[List[Tensor], List[Tensor], Tensor, Tensor]:
        """Run the pixel decoder and the masked-attention decoder on a batch of frames.

        Args:
            x (list[Tensor]): Backbone features, high to low resolution, each (B, C_i, H_i, W_i).
            batch_data_samples (list[:obj:`DetDataSample`]): One per frame (unused here).

        Returns:
            tuple:
                - cls_pred_list (list[Tensor]): Per decoder stage (initial queries + every layer),
                  class logits (B, Q, C + 1).
                - mask_pred_list (list[Tensor]): Per stage, mask logits (B, Q, H_0, W_0) at the
                  stride of the highest-resolution feature (4, or 2 with a stem level).
                - reid_embeds (Tensor): Final-layer re-id embeddings (B, Q, E).
                - queries (Tensor): Final-layer normalised query features (B, Q, C).
        """
        return self._decode(x, all_stages=True)

    def predict_final(self, x: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Final-layer outputs only, for inference.

        The earlier stages' masks serve only as attention masks at the resolution of the next
        decoder level, so they are computed there: the mask features are resized once per level
        and multiplied by the queries' mask embeddings (resizing and the channel product commute,
        so the masks equal those of :meth:`forward` to float rounding) instead of full-resolution
        masks resized at every stage. Saves about a tenth of an R50 frame on the CPU. With the
        position prior every stage's mask is computed at full resolution, as in training.

        Args:
            x (list[Tensor]): Backbone features, high to low resolution, each (B, C_i, H_i, W_i).

        Returns:
            tuple[Tensor, Tensor, Tensor]: Class logits (B, Q, C + 1), mask logits
            (B, Q, H_0, W_0) and re-id embeddings (B, Q, E) of the final layer.
        """
        cls_preds, mask_preds, embeds, _ = self._decode(x, all_stages=False)
        return cls_preds[-1], mask_preds[-1], embeds

    def _decode(self, x: List[Tensor], all_stages: bool
                ) -> Tuple[List[Tensor], List[Tensor], Tensor, Tensor]:
        """:meth:`forward`, or with ``all_stages`` False the final stage's predictions only."""
        batch_size = x[0].shape[0]
        pixel_features, multi_scale_memorys, projection = self._pixel_features(x)
        decoder_inputs, decoder_pos = [], []
        for i in range(self.num_transformer_feat_level):
            memory = multi_scale_memorys[i]
            decoder_input = self.decoder_input_projs[i](memory).flatten(2).permute(0, 2, 1)
            decoder_inputs.append(decoder_input + self.level_embed.weight[i].view(1, 1, -1))
            no_padding = memory.new_zeros((batch_size, ) + memory.shape[-2:], dtype=torch.bool)
            decoder_pos.append(
                self.decoder_positional_encoding(no_padding).flatten(2).permute(0, 2, 1))
        attn_sizes = [memory.shape[-2:] for memory in multi_scale_memorys]
        # the prior's centre is taken from the previous stage's full-resolution mask
        full_masks = all_stages or self.prior_scale is not None
        # inference: the mask features at each attention-mask size, for the intermediate stages
        attn_features = None if full_masks else [
            F.interpolate(pixel_features, size, mode='bilinear', align_corners=False)
            for size in attn_sizes]
        if self.training and self.num_dropped_queries > 0:  # a subset per frame, query order
            num_kept = self.num_queries - self.num_dropped_queries
            kept = torch.rand((batch_size, self.num_queries), device=pixel_features.device
                              ).argsort(1)[:, :num_kept].sort(1)[0]
            query_feat = self.query_feat.weight[kept]
            query_embed = self.query_embed.weight[kept]
        else:
            query_feat = self.query_feat.weight.unsqueeze(0).repeat((batch_size, 1, 1))
            query_embed = self.query_embed.weight.unsqueeze(0).repeat((batch_size, 1, 1))

        cls_pred_list, mask_pred_list = [], []
        attn_mask = None  # from stage 0 on, the mask the next layer attends with
        mask_pred = None
        # fused attention: one mask for all heads (broadcast at inference, copied per head by
        # the layer in training)
        shared_masks = all(type(layer.cross_attn) is FusedMultiheadAttention
                           for layer in self.transformer_decoder.layers)
        num_layers = self.num_transformer_decoder_layers
        for i in range(num_layers + 1):  # stage 0: the initial queries
            if i > 0:
                level = (i - 1) % self.num_transformer_feat_level
                query_feat = self.transformer_decoder.layers[i - 1](
                    query=query_feat,
                    key=decoder_inputs[level],
                    value=decoder_inputs[level],
                    query_pos=query_embed,
                    key_pos=decoder_pos[level],
                    cross_attn_mask=attn_mask,
                    query_key_padding_mask=None,
                    key_padding_mask=None)
            decoder_out = self.transformer_decoder.post_norm(query_feat)
            mask_embed = self.mask_embed(decoder_out)
            level = i % self.num_transformer_feat_level
            if full_masks or i == num_layers:
                masks = mask_logits(mask_embed, pixel_features, projection)
                if self.prior_scale is not None and i > 0:
                    masks = masks + self.position_bias(decoder_out, mask_pred)
                mask_pred = masks
                if all_stages or i == num_layers:
                    cls_pred_list.append(self.cls_embed(decoder_out))
                    mask_pred_list.append(mask_pred)
                if i < num_layers:
                    attn_mask = self._attention_mask(F.interpolate(
                        mask_pred, attn_sizes[level], mode='bilinear', align_corners=False),
                        per_head=not shared_masks)
            else:
                attn_mask = self._attention_mask(
                    mask_logits(mask_embed, attn_features[level], projection),
                    per_head=not shared_masks)
        return cls_pred_list, mask_pred_list, self.reid_embed(decoder_out), decoder_out

    def _pixel_features(self, x: List[Tensor]
                        ) -> Tuple[Tensor, List[Tensor], Optional[nn.Conv2d]]:
        """The pixel decoder's per-pixel and multi-scale features, and its 1x1 mask projection
        when :func:`mask_logits` folds it into the queries (None: the features are projected).
        """
        decoder = self.pixel_decoder
        projection = getattr(decoder, 'mask_feature', None)
        if isinstance(decoder, FusedMSDeformAttnPixelDecoder) and foldable(projection):
            return (*decoder(x, project=False), projection)
        return (*decoder(x), None)

    def _attention_mask(self, mask_logits: Tensor, per_head: bool = True) -> Tensor:
        """Mask2Former's cross-attention mask from mask logits (B, Q, h, w).

        Returns:
            Tensor: (B * num_heads, Q, h * w) bool, or with ``per_head`` False (B, 1, Q, h * w)
            shared by the heads (for :class:`FusedMultiheadAttention`), True where a query does
            not attend (mask probability below 0.5); a query whose mask hides everything attends
            everywhere. The same values as mmdet's head, thresholded before the per-head copies
            and with a boolean ``all`` instead of an integer sum, which cost a tenth of a CPU
            frame.
        """
        hidden = (mask_logits.flatten(2).sigmoid() < 0.5).detach()
        shared = (hidden & ~hidden.all(-1, keepdim=True))[:, None]
        return per_head_mask(shared, self.num_heads) if per_head else shared

    def _get_targets_single(self, cls_score: Tensor, mask_pred: Tensor,
                            gt_instances: InstanceData, img_meta: dict) -> Tuple[Tensor]:
        """mmdet's targets of one frame, with the Hungarian matching costs in float32.

        The official matcher computes its costs with autocast off; under mixed precision the fp16
        mask costs could otherwise tie or reorder and change the matching. Used by the per-frame
        path of :meth:`get_targets` (see :meth:`batched_matching_unsupported`).

        Args:
            cls_score (Tensor): Class logits (Q, C + 1).
            mask_pred (Tensor): Mask logits (Q, h, w).
            gt_instances (InstanceData): ``labels`` (G,) and ``masks`` (G, H, W).
            img_meta (dict): Frame meta information.

        Returns:
            tuple[Tensor]: As :meth:`Mask2FormerHead._get_targets_single`.
        """
        with torch.autocast(cls_score.device.type, enabled=False):
            return super()._get_targets_single(cls_score.float(), mask_pred.float(),
                                               gt_instances, img_meta)

    def batched_matching_unsupported(self) -> Optional[str]:
        """Why :meth:`hungarian_match` cannot reproduce the configured matcher, or None.

        The batched matching implements mmdet's ``HungarianAssigner`` with ``ClassificationCost``,
        ``CrossEntropyLossCost`` (sigmoid) and ``DiceCost`` (any weights, ``pred_act``, ``eps``,
        ``naive_dice``) and the ``MaskPseudoSampler``. Any other assigner, cost or sampler
        (subclasses included: they may compute something else) keeps mmdet's per-frame path.
        """
        if type(self.assigner) is not HungarianAssigner:
            return f'assigner {type(self.assigner).__name__} is not HungarianAssigner'
        if type(self.sampler) is not MaskPseudoSampler:
            return f'sampler {type(self.sampler).__name__} is not MaskPseudoSampler'
        for cost in self.assigner.match_costs:
            if type(cost) not in (ClassificationCost, CrossEntropyLossCost, DiceCost):
                return f'match cost {type(cost).__name__} has no batched version'
            if type(cost) is CrossEntropyLossCost and not cost.use_sigmoid:
                return 'CrossEntropyLossCost without sigmoid'
        return None

    def get_targets(self, cls_scores_list: List[Tensor], mask_preds_list: List[Tensor],
                    batch_gt_instances: InstanceList, batch_img_metas: List[dict],
                    return_sampling_results: bool = False) -> Tuple:
        """mmdet's targets of one decoder stage, all frames matched in one batched pass.

        The outputs of :meth:`MaskFormerHead.get_targets` (labels with background
        ``num_classes``, label weights, mask targets, mask weights and the average factor
        ``sum(max(num_pos, 1))``) from one draw of the random points (B, num_points, 2) and
        :meth:`hungarian_match`, instead of 80 per-frame assigner/sampler round trips an
        iteration. On the CPU the draw yields the same numbers as mmdet's per-frame draws, so
        the targets and the losses are bit-identical to mmdet's. mmdet's per-frame path runs
        when sampling results are asked for or :meth:`batched_matching_unsupported` says why.
        """
        if return_sampling_results or self.batched_matching_unsupported():
            return super().get_targets(cls_scores_list, mask_preds_list, batch_gt_instances,
                                       batch_img_metas, return_sampling_results)
        cls_scores, mask_preds = torch.stack(cls_scores_list), torch.stack(mask_preds_list)
        point_coords = torch.rand((len(cls_scores_list), self.num_points, 2),
                                  device=cls_scores.device)
        assigned = self.hungarian_match(cls_scores, mask_preds, batch_gt_instances, point_coords)
        matched = assigned >= 0
        # the labels of all frames' ground truth, then the background label for the unmatched
        gt_labels = torch.cat([gt.labels for gt in batch_gt_instances])
        label_lookup = torch.cat([gt_labels, gt_labels.new_full((1, ), self.num_classes)])
        offsets = torch.tensor([0] + [len(gt) for gt in batch_gt_instances[:-1]],
                               device=assigned.device).cumsum(0)
        labels = label_lookup[torch.where(matched, assigned + offsets[:, None], len(gt_labels))]
        mask_targets = [gt.masks[row[row >= 0]] for gt, row in zip(batch_gt_instances, assigned)]
        avg_factor = int(matched.sum(1).clamp(min=1).sum())
        return (list(labels.unbind(0)), list(torch.ones_like(labels).unbind(0)), mask_targets,
                list(matched.float().unbind(0)), avg_factor)

    def hungarian_match(self, cls_scores: Tensor, mask_preds: Tensor,
                        batch_gt_instances: InstanceList, point_coords: Tensor) -> Tensor:
        """Hungarian matching of B frames' queries to their ground truth, batched.

        mmdet's ``HungarianAssigner`` with the configured match costs on the masks sampled at
        ``point_coords``, computed in float32 with autocast off. Point sampling and the
        element-wise parts run once for all frames; the (Q, G) products stay per frame, because
        the BLAS rounds a product differently when the number of columns changes, and these
        costs equal mmdet's bit for bit (so ties resolve the same way). Then
        ``linear_sum_assignment`` per frame, as mmdet: with more ground truth than queries,
        every query is matched and the rest of the ground truth is not.

        Args:
            cls_scores (Tensor): Class logits (B, Q, C + 1).
            mask_preds (Tensor): Mask logits (B, Q, h, w).
            batch_gt_instances (list[InstanceData]): B frames' ``labels`` (G_b,) and ``masks``
                (G_b, H, W) tensors.
            point_coords (Tensor): Per frame the normalised sampling points (B, num_points, 2).

        Returns:
            Tensor: (B, Q) long, the index of the ground truth (within its frame) each query
            is matched to, -1 for unmatched (background) queries.
        """
        with torch.no_grad(), torch.autocast(cls_scores.device.type, enabled=False):
            costs = self._matching_costs(cls_scores.float(), mask_preds.float(),
                                         batch_gt_instances, point_coords.float())
        assigned = np.full(cls_scores.shape[:2], -1, dtype=np.int64)
        all_costs = torch.cat(costs, dim=1).cpu().numpy()  # one device-to-host copy
        counts = [len(gt) for gt in batch_gt_instances]
        for b, cost in enumerate(np.split(all_costs, np.cumsum(counts)[:-1], axis=1)):
            rows, cols = linear_sum_assignment(cost)  # none for a frame without ground truth
            assigned[b, rows] = cols
        return torch.from_numpy(assigned).to(cls_scores.device)

    def _matching_costs(self, cls_scores: Tensor, mask_preds: Tensor,
                        batch_gt_instances: InstanceList, point_coords: Tensor) -> List[Tensor]:
        """The weighted sum of the configured match costs of each frame, (Q, G_b) each."""
        counts = [len(gt) for gt in batch_gt_instances]
        num_queries = cls_scores.shape[1]
        if sum(counts) == 0:
            return [cls_scores.new_zeros((num_queries, 0)) for _ in counts]
        points = MatchPoints(
            cls_scores=cls_scores,
            preds=point_sample(mask_preds, point_coords),
            gt_labels=torch.cat([gt.labels for gt in batch_gt_instances]),
            gts=self._sample_gt_points([gt.masks for gt in batch_gt_instances], point_coords),
            frame_of_gt=torch.repeat_interleave(
                torch.arange(len(counts), device=cls_scores.device),
                torch.tensor(counts, device=cls_scores.device)),
            counts=counts)
        cost = torch.stack([match_cost_columns(match_cost, points)
                            for match_cost in self.assigner.match_costs]).sum(dim=0)
        return list(cost.split(counts, dim=1))

    @staticmethod
    def _sample_gt_points(gt_masks: List[Tensor], point_coords: Tensor) -> Tensor:
        """All frames' ground-truth masks sampled at their frame's points, (sum G_b, P)."""
        frame_points = [coords.expand(len(masks), -1, -1)
                        for masks, coords in zip(gt_masks, point_coords.split(1))]
        if len({masks.shape[1:] for masks in gt_masks}) > 1:  # unpadded: sample per frame
            return torch.cat([point_sample(masks.unsqueeze(1).float(), points).squeeze(1)
                              for masks, points in zip(gt_masks, frame_points)])
        return point_sample(torch.cat(gt_masks).unsqueeze(1).float(),
                            torch.cat(frame_points)).squeeze(1)

    def preprocess_gt(self, batch_gt_instances: InstanceList,
                      batch_gt_semantic_segs: List[Optional[PixelData]]) -> InstanceList:
        """mmdet's ground truth (``labels``, ``masks`` as (G, H, W) tensors) with the masks in
        float32 instead of int64: every consumer (matching costs, point sampling of the mask
        targets) converts them to float, once per decoder stage and frame."""
        batch_gt_instances = super().preprocess_gt(batch_gt_instances, batch_gt_semantic_segs)
        for gt in batch_gt_instances:
            gt.masks = gt.masks.float()
        return batch_gt_instances

    def loss_and_outputs(self, x: List[Tensor], batch_data_samples: SampleList
                         ) -> Tuple[dict, Tuple, List[InstanceData]]:
        """Mask2Former losses of a batch of frames, plus the forward outputs and targets.

        Args:
            x (list[Tensor]): Backbone features of B frames.
            batch_data_samples (list[:obj:`DetDataSample`]): B frames with ``gt_instances``.

        Returns:
            tuple[dict, tuple, list[InstanceData]]: The detection losses (final layer and every
            auxiliary layer), the outputs of :meth:`forward` and the per-frame targets
            (``labels`` (G,), ``masks`` (G, H, W) tensor).
        """
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        outputs = self(x, batch_data_samples)
        cls_preds, mask_preds = outputs[:2]
        batch_gt_instances = self.preprocess_gt([s.gt_instances for s in batch_data_samples],
                                                [None] * len(batch_data_samples))
        losses = self.loss_by_feat(cls_preds, mask_preds, batch_gt_instances, batch_img_metas)
        return losses, outputs, batch_gt_instances

    def match_final_layer(self, cls_preds: Tensor, mask_preds: Tensor,
                          batch_gt_instances: InstanceList, batch_img_metas: List[dict]
                          ) -> List[Tensor]:
        """Hungarian-match B frames' final-layer queries to their ground truth.

        The second matching of the official CTVIS, for the contrastive loss: fresh random points
        (drawn for the frames with ground truth only), :meth:`hungarian_match`, or mmdet's
        per-frame matching where :meth:`batched_matching_unsupported`.

        Args:
            cls_preds (Tensor): Class logits (B, Q, C + 1).
            mask_preds (Tensor): Mask logits (B, Q, h, w).
            batch_gt_instances (list[InstanceData]): ``labels`` (G_b,) and ``masks``
                (G_b, H, W) tensors.
            batch_img_metas (list[dict]): Frame meta information.

        Returns:
            list[Tensor]: Per frame the query matched to each ground-truth instance (G_b,),
            -1 for instances left unmatched (more instances than queries).
        """
        cls_preds, mask_preds = cls_preds.detach(), mask_preds.detach()
        with_gt = [b for b, gt in enumerate(batch_gt_instances) if len(gt) > 0]
        if self.batched_matching_unsupported():
            assigned = torch.full(cls_preds.shape[:2], -1, dtype=torch.long,
                                  device=cls_preds.device)
            with torch.no_grad():
                for b in with_gt:
                    sampling = self._get_targets_single(cls_preds[b], mask_preds[b],
                                                        batch_gt_instances[b],
                                                        batch_img_metas[b])[-1]
                    assigned[b, sampling.pos_inds] = sampling.pos_assigned_gt_inds
        else:
            # float32 as mmdet draws them, also under fp16 autocast (AMP on CUDA)
            point_coords = torch.zeros((len(cls_preds), self.num_points, 2),
                                       device=cls_preds.device)
            point_coords[with_gt] = torch.rand((len(with_gt), self.num_points, 2),
                                               device=cls_preds.device)
            assigned = self.hungarian_match(cls_preds, mask_preds, batch_gt_instances,
                                            point_coords)
        query_of_gt = []
        for gt, row in zip(batch_gt_instances, assigned):
            queries = torch.nonzero(row >= 0).squeeze(1)
            matched = row.new_full((len(gt), ), -1)
            matched[row[queries]] = queries
            query_of_gt.append(matched)
        return query_of_gt


class MatchPoints(NamedTuple):
    """The inputs of the match costs of B frames, their ground truth side by side (sum G_b)."""
    cls_scores: Tensor  # class logits (B, Q, C + 1)
    preds: Tensor  # mask logits at the frame's points (B, Q, P)
    gt_labels: Tensor  # (sum G_b,)
    gts: Tensor  # ground-truth masks at their frame's points (sum G_b, P)
    frame_of_gt: Tensor  # the frame of each ground-truth instance (sum G_b,)
    counts: List[int]  # G_b

    def products(self, preds: Tensor, gts: Tensor) -> Tensor:
        """``einsum('nc,mc->nm')`` of each frame's (Q, P) ``preds`` and its (G_b, P) ``gts``,
        side by side (Q, sum G_b). Per frame, as mmdet: the BLAS rounds a product differently
        when the number of columns (or rows) changes, so one batched product would not be
        bit-identical."""
        return torch.cat([torch.einsum('nc,mc->nm', frame_preds, frame_gts)
                          for frame_preds, frame_gts in zip(preds, gts.split(self.counts))],
                         dim=1)


def match_cost_columns(cost: BaseMatchCost, points: MatchPoints) -> Tensor:
    """One configured match cost of B frames, side by side (Q, sum G_b): column j is the cost
    of the queries of ground truth j's frame.

    The same operations in the same order as mmdet's cost class, the element-wise ones run once
    for all frames (exactly rounded, so the values equal mmdet's per-frame ones).

    Args:
        cost (BaseMatchCost): A ``ClassificationCost``, ``CrossEntropyLossCost`` (sigmoid) or
            ``DiceCost``.
        points (MatchPoints): The predictions and ground truth of the frames.
    """
    if type(cost) is ClassificationCost:
        probs = points.cls_scores.softmax(-1)
        return -probs[points.frame_of_gt, :, points.gt_labels].T * cost.weight
    preds, gts = points.preds, points.gts
    if type(cost) is CrossEntropyLossCost:
        present = F.binary_cross_entropy_with_logits(preds, torch.ones_like(preds),
                                                      reduction='none')
        absent = F.binary_cross_entropy_with_logits(preds, torch.zeros_like(preds),
                                                     reduction='none')
        return (points.products(present, gts) + points.products(absent, 1 - gts)
                ) / preds.shape[-1] * cost.weight
    if type(cost) is DiceCost:
        if cost.pred_act:
            preds = preds.sigmoid()
        if cost.naive_dice:
            pred_sums, gt_sums = preds.sum(-1), gts.sum(-1)
        else:
            pred_sums, gt_sums = preds.pow(2).sum(-1), gts.pow(2).sum(-1)
        numerator = 2 * points.products(preds, gts)
        denominator = pred_sums.T[:, points.frame_of_gt] + gt_sums[None, :]
        return (1 - (numerator + cost.eps) / (denominator + cost.eps)) * cost.weight
    raise TypeError(f'no batched version of match cost {type(cost).__name__}')
