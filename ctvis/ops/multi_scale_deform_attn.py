"""Multi-scale deformable attention on the CPU: ctvis' fused kernel as a torch custom op.

mmcv ships compiled kernels for CUDA (and MLU) only; on the CPU its
``MultiScaleDeformableAttention`` falls back to ``multi_scale_deformable_attn_pytorch``: one
``grid_sample`` per level over channel-first copies of the value, which materialises a
(bs * heads, channels, queries, levels * points) tensor. ``torch.ops.ctvis.ms_deform_attn``
(ctvis/ops/csrc/ms_deform_attn_cpu.cpp) computes the same result in one pass, parallel over
(batch, query, head), with a backward pass for the value, the sampling locations and the attention
weights. It is registered with a fake (meta) implementation and an autograd formula, so
``torch.compile`` and ``torch.export`` trace it.

For inference, ``torch.ops.ctvis.ms_deform_attn_from_offsets`` takes the layer's raw predictions
(reference points, offsets in pixels, attention logits) and computes the sampling locations and
the softmax inside the kernel's per-task loop: no passes over the (…, levels, points, 2) and
(…, levels * points) tensors, whose short last dimensions make torch's elementwise ops and
softmax slow. It has a fake implementation but no backward: called with inputs that need a
gradient, it raises.

One difference from mmcv's path: a NaN or infinite sampling location contributes nothing (0),
where ``grid_sample`` gives NaN (the kernel rejects it before turning it into an index). Training
stops on non-finite weights anyway (:class:`~ctvis.engine.StopOnNonFiniteWeights`).
"""
import warnings
from typing import Optional

import torch
from torch import Tensor

# Computed in float32 by the kernel (which takes float32 and float64 only).
UPCAST_DTYPES = (torch.float16, torch.bfloat16)

_extension_error: Optional[ImportError] = None
try:
    from . import _C  # noqa: F401  (registers torch.ops.ctvis.ms_deform_attn*)
    if not hasattr(torch.ops.ctvis, 'ms_deform_attn_from_offsets'):
        raise ImportError(f'{_C.__file__} was built from older sources (it has no '
                          'ctvis::ms_deform_attn_from_offsets)')
except ImportError as error:  # not built: ``pip install -e .`` builds it
    _extension_error = error
_warned_fallback = False


def load_extension() -> None:
    """Raise a clear ``ImportError`` when the compiled kernel (``ctvis.ops._C``) is missing."""
    if _extension_error is not None:
        raise ImportError(
            'ctvis.ops._C, the compiled CPU kernel of multi-scale deformable attention '
            '(ctvis/ops/csrc/ms_deform_attn_cpu.cpp), is not built or does not load '
            f'({_extension_error}); rebuild it against the installed torch with '
            '`pip install --no-deps --no-build-isolation -e .` in the repository root') \
            from _extension_error


def extension_available() -> bool:
    """Whether ``torch.ops.ctvis.ms_deform_attn`` is registered."""
    return _extension_error is None


