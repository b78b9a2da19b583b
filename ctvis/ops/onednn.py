"""Linear layers and convolutions for CPU inference on oneDNN, with their element-wise epilogue
(bias, ReLU, residual add) fused into the product.

torch's CPU ``linear`` multiplies with MKL, then applies the activation and the residual add as
separate passes over memory. On AMD processors MKL runs its AVX2 code: on this project's EPYC
machines (AVX-512) it reached 140-160 GFLOP/s on 2 threads for the pixel decoder's shapes where
oneDNN, which torch bundles, reached 320-370 GFLOP/s (docs/benchmarks.md). torch's convolutions
already run on oneDNN, but batch norm, ReLU and the residual add are again passes of their own.
``torch.ops.mkldnn._linear_pointwise`` and ``_convolution_pointwise``, the ops that
torch.compile's CPU backend emits for frozen models, compute the product on oneDNN with the bias
and the post-ops in its epilogue.

Those ops have no autograd formula and (with a residual) no fake implementation, so :func:`linear`
and :func:`conv2d` use them only for float32 CPU tensors that need no gradient, outside
torch.compile's tracing, with torch's oneDNN enabled. Otherwise they compute torch's ``F.linear``
/ ``F.conv2d`` and the same element-wise steps: equal to the fused ops up to float rounding.

The two summation orders differ in the last bits, and a model can amplify that: Mask2Former's
decoder thresholds its masks into attention masks, so one flipped pixel moves the next layer's
logits by far more than the rounding. To reproduce torch's arithmetic exactly (what the official
code computes, the parity tool's network stages), turn the fused ops off with
:func:`onednn_fusion_flags` or the environment variable ``CTVIS_ONEDNN_FUSION=0``
(``torch.backends.mkldnn.flags(enabled=False)`` also does, with oneDNN's convolutions).
"""
import contextlib
import functools
import os
from typing import Iterator, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

_enabled = os.environ.get('CTVIS_ONEDNN_FUSION', '1') != '0'


@contextlib.contextmanager
def onednn_fusion_flags(enabled: bool) -> Iterator[None]:
    """Within the block, :func:`linear` and :func:`conv2d` use oneDNN's fused ops (where they
    can) only if ``enabled``; the previous setting returns on exit."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


@functools.lru_cache(maxsize=None)
def onednn_fusion_available() -> bool:
    """Whether this torch build has oneDNN's fused ops (checked once, on tiny products)."""
    mkldnn = torch.ops.mkldnn
    if not (torch.backends.mkldnn.is_available() and hasattr(mkldnn, '_linear_pointwise')
            and hasattr(mkldnn, '_convolution_pointwise')):
        return False
    x, weight = torch.ones(2, 3), torch.ones(4, 3)
    image, kernel = torch.ones(1, 3, 2, 2), torch.ones(4, 3, 1, 1)
    conv_args = ([0, 0], [1, 1], [1, 1], 1)
    try:  # every form used here: a torch whose private ops changed takes torch's path
        with torch.no_grad():
            results = (
                (mkldnn._linear_pointwise(x, weight, None, 'relu', [], ''), 3),
                (mkldnn._linear_pointwise.binary(x, torch.ones(2, 4), weight, None, 'add'), 4),
                (mkldnn._convolution_pointwise(image, kernel, None, *conv_args, 'relu', [], ''),
                 3),
                (mkldnn._convolution_pointwise.binary(image, torch.ones(1, 4, 2, 2), kernel, None,
                                                      *conv_args, 'add', None, 'relu', [], ''),
                 4))
    except (RuntimeError, TypeError):
        return False
    return all(bool((result == expected).all()) for result, expected in results)


def needs_grad(*tensors: Optional[Tensor]) -> bool:
    """Whether autograd would record an op on these tensors (``None`` entries ignored)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def uses_onednn(*tensors: Optional[Tensor]) -> bool:
    """Whether :func:`linear` / :func:`conv2d` run oneDNN's fused op for these operands (input
    first, then the parameters)."""
    if torch.compiler.is_compiling():  # the compiler fuses by itself
        return False
    operands = [t for t in tensors if t is not None]
    return (all(t.device.type == 'cpu' and t.dtype == torch.float32 for t in operands)
            and not needs_grad(*operands) and _enabled and torch.backends.mkldnn.enabled
            and onednn_fusion_available())


def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, *,
           relu: bool = False, residual: Optional[Tensor] = None) -> Tensor:
    """``F.linear(input, weight, bias)``, then a ReLU if ``relu``, then ``residual +`` it.

    Args:
        input (Tensor): (..., in_features).
        weight (Tensor): (out_features, in_features).
        bias (Tensor, optional): (out_features,).
        relu (bool): Apply a ReLU to the product (not together with ``residual``).
        residual (Tensor, optional): (..., out_features), added to the product.

    Returns:
        Tensor: (..., out_features), a new tensor.
    """
    if relu and residual is not None:
        raise ValueError('linear fuses a ReLU or a residual add, not both')
    if uses_onednn(input, weight, bias, residual):
        if residual is not None and residual.shape == input.shape[:-1] + weight.shape[:1]:
            return torch.ops.mkldnn._linear_pointwise.binary(input, residual, weight, bias, 'add')
        if residual is None:
            return torch.ops.mkldnn._linear_pointwise(input, weight, bias,
                                                      'relu' if relu else 'none', [], '')
    output = F.linear(input, weight, bias)
    if relu:
        return output.relu_()
    return output if residual is None else residual + output


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor], stride: Sequence[int],
           padding: Sequence[int], dilation: Sequence[int], groups: int = 1, *,
           residual: Optional[Tensor] = None, relu: bool = False) -> Tensor:
    """``F.conv2d`` with zero padding, then ``+ residual``, then a ReLU if ``relu``.

    Args:
        input (Tensor): (bs, in_channels, h, w).
        weight (Tensor): (out_channels, in_channels / groups, kh, kw).
        bias (Tensor, optional): (out_channels,).
        stride, padding, dilation (sequence of 2 ints), groups (int): as ``F.conv2d``.
        residual (Tensor, optional): Added to the convolution, same shape as its output.
        relu (bool): Apply a ReLU last.

    Returns:
        Tensor: (bs, out_channels, h', w'), a new tensor.
    """
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    if uses_onednn(input, weight, bias, residual):
        if residual is None:
            return torch.ops.mkldnn._convolution_pointwise(input, weight, bias, padding, stride,
                                                           dilation, groups,
                                                           'relu' if relu else 'none', [], '')
        size = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(
            input.shape[2:], weight.shape[2:], stride, padding, dilation)]
        if residual.shape == (input.shape[0], weight.shape[0], *size):  # oneDNN: no broadcast
            return torch.ops.mkldnn._convolution_pointwise.binary(
                input, residual, weight, bias, padding, stride, dilation, groups, 'add', None,
                'relu' if relu else None, [], '')
    output = F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    if residual is not None:
        output += residual
    return output.relu_() if relu else output
