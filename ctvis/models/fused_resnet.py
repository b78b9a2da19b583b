"""mmdet's ResNet whose CPU inference folds batch norm into the convolutions and fuses the ReLU and
the residual add into them (``ctvis.ops.onednn.conv2d``).

In inference a ResNet's batch norm is a per-channel affine map, and its ReLU and residual add are
element-wise: three passes over every feature map, about a third of the backbone's time on the CPU
(docs/benchmarks.md). Folded into the convolution's weight and bias, with the ReLU and the add in
oneDNN's epilogue, a block is three convolutions. The folded weights are cached per convolution
and recomputed when any of the tensors they come from changes (a loaded checkpoint, a training
step). Training, and any module this does not cover, computes as mmdet's forward.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils.fusion import fuse_conv_bn_weights

from mmdet.models.backbones import ResNet
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from mmdet.registry import MODELS
from ..ops.onednn import conv2d, uses_onednn

# From this input size on, the fused path runs on channels-last maps and returns channels-last
# features (the pixel decoder's convolutions, group norms and flattening take them without
# copies; converting them back cost 180 ms of a 360x640 R50 frame, profiled): oneDNN's
# convolutions are faster there on large maps, slower on small ones (R50, 2 threads, ms per
# frame channels-last / contiguous: 96x128 44.9 / 23.6, 288x512 125.1 / 126.6, 480x864 298.5 /
# 337.9; the narrow R18 of the quickstart gains at every size).
CHANNELS_LAST_MIN_PIXELS = 288 * 512


def foldable(conv: nn.Module, norm: nn.Module) -> bool:
    """Whether ``norm(conv(x))`` can be folded: a plain zero-padded Conv2d and a batch norm
    with running statistics."""
    return (type(conv) is nn.Conv2d and conv.padding_mode == 'zeros'
            and not isinstance(conv.padding, str) and isinstance(norm, _BatchNorm)
            and norm.running_mean is not None and norm.running_var is not None)


def fold_batch_norm(conv: nn.Conv2d, norm: _BatchNorm) -> Tuple[Tensor, Tensor]:
    """Weight and bias of the convolution that computes ``norm(conv(x))`` in inference (torch's
    ``fuse_conv_bn_weights``, as plain tensors)."""
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean,
                                        norm.running_var, norm.eps, norm.weight, norm.bias)
    return weight.detach(), bias.detach()


def version(tensor: Tensor) -> int:
    """The tensor's in-place update count; 0 for an inference tensor, which has none (it can
    only be changed in place inside ``torch.inference_mode``)."""
    return 0 if tensor.is_inference() else tensor._version


def folded(conv: nn.Conv2d, norm: _BatchNorm,
           memory_format: torch.memory_format = torch.contiguous_format) -> Tuple[Tensor, Tensor]:
    """:func:`fold_batch_norm`, with the weight in ``memory_format`` (oneDNN converts a weight
    to the input's layout on every call otherwise), cached on ``conv`` per format and recomputed
    when a source tensor or ``eps`` changed (in-place updates bump a tensor's version; a new
    tensor has a new address). Inference tensors have no version: :class:`FusedResNet` drops
    its caches when a state dict is loaded into it, the one in-place change they get in
    practice."""
    sources = (conv.weight, conv.bias, norm.weight, norm.bias, norm.running_mean,
               norm.running_var)
    key = tuple(None if t is None else (t.data_ptr(), version(t)) for t in sources) + (norm.eps, )
    cache = conv.__dict__.setdefault('_folded_batch_norm', {})  # not a parameter or buffer
    cached = cache.get(memory_format)
    if cached is None or cached[0] != key:
        weight, bias = fold_batch_norm(conv, norm)
        cached = cache[memory_format] = (key, (weight.contiguous(memory_format=memory_format),
                                               bias))
    return cached[1]


def conv_bn(x: Tensor, conv: nn.Conv2d, norm: _BatchNorm, *, residual: Optional[Tensor] = None,
            relu: bool = False) -> Tensor:
    """``norm(conv(x))`` (+ residual) (ReLU) with the folded convolution, in one pass."""
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    weight, bias = folded(conv, norm,
                          torch.channels_last if channels_last else torch.contiguous_format)
    return conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups,
                  residual=residual, relu=relu)


def conv_norm_pairs(block: nn.Module) -> List[Tuple[nn.Module, nn.Module]]:
    """The (conv, norm) pairs of a residual block's main branch, in order."""
    depth = 3 if isinstance(block, Bottleneck) else 2
    return [(getattr(block, f'conv{i}'), getattr(block, f'norm{i}')) for i in range(1, depth + 1)]


def downsample_parts(block: nn.Module) -> Optional[List[nn.Module]]:
    """The block's downsample branch as [AvgPool2d,] conv, norm; None if it has another form."""
    parts = list(block.downsample) if isinstance(block.downsample, nn.Sequential) else []
    pool = parts[:1] if parts and isinstance(parts[0], nn.AvgPool2d) else []
    rest = parts[len(pool):]
    return pool + rest if len(rest) == 2 and foldable(*rest) else None


def fusable_block(block: nn.Module) -> bool:
    """Whether :class:`FusedResidualBlock` computes this block: no plugins, batch norms after
    plain convolutions (not DCN), a foldable downsample branch or none."""
    return (not getattr(block, 'with_plugins', False)
            and all(foldable(*pair) for pair in conv_norm_pairs(block))
            and (block.downsample is None or downsample_parts(block) is not None))


class FusedResidualBlock:
    """Inference forward shared by :class:`FusedBasicBlock` and :class:`FusedBottleneck`:
    every conv + norm folded, the ReLUs and the residual add fused."""

    def forward(self, x: Tensor) -> Tensor:
        # every parameter: one that needs a gradient (a block frozen in part) takes mmdet's path
        if self.training or not uses_onednn(x, *self.parameters()):
            return super().forward(x)
        identity = x
        if self.downsample is not None:
            *pool, conv, norm = downsample_parts(self)
            identity = conv_bn(pool[0](x) if pool else x, conv, norm)
        pairs = conv_norm_pairs(self)
        out = x
        for conv, norm in pairs[:-1]:
            out = conv_bn(out, conv, norm, relu=True)
        return conv_bn(out, *pairs[-1], residual=identity, relu=True)


class FusedBasicBlock(FusedResidualBlock, BasicBlock):
    """mmdet's ``BasicBlock`` with the fused inference forward."""


class FusedBottleneck(FusedResidualBlock, Bottleneck):
    """mmdet's ``Bottleneck`` with the fused inference forward."""


@MODELS.register_module()
class FusedResNet(ResNet):
    """mmdet's ``ResNet`` (same arguments, parameters, state-dict keys and initialisation) whose
    residual blocks and stem run folded and fused in CPU inference (see the module's docstring).

    Blocks are retyped in place after the parent built them (no new random draws); blocks with
    plugins, DCN or other norms keep mmdet's forward; in training, on other devices, with
    gradients or under ``torch.compile`` the network computes as mmdet's forward (the stem is
    written out here so that ``stem_out`` can return it).

    Args:
        channels_last (bool, optional): On the CPU, run on channels-last maps (and return
            channels-last features): True always, also in training; False never; None (default)
            in the fused inference from :data:`CHANNELS_LAST_MIN_PIXELS` input pixels on.
        stem_out (bool): Also return the stem's stride-2 map (before the max pooling), first.
            With it the pixel decoder can make stride-2 mask features, which small frames need:
            on the toy data's objects (20-36 pixels across) stride-4 masks cap the video mask
            IoU at a median of 0.94, stride 2 at 0.98 (docs/benchmarks.md). Default False.
        *args, **kwargs: mmdet's ``ResNet`` arguments.
    """

    def __init__(self, *args, channels_last: Optional[bool] = None, stem_out: bool = False,
                 **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.channels_last = channels_last
        self.stem_out = stem_out
        fused_types = {BasicBlock: FusedBasicBlock, Bottleneck: FusedBottleneck}
        for block in self.modules():
            fused = fused_types.get(type(block))
            if fused is not None and fusable_block(block):
                block.__class__ = fused
        self._register_load_state_dict_pre_hook(self._drop_folded_weights)

    def _drop_folded_weights(self, *args) -> None:
        """Forget the folded weights: loading copies into the tensors in place, which an
        inference tensor does not count."""
        for module in self.modules():
            module.__dict__.pop('_folded_batch_norm', None)

    def forward(self, x: Tensor) -> tuple:
        fused = (not self.training and not self.deep_stem and foldable(self.conv1, self.norm1)
                 and uses_onednn(x, *self.conv1.parameters(), *self.norm1.parameters()))
        channels_last = self.channels_last
        if channels_last is None:
            channels_last = fused and x.shape[-2] * x.shape[-1] >= CHANNELS_LAST_MIN_PIXELS
        if channels_last and x.device.type == 'cpu':
            x = x.contiguous(memory_format=torch.channels_last)
        if fused:
            x = conv_bn(x, self.conv1, self.norm1, relu=True)
        elif self.deep_stem:
            x = self.stem(x)
        else:
            x = self.relu(self.norm1(self.conv1(x)))
        outs = [x] if self.stem_out else []
        x = self.maxpool(x)
        for i, layer_name in enumerate(self.res_layers):
            x = getattr(self, layer_name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)
