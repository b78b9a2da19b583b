"""Per-frame Mask2Former head that also returns re-id embeddings for tracking."""
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import caffe2_xavier_init
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.dense_heads import Mask2FormerHead
from mmdet.registry import MODELS
from mmdet.structures import SampleList


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

    Args:
        num_reid_layers (int): Linear layers of the re-id MLP (3 in CTVIS; 0 = identity).
        **kwargs: Arguments of :class:`Mask2FormerHead`.
    """

    def __init__(self, *args, num_reid_layers: int = 3, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.reid_embed = build_mlp(self.decoder_embed_dims, num_reid_layers)

    def init_weights(self) -> None:
        super().init_weights()
        for m in self.reid_embed.modules():
            if isinstance(m, nn.Linear):
                caffe2_xavier_init(m, bias=0)

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
                  stride of the highest-resolution feature (4).
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
        masks resized at every stage. Saves about a tenth of an R50 frame on the CPU.

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
        mask_features, multi_scale_memorys = self.pixel_decoder(x)
        decoder_inputs, decoder_pos = [], []
        for i in range(self.num_transformer_feat_level):
            memory = multi_scale_memorys[i]
            decoder_input = self.decoder_input_projs[i](memory).flatten(2).permute(0, 2, 1)
            decoder_inputs.append(decoder_input + self.level_embed.weight[i].view(1, 1, -1))
            no_padding = memory.new_zeros((batch_size, ) + memory.shape[-2:], dtype=torch.bool)
            decoder_pos.append(
                self.decoder_positional_encoding(no_padding).flatten(2).permute(0, 2, 1))
        attn_sizes = [memory.shape[-2:] for memory in multi_scale_memorys]
        # inference: the mask features at each attention-mask size, for the intermediate stages
        attn_features = None if all_stages else [
            F.interpolate(mask_features, size, mode='bilinear', align_corners=False)
            for size in attn_sizes]
        query_feat = self.query_feat.weight.unsqueeze(0).repeat((batch_size, 1, 1))
        query_embed = self.query_embed.weight.unsqueeze(0).repeat((batch_size, 1, 1))

        cls_pred_list, mask_pred_list = [], []
        attn_mask = None  # from stage 0 on, the mask the next layer attends with
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
            if all_stages or i == num_layers:
                cls_pred_list.append(self.cls_embed(decoder_out))
                mask_pred = torch.einsum('bqc,bchw->bqhw', mask_embed, mask_features)
                mask_pred_list.append(mask_pred)
                if i < num_layers:
                    attn_mask = self._attention_mask(F.interpolate(
                        mask_pred, attn_sizes[level], mode='bilinear', align_corners=False))
            else:
                attn_mask = self._attention_mask(
                    torch.einsum('bqc,bchw->bqhw', mask_embed, attn_features[level]))
        return cls_pred_list, mask_pred_list, self.reid_embed(decoder_out), decoder_out

    def _attention_mask(self, mask_logits: Tensor) -> Tensor:
        """Mask2Former's cross-attention mask from mask logits (B, Q, h, w).

        Returns:
            Tensor: (B * num_heads, Q, h * w) bool, True where a query does not attend (mask
            probability below 0.5); a query whose mask hides everything attends everywhere.
            The same values as mmdet's head, thresholded before the per-head copies and with a
            boolean ``all`` instead of an integer sum, which cost a tenth of a CPU frame.
        """
        hidden = (mask_logits.flatten(2).sigmoid() < 0.5).detach()
        hidden = hidden & ~hidden.all(-1, keepdim=True)
        batch_size, num_queries, num_pixels = hidden.shape
        return hidden[:, None].expand(batch_size, self.num_heads, num_queries,
                                      num_pixels).reshape(-1, num_queries, num_pixels)

    def _get_targets_single(self, cls_score: Tensor, mask_pred: Tensor,
                            gt_instances: InstanceData, img_meta: dict) -> Tuple[Tensor]:
        """mmdet's targets of one frame, with the Hungarian matching costs in float32.

        The official matcher computes its costs with autocast off; under mixed precision the fp16
        mask costs could otherwise tie or reorder and change the matching.

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

    def match_final_layer(self, cls_pred: Tensor, mask_pred: Tensor, gt_instances: InstanceData,
                          img_meta: dict) -> Tensor:
        """Hungarian-match one frame's final-layer queries to its ground-truth instances.

        Args:
            cls_pred (Tensor): Class logits (Q, C + 1).
            mask_pred (Tensor): Mask logits (Q, h, w).
            gt_instances (InstanceData): ``labels`` (G,) and ``masks`` (G, H, W) tensor.
            img_meta (dict): Frame meta information.

        Returns:
            Tensor: The query matched to each ground-truth instance, shape (G,).
        """
        if len(gt_instances) == 0:
            return torch.zeros(0, dtype=torch.long, device=cls_pred.device)
        with torch.no_grad():
            sampling = self._get_targets_single(cls_pred.detach(), mask_pred.detach(),
                                                gt_instances, img_meta)[-1]
        query_of_gt = torch.full((len(gt_instances), ), -1, dtype=torch.long,
                                 device=cls_pred.device)
        query_of_gt[sampling.pos_assigned_gt_inds] = sampling.pos_inds
        return query_of_gt