if _extension_error is None:

    @torch.library.register_fake('ctvis::ms_deform_attn')
    def _fake_forward(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                      sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
        bs, _, num_heads, channels = value.shape
        return value.new_empty(bs, sampling_locations.shape[1], num_heads * channels)

    @torch.library.register_fake('ctvis::ms_deform_attn_backward')
    def _fake_backward(grad_output: Tensor, value: Tensor, spatial_shapes: Tensor,
                       level_start_index: Tensor, sampling_locations: Tensor,
                       attention_weights: Tensor) -> tuple:
        return (torch.empty_like(value, memory_format=torch.contiguous_format),
                torch.empty_like(sampling_locations, memory_format=torch.contiguous_format),
                torch.empty_like(attention_weights, memory_format=torch.contiguous_format))

    def _setup_context(ctx, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    def _backward(ctx, grad_output: Tensor) -> tuple:
        value, spatial_shapes, level_start_index, locations, weights = ctx.saved_tensors
        grad_value, grad_locations, grad_weights = torch.ops.ctvis.ms_deform_attn_backward(
            grad_output, value, spatial_shapes, level_start_index, locations, weights)
        return grad_value, None, None, grad_locations, grad_weights

    torch.library.register_autograd('ctvis::ms_deform_attn', _backward,
                                    setup_context=_setup_context)

    def _refuse_double_backward(ctx, inputs: tuple, output: tuple) -> None:
        raise RuntimeError(
            'ctvis::ms_deform_attn has no second derivative: its gradients cannot be '
            'differentiated again (create_graph=True); use mmcv\'s '
            'multi_scale_deformable_attn_pytorch for that')

    def _unreachable_backward(ctx, *grads) -> tuple:
        """The backward of an op whose setup_context refuses gradients (it raises first)."""
        raise AssertionError('unreachable: the setup_context refuses gradients first')

    # differentiating through the backward gave zeros silently (the op had no autograd kernel)
    torch.library.register_autograd('ctvis::ms_deform_attn_backward', _unreachable_backward,
                                    setup_context=_refuse_double_backward)

    @torch.library.register_fake('ctvis::ms_deform_attn_from_offsets')
    def _fake_from_offsets(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                           reference_points: Tensor, offsets: Tensor, logits: Tensor) -> Tensor:
        bs, _, num_heads, channels = value.shape
        return value.new_empty(bs, offsets.shape[1], num_heads * channels)

    def _refuse_gradients(ctx, inputs: tuple, output: Tensor) -> None:
        raise RuntimeError(
            'ctvis::ms_deform_attn_from_offsets is for inference and has no backward, but an '
            'input requires grad: call it under torch.no_grad() / torch.inference_mode(), or '
            'use ms_deform_attn(value, spatial_shapes, level_start_index, reference_points + '
            'offsets / (w, h), logits.softmax(-1)), which has one')

    torch.library.register_autograd('ctvis::ms_deform_attn_from_offsets', _unreachable_backward,
                                    setup_context=_refuse_gradients)


def multi_scale_deformable_attn_cpu(value: Tensor, spatial_shapes: Tensor,
                                    level_start_index: Tensor, sampling_locations: Tensor,
                                    attention_weights: Tensor) -> Tensor:
    """The fused CPU kernel, with mmcv's dtype rules.

    Args:
        value (Tensor): (bs, num_keys, num_heads, channels).
        spatial_shapes (Tensor): (num_levels, 2) int64, (h, w) of each level.
        level_start_index (Tensor): (num_levels,) int64, the first key of each level.
        sampling_locations (Tensor): (bs, num_queries, num_heads, num_levels, num_points, 2),
            (x, y) normalised to [0, 1]; points outside read zeros.
        attention_weights (Tensor): (bs, num_queries, num_heads, num_levels, num_points).

    Returns:
        Tensor: (bs, num_queries, num_heads * channels), in value's dtype. As in mmcv, the
        locations and weights are cast to value's dtype; half and bfloat16 are computed in
        float32.
    """
    load_extension()
    dtype = torch.float32 if value.dtype in UPCAST_DTYPES else value.dtype
    output = torch.ops.ctvis.ms_deform_attn(value.to(dtype), spatial_shapes, level_start_index,
                                            sampling_locations.to(dtype),
                                            attention_weights.to(dtype))
    return output.to(value.dtype)


def ms_deform_attn_from_offsets(value: Tensor, spatial_shapes: Tensor,
                                level_start_index: Tensor, reference_points: Tensor,
                                offsets: Tensor, logits: Tensor) -> Tensor:
    """The fused CPU kernel from the layer's raw predictions, for inference (no backward).

    Equals :func:`multi_scale_deformable_attn_cpu` with sampling locations
    ``reference_points[:, :, None, :, None] + offsets / (w, h)`` of each level and attention
    weights ``logits.softmax(-1)``, both computed inside the kernel.

    Args:
        value (Tensor): (bs, num_keys, num_heads, channels).
        spatial_shapes (Tensor): (num_levels, 2) int64, (h, w) of each level.
        level_start_index (Tensor): (num_levels,) int64, the first key of each level.
        reference_points (Tensor): (bs, num_queries, num_levels, 2), (x, y) in [0, 1].
        offsets (Tensor): (bs, num_queries, num_heads, num_levels, num_points, 2), (x, y) in
            pixels of each level.
        logits (Tensor): (bs, num_queries, num_heads, num_levels * num_points).

    Returns:
        Tensor: (bs, num_queries, num_heads * channels), in value's dtype (half and bfloat16
        computed in float32, the other inputs cast to value's dtype, as in
        :func:`multi_scale_deformable_attn_cpu`).

    Raises:
        RuntimeError: If gradients are enabled and an input requires grad.
    """
    load_extension()
    dtype = torch.float32 if value.dtype in UPCAST_DTYPES else value.dtype
    output = torch.ops.ctvis.ms_deform_attn_from_offsets(
        value.to(dtype), spatial_shapes, level_start_index, reference_points.to(dtype),
        offsets.to(dtype), logits.to(dtype))
    return output.to(value.dtype)


def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Multi-scale deformable attention (shapes as in :func:`multi_scale_deformable_attn_cpu`)
    where mmcv has no compiled op: on the CPU and on devices other than CUDA and MLU.

    Runs the fused kernel for CPU tensors, mmcv's ``multi_scale_deformable_attn_pytorch`` for
    tensors on other devices. Where the kernel is not built, it warns once and runs mmcv's path on
    the CPU too (same result, slower), so that a failed build never changes results.
    """
    if value.device.type == 'cpu':
        if extension_available():
            return multi_scale_deformable_attn_cpu(value, spatial_shapes, level_start_index,
                                                   sampling_locations, attention_weights)
        _warn_fallback_once()
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                               attention_weights)


def _warn_fallback_once() -> None:
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f'ctvis.ops._C is not built ({_extension_error}): multi-scale deformable attention '
            'runs mmcv\'s slower pure-PyTorch path on the CPU; rebuild with '
            '`pip install --no-deps --no-build-isolation -e .`', RuntimeWarning, stacklevel=3)
