"""Convert detectron2 CTVIS / Mask2Former weights to ctvis (mmdet) parameter names.

Sources: the official CTVIS release (state dict under ``model``, ResNet-50 or Swin-L) and the
Mask2Former COCO instance-segmentation weights (``.pkl``, numpy arrays) used to initialise CTVIS
training. Every source key is either mapped or reported; shapes are checked by the caller against
the model it targets (:func:`check_against_model`).
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

Transform = Optional[Callable[[Tensor], Tensor]]


def _swin_reduction_order(weight: Tensor) -> Tensor:
    """Reorder a PatchMerging reduction weight (2C, 4C) from the official unfold order to
    mmdet's."""
    out_channels, in_channels = weight.shape
    weight = weight.reshape(out_channels, 4, in_channels // 4)
    return weight[:, [0, 2, 1, 3], :].transpose(1, 2).reshape(out_channels, in_channels)


def _swin_norm_order(weight: Tensor) -> Tensor:
    """Reorder a PatchMerging norm parameter (4C,) from the official to mmdet's unfold order."""
    weight = weight.reshape(4, weight.shape[0] // 4)
    return weight[[0, 2, 1, 3], :].transpose(0, 1).reshape(-1)


HEAD = r'sem_seg_head\.'
PIXEL = HEAD + r'pixel_decoder\.'
PRED = HEAD + r'predictor\.'
NORM_PARAM = r'(weight|bias|running_mean|running_var)'

# (source regex, target template, optional value transform), first match wins.
RULES: List[Tuple[str, str, Transform]] = [
    # ResNet (detectron2 naming, FrozenBN)
    (r'backbone\.stem\.conv1\.weight', r'backbone.conv1.weight', None),
    (rf'backbone\.stem\.conv1\.norm\.{NORM_PARAM}', r'backbone.bn1.\1', None),
    (r'backbone\.res(\d)\.(\d+)\.conv(\d)\.weight',
     lambda m: f'backbone.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight', None),
    (rf'backbone\.res(\d)\.(\d+)\.conv(\d)\.norm\.{NORM_PARAM}',
     lambda m: f'backbone.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}', None),
    (r'backbone\.res(\d)\.(\d+)\.shortcut\.weight',
     lambda m: f'backbone.layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight', None),
    (rf'backbone\.res(\d)\.(\d+)\.shortcut\.norm\.{NORM_PARAM}',
     lambda m: f'backbone.layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}', None),
    # Swin (official naming)
    (r'backbone\.patch_embed\.proj\.(weight|bias)', r'backbone.patch_embed.projection.\1', None),
    (r'backbone\.patch_embed\.norm\.(weight|bias)', r'backbone.patch_embed.norm.\1', None),
    (r'backbone\.layers\.(\d)\.blocks\.(\d+)\.attn\.(qkv|proj)\.(weight|bias)',
     r'backbone.stages.\1.blocks.\2.attn.w_msa.\3.\4', None),
    (r'backbone\.layers\.(\d)\.blocks\.(\d+)\.attn\.(relative_position_bias_table|'
     r'relative_position_index)', r'backbone.stages.\1.blocks.\2.attn.w_msa.\3', None),
    (r'backbone\.layers\.(\d)\.blocks\.(\d+)\.(norm[12])\.(weight|bias)',
     r'backbone.stages.\1.blocks.\2.\3.\4', None),
    (r'backbone\.layers\.(\d)\.blocks\.(\d+)\.mlp\.fc1\.(weight|bias)',
     r'backbone.stages.\1.blocks.\2.ffn.layers.0.0.\3', None),
    (r'backbone\.layers\.(\d)\.blocks\.(\d+)\.mlp\.fc2\.(weight|bias)',
     r'backbone.stages.\1.blocks.\2.ffn.layers.1.\3', None),
    (r'backbone\.layers\.(\d)\.downsample\.reduction\.weight',
     r'backbone.stages.\1.downsample.reduction.weight', _swin_reduction_order),
    (r'backbone\.layers\.(\d)\.downsample\.norm\.(weight|bias)',
     r'backbone.stages.\1.downsample.norm.\2', _swin_norm_order),
    (r'backbone\.norm(\d)\.(weight|bias)', r'backbone.norm\1.\2', None),
    # MSDeformAttn pixel decoder
    (PIXEL + r'input_proj\.(\d)\.0\.(weight|bias)',
     r'track_head.pixel_decoder.input_convs.\1.conv.\2', None),
    (PIXEL + r'input_proj\.(\d)\.1\.(weight|bias)',
     r'track_head.pixel_decoder.input_convs.\1.gn.\2', None),
    (PIXEL + r'transformer\.level_embed', r'track_head.pixel_decoder.level_encoding.weight', None),
    (PIXEL + r'transformer\.encoder\.layers\.(\d+)\.self_attn\.(\w+)\.(weight|bias)',
     r'track_head.pixel_decoder.encoder.layers.\1.self_attn.\2.\3', None),
    (PIXEL + r'transformer\.encoder\.layers\.(\d+)\.linear1\.(weight|bias)',
     r'track_head.pixel_decoder.encoder.layers.\1.ffn.layers.0.0.\2', None),
    (PIXEL + r'transformer\.encoder\.layers\.(\d+)\.linear2\.(weight|bias)',
     r'track_head.pixel_decoder.encoder.layers.\1.ffn.layers.1.\2', None),
    (PIXEL + r'transformer\.encoder\.layers\.(\d+)\.norm([12])\.(weight|bias)',
     lambda m: f'track_head.pixel_decoder.encoder.layers.{m[1]}.norms.{int(m[2]) - 1}.{m[3]}',
     None),
    (PIXEL + r'mask_features\.(weight|bias)', r'track_head.pixel_decoder.mask_feature.\1', None),
    (PIXEL + r'adapter_1\.weight', r'track_head.pixel_decoder.lateral_convs.0.conv.weight', None),
    (PIXEL + r'adapter_1\.norm\.(weight|bias)', r'track_head.pixel_decoder.lateral_convs.0.gn.\1',
     None),
    (PIXEL + r'layer_1\.weight', r'track_head.pixel_decoder.output_convs.0.conv.weight', None),
    (PIXEL + r'layer_1\.norm\.(weight|bias)', r'track_head.pixel_decoder.output_convs.0.gn.\1',
     None),
    # masked-attention transformer decoder
    (PRED + r'transformer_cross_attention_layers\.(\d+)\.multihead_attn\.(.+)',
     r'track_head.transformer_decoder.layers.\1.cross_attn.attn.\2', None),
    (PRED + r'transformer_cross_attention_layers\.(\d+)\.norm\.(weight|bias)',
     r'track_head.transformer_decoder.layers.\1.norms.0.\2', None),
    (PRED + r'transformer_self_attention_layers\.(\d+)\.self_attn\.(.+)',
     r'track_head.transformer_decoder.layers.\1.self_attn.attn.\2', None),
    (PRED + r'transformer_self_attention_layers\.(\d+)\.norm\.(weight|bias)',
     r'track_head.transformer_decoder.layers.\1.norms.1.\2', None),
    (PRED + r'transformer_ffn_layers\.(\d+)\.linear1\.(weight|bias)',
     r'track_head.transformer_decoder.layers.\1.ffn.layers.0.0.\2', None),
    (PRED + r'transformer_ffn_layers\.(\d+)\.linear2\.(weight|bias)',
     r'track_head.transformer_decoder.layers.\1.ffn.layers.1.\2', None),
    (PRED + r'transformer_ffn_layers\.(\d+)\.norm\.(weight|bias)',
     r'track_head.transformer_decoder.layers.\1.norms.2.\2', None),
    (PRED + r'decoder_norm\.(weight|bias)', r'track_head.transformer_decoder.post_norm.\1', None),
    (PRED + r'(query_feat|query_embed|level_embed)\.weight', r'track_head.\1.weight', None),
    (PRED + r'class_embed\.(weight|bias)', r'track_head.cls_embed.\1', None),
    (PRED + r'(mask_embed|reid_embed)\.layers\.(\d)\.(weight|bias)',
     lambda m: f'track_head.{m[1]}.{2 * int(m[2])}.{m[3]}', None),
]

# Source keys with no counterpart: why they are dropped.
DROPPED = {
    'criterion.empty_weight': 'the no-object class weight is set by loss_cls.class_weight',
}


class Conversion(NamedTuple):
    state_dict: 'OrderedDict[str, Tensor]'
    unmapped: List[str]  # source keys no rule knows
    dropped: Dict[str, str]  # source key -> reason


def to_tensor(value) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f'expected a tensor or numpy array, got {type(value).__name__}')


def convert_state_dict(source: Mapping[str, object]) -> Conversion:
    """Rename a detectron2 CTVIS / Mask2Former state dict to ctvis names.

    BatchNorm layers get a ``num_batches_tracked`` buffer (detectron2's FrozenBN has none) so
    that the result loads with ``strict=True``.

    Raises:
        ValueError: a mapped key's value is neither a tensor nor a numpy array (naming the key).
    """
    compiled = [(re.compile(pattern + '$'), target, fn) for pattern, target, fn in RULES]
    converted: 'OrderedDict[str, Tensor]' = OrderedDict()
    unmapped, dropped = [], {}
    for key, value in source.items():
        if key in DROPPED:
            dropped[key] = DROPPED[key]
            continue
        for pattern, target, fn in compiled:
            match = pattern.match(key)
            if match is None:
                continue
            new_key = target(match) if callable(target) else match.expand(target)
            try:
                tensor = to_tensor(value)
            except TypeError as error:
                raise ValueError(f'{key}: {error}') from None
            converted[new_key] = fn(tensor) if fn else tensor
            if new_key.endswith('.running_var'):
                converted[new_key[:-len('running_var')] + 'num_batches_tracked'] = \
                    torch.tensor(0, dtype=torch.long)
            break
        else:
            unmapped.append(key)
    return Conversion(converted, unmapped, dropped)


def unwrap_d2_checkpoint(checkpoint: Mapping, source: str) -> Mapping[str, object]:
    """The state dict inside a detectron2 checkpoint (``{'model': ...}``) or a bare state dict,
    without the ``module.`` prefix of a model saved inside DistributedDataParallel."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f'{source}: expected a dict checkpoint, got {type(checkpoint).__name__}')
    state = checkpoint.get('model', checkpoint)
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f'{source}: no state dict found (expected a non-empty dict under "model")')
    if all(isinstance(key, str) and key.startswith('module.') for key in state):
        # saved from a DistributedDataParallel wrapper
        state = {key[len('module.'):]: value for key, value in state.items()}
    return state


def check_against_model(state_dict: Mapping[str, Tensor], model: torch.nn.Module
                        ) -> Tuple[List[str], List[str], List[str]]:
    """Compare converted weights with a model.

    Returns:
        tuple[list[str], list[str], list[str]]: Model keys the weights lack, converted keys the
        model lacks, and ``"key: source shape vs model shape"`` lines for shape mismatches.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = [f'{k}: {tuple(v.shape)} vs {tuple(expected[k].shape)}'
                  for k, v in state_dict.items()
                  if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    return missing, unexpected, mismatched
