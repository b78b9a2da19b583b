"""Linear layers for CPU inference on oneDNN, with the bias and a ReLU or a residual add fused.

torch's CPU ``linear`` multiplies with MKL, then applies the activation and the residual add as
separate passes over memory. On AMD processors MKL runs its AVX2 code: on this project's EPYC
machines (AVX-512) it reached 140-160 GFLOP/s on 2 threads for the pixel decoder's shapes where
oneDNN, which torch bundles, reached 320-370 GFLOP/s (docs/benchmarks.md).
``torch.ops.mkldnn._linear_pointwise``, the op that torch.compile's CPU backend emits for frozen
linear layers, computes the product on oneDNN with the bias and one post-op (ReLU, or an added
tensor) in the GEMM's epilogue.

That op has no autograd formula and its residual form no fake implementation, so :func:`linear`
uses it only for float32 CPU tensors that need no gradient, outside torch.compile's tracing, with
torch's oneDNN enabled. Otherwise it computes ``F.linear`` and the same element-wise steps: equal
to the fused op up to float rounding, and bit for bit what mmcv's layers compute.

The two summation orders differ in the last bits, and a model can amplify that: Mask2Former's
decoder thresholds its masks into attention masks, so one flipped pixel moves the next layer's
logits by far more than the rounding. To reproduce torch's arithmetic exactly (what the official
code computes, the parity tool's network stages), turn the fused op off with
:func:`onednn_linear_flags` or the environment variable ``CTVIS_ONEDNN_LINEAR=0``
(``torch.backends.mkldnn.flags(enabled=False)`` also does, with oneDNN's convolutions).
"""
import contextlib
import functools
import os
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


_enabled = os.environ.get('CTVIS_ONEDNN_LINEAR', '1') != '0'


@contextlib.contextmanager
def onednn_linear_flags(enabled: bool) -> Iterator[None]:
    """Within the block, :func:`linear` uses oneDNN's fused op (where it can) only if
    ``enabled``; the previous setting returns on exit."""
    global _enabled
    previous, _enabled = _enabled, bool(enabled)
    try:
        yield
    finally:
        _enabled = previous


@functools.lru_cache(maxsize=None)
def onednn_linear_available() -> bool:
    """Whether this torch build has oneDNN's fused linear (checked once, on a tiny product)."""
    if not (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, '_linear_pointwise')):
        return False
    x, weight = torch.ones(2, 3), torch.ones(4, 3)
    try:
        with torch.no_grad():
            out = torch.ops.mkldnn._linear_pointwise(x, weight, None, 'relu', [], '')
    except RuntimeError:
        return False
    return bool((out == 3).all())


def uses_onednn(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> bool:
    """Whether :func:`linear` runs oneDNN's fused op for these tensors."""
    if torch.compiler.is_compiling():  # the compiler fuses by itself
        return False
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (input, weight, bias))
    return (input.device.type == 'cpu' and input.dtype == weight.dtype == torch.float32
            and not needs_grad and _enabled and torch.backends.mkldnn.enabled
            and onednn_linear_available())

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
    if uses_onednn(input, weight, bias):
        if residual is not None and residual.shape == input.shape[:-1] + weight.shape[:1]:
            return torch.ops.mkldnn._linear_pointwise.binary(input, residual, weight, bias, 'add')
        if residual is None:
            return torch.ops.mkldnn._linear_pointwise(input, weight, bias,
                                                      'relu' if relu else 'none', [], '')
    output = F.linear(input, weight, bias)
    if relu:
        return output.relu_()
    return output if residual is None else residual + output
