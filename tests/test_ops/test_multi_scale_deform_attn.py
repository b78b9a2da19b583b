"""ctvis' fused CPU kernel of multi-scale deformable attention (ctvis/ops) and the pixel decoder
that uses it, against mmcv's pure-PyTorch path (``multi_scale_deformable_attn_pytorch``)."""
import copy
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import FFN
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

import ctvis.ops.multi_scale_deform_attn as msda
from conftest import OpCounter, build_tiny_model, tiny_model_cfg
from ctvis.models import FusedMSDeformAttnPixelDecoder, FusedMultiScaleDeformableAttention
from ctvis.models.pixel_decoder import softmax_last_dim
from ctvis.models.fused_layers import FusedFFN
from ctvis.ops import ms_deform_attn, multi_scale_deformable_attn_cpu
from ctvis.ops.multi_scale_deform_attn import ms_deform_attn_from_offsets
from ctvis.ops import onednn
from ctvis.ops.onednn import onednn_fusion_available
from mmdet.models.backbones import ResNet
from mmdet.models.layers import MSDeformAttnPixelDecoder
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample

OP = 'ctvis::ms_deform_attn'
FUSED_OP = 'ctvis::ms_deform_attn_from_offsets'
ONEDNN_OP = 'mkldnn::_linear_pointwise'


def make_inputs(bs=2, heads=3, channels=5, shapes=((6, 7), (3, 4), (1, 1)), queries=9, points=4,
                spread=(-0.3, 1.3), dtype=torch.float64, seed=0):
    """Random inputs in mmcv's layouts; locations drawn from ``spread`` (outside [0, 1] = outside
    the map), plus, for the first query, points exactly on the borders of the pixel grid."""
    gen = torch.Generator().manual_seed(seed)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    level_start_index = torch.cat([spatial_shapes.new_zeros(1),
                                   spatial_shapes.prod(1).cumsum(0)[:-1]])
    num_keys = int(spatial_shapes.prod(1).sum())
    levels = len(shapes)
    value = torch.randn(bs, num_keys, heads, channels, generator=gen, dtype=dtype)
    low, high = spread
    locations = low + (high - low) * torch.rand(bs, queries, heads, levels, points, 2,
                                                generator=gen, dtype=dtype)
    weights = torch.rand(bs, queries, heads, levels, points, generator=gen, dtype=dtype)
    return value, spatial_shapes, level_start_index, locations, weights


def add_border_points(locations, spatial_shapes):
    """Put query 0's points where the pixel coordinate loc * size - 0.5 is -1, 0, size - 1 and
    size: the first and last pixel centres and the last positions with one neighbour inside."""
    locations = locations.clone()
    for level, (h, w) in enumerate(spatial_shapes.tolist()):
        xs = torch.tensor([-0.5, 0.5, w - 0.5, w + 0.5], dtype=locations.dtype) / w
        ys = torch.tensor([0.5, -0.5, h + 0.5, h - 0.5], dtype=locations.dtype) / h
        points = min(locations.shape[4], 4)
        locations[:, 0, :, level, :points, 0] = xs[:points]
        locations[:, 0, :, level, :points, 1] = ys[:points]
    return locations


def reference(value, spatial_shapes, level_start_index, locations, weights):
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, locations, weights)


CASES = {
    'inside the maps': dict(spread=(0.05, 0.95)),
    'outside the maps': dict(spread=(-0.6, 1.6)),
    'one level of size 1': dict(shapes=((1, 1),), heads=1, points=3),
    'batch, heads, points, 8-wide channels': dict(bs=3, heads=4, channels=8, points=3),
    '33 channels (vector tail)': dict(bs=1, heads=2, channels=33, queries=5),
}


def test_extension_is_built():
    msda.load_extension()  # ImportError naming the missing file and the rebuild command
    assert msda.extension_available()


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('case', list(CASES))
def test_forward_equals_mmcv_pytorch_path(case, dtype):
    value, shapes, starts, locations, weights = make_inputs(dtype=dtype, **CASES[case])
    locations = add_border_points(locations, shapes)
    expected = reference(value, shapes, starts, locations, weights)
    output = multi_scale_deformable_attn_cpu(value, shapes, starts, locations, weights)
    assert output.dtype == dtype and output.shape == expected.shape
    assert expected.abs().max() > 0.1  # the case samples something
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)


def test_non_contiguous_inputs():
    value, shapes, starts, locations, weights = make_inputs(dtype=torch.float32)
    expected = reference(value, shapes, starts, locations, weights)
    value_nc = value.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    locations_nc = torch.stack([locations, locations + 5], -1)[..., 0]
    weights_nc = weights.transpose(1, 2).contiguous().transpose(1, 2)
    starts_nc = torch.stack([starts, starts], 1)[:, 0]
    for t in (value_nc, locations_nc, weights_nc, starts_nc):
        assert not t.is_contiguous()
    output = multi_scale_deformable_attn_cpu(value_nc, shapes, starts_nc, locations_nc,
                                             weights_nc)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize('case', ['outside the maps', 'one level of size 1',
                                  'batch, heads, points, 8-wide channels'])
def test_gradcheck_float64(case):
    kwargs = dict(CASES[case], queries=3, channels=3)
    value, shapes, starts, locations, weights = make_inputs(seed=1, **kwargs)
    inputs = (value.requires_grad_(), shapes, starts, locations.requires_grad_(),
              weights.requires_grad_())
    assert torch.autograd.gradcheck(multi_scale_deformable_attn_cpu, inputs, eps=1e-6,
                                    atol=1e-7)


def test_gradients_equal_mmcv_pytorch_path_float32():
    inputs = make_inputs(bs=2, heads=4, channels=16, queries=40, dtype=torch.float32)
    grad_output = torch.randn(2, 40, 64, generator=torch.Generator().manual_seed(3))
    grads = []
    for fn in (reference, multi_scale_deformable_attn_cpu):
        leaves = [t.clone().requires_grad_() if t.is_floating_point() else t for t in inputs]
        fn(*leaves).backward(grad_output)
        grads.append([leaves[i].grad for i in (0, 3, 4)])
    for ours, theirs in zip(*grads):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_gradients_at_the_map_borders(dtype):
    """At pixel coordinate -1 a point has no value but a gradient (its right or lower neighbour
    is inside with weight 0); at the far side (coordinate = size) it has neither. Power-of-two
    sizes make every border location exact in any rounding."""
    inputs = make_inputs(bs=1, heads=2, channels=4, shapes=((4, 8), (2, 2), (1, 1)), queries=2,
                         dtype=dtype)
    inputs = inputs[:3] + (add_border_points(inputs[3], inputs[1]), inputs[4])
    grads = []
    for fn in (reference, multi_scale_deformable_attn_cpu):
        leaves = [t.clone().requires_grad_() if t.is_floating_point() else t for t in inputs]
        fn(*leaves).sum().backward()
        grads.append(leaves[3].grad[:, 0])  # the border points of query 0
    # the points at -1 have a gradient in the direction that leads into the map
    assert (grads[0][..., 0, 0] != 0).all() and (grads[0][..., 1, 1] != 0).all()
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-5)


def test_result_does_not_depend_on_the_thread_count():
    inputs = [t.requires_grad_() if t.is_floating_point() else t
              for t in make_inputs(bs=2, heads=4, channels=8, queries=64, dtype=torch.float32)]
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            output = multi_scale_deformable_attn_cpu(*inputs)
            grads = torch.autograd.grad(output.square().sum(), [inputs[i] for i in (0, 3, 4)])
            results.append((output, *grads))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


_KERNEL_SCRIPT = textwrap.dedent("""
    import sys, torch
    library, cases_file, out_file = sys.argv[1:]
    torch.ops.load_library(library)
    outputs = []
    for inputs, grad_output in torch.load(cases_file):
        outputs.append((torch.ops.ctvis.ms_deform_attn(*inputs),
                        *torch.ops.ctvis.ms_deform_attn_backward(grad_output, *inputs)))
    torch.save((torch.backends.cpu.get_cpu_capability(), outputs), out_file)
""")


@pytest.mark.parametrize('capability', ['default', 'avx2'])
def test_portable_and_avx2_kernels(capability, tmp_path):
    """The kernel runs its AVX2 + FMA build unless torch's CPU capability is DEFAULT
    (ATEN_CPU_CAPABILITY=default): check both builds, each in its own process."""
    cases = []
    for case in CASES.values():
        inputs = make_inputs(dtype=torch.float32, **case)
        grad_output = torch.randn_like(reference(*inputs))
        cases.append((inputs, grad_output))
    torch.save(cases, tmp_path / 'cases.pt')
    result = subprocess.run(
        [sys.executable, '-c', _KERNEL_SCRIPT, msda._C.__file__, str(tmp_path / 'cases.pt'),
         str(tmp_path / 'outputs.pt')], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, ATEN_CPU_CAPABILITY=capability))
    assert result.returncode == 0, result.stderr
    capability_seen, outputs = torch.load(tmp_path / 'outputs.pt')
    if capability == 'avx2' and capability_seen == 'DEFAULT':
        pytest.skip('this CPU has no AVX2')
    assert capability_seen == capability.upper()
    for (inputs, grad_output), ours in zip(cases, outputs):
        leaves = [t.clone().requires_grad_() if t.is_floating_point() else t for t in inputs]
        output = reference(*leaves)
        expected = (output, *torch.autograd.grad(output, [leaves[i] for i in (0, 3, 4)],
                                                 grad_output))
        for a, b in zip(ours, expected):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_half_and_bfloat16_are_computed_in_float32():
    value, shapes, starts, locations, weights = make_inputs(dtype=torch.float32)
    for dtype in (torch.float16, torch.bfloat16):
        low = value.to(dtype)
        output = multi_scale_deformable_attn_cpu(low, shapes, starts, locations, weights)
        assert output.dtype == dtype
        expected = multi_scale_deformable_attn_cpu(low.float(), shapes, starts, locations,
                                                   weights).to(dtype)
        assert torch.equal(output, expected)


@pytest.mark.parametrize('change, message', [
    (lambda v, s, i, loc, w: (v[:, :-1], s, i, loc, w),
     'spatial_shapes hold 55 keys but value has 54'),
    (lambda v, s, i, loc, w: (v, s, i + 1, loc, w), r'level_start_index\[0\] is 1'),
    (lambda v, s, i, loc, w: (v, s, i, loc, w[..., :-1]), 'attention_weights must be'),
    (lambda v, s, i, loc, w: (v, s, i, loc[:, :, :1], w), 'sampling_locations must be'),
    (lambda v, s, i, loc, w: (v, s.int(), i, loc, w), 'spatial_shapes must be an int64'),
    (lambda v, s, i, loc, w: (v.int(), s, i, loc, w), 'value must be float32 or float64'),
    (lambda v, s, i, loc, w: (v, s * torch.tensor([1, 0]), i, loc, w),
     'level 0 has an empty shape'),
])
def test_bad_inputs_are_clear_errors(change, message):
    inputs = change(*make_inputs(dtype=torch.float32))
    with pytest.raises(RuntimeError, match=message):
        torch.ops.ctvis.ms_deform_attn(*inputs)


@pytest.mark.parametrize('shapes, keys', [([[(1 << 62) + 1, 4]], 4),
                                          ([[1, 1], [1 << 32, 1 << 32]], 1)])
def test_level_shapes_whose_keys_wrap_around_are_refused(shapes, keys):
    """Their keys' 64-bit sum wrapped to value's length, so the count check passed and the
    kernel read far outside value (a segfault)."""
    spatial_shapes = torch.tensor(shapes)
    starts = torch.tensor([0, 1][:len(shapes)])
    locations = torch.full((1, 1, 1, len(shapes), 1, 2), 0.5)
    with pytest.raises(RuntimeError, match=r'level \d \(\d+, \d+\) holds more keys than int64 '
                       r'counts'):
        torch.ops.ctvis.ms_deform_attn(torch.randn(1, keys, 1, 8), spatial_shapes, starts,
                                       locations, torch.ones(1, 1, 1, len(shapes), 1))


def test_no_second_derivative_is_refused_not_zero():
    """Differentiating the op's gradients again gave zeros silently (mmcv's path has them)."""
    value, shapes, starts, locations, weights = make_inputs(dtype=torch.float64)
    value.requires_grad_()
    output = torch.ops.ctvis.ms_deform_attn(value, shapes, starts, locations, weights)
    with pytest.raises(RuntimeError, match='has no second derivative'):
        torch.autograd.grad((output ** 2).sum(), value, create_graph=True)
    grad, = torch.autograd.grad((output ** 2).sum(), value)  # first order is unaffected
    assert grad.abs().sum() > 0


def test_error_messages_spell_out_numbers_shapes_dtypes_and_devices():
    """The op formats its messages itself (no stream formatting, which crashed with some
    toolchains): numbers, shapes, dtypes and devices come out as torch would print them."""
    value, shapes, starts, locations, weights = make_inputs(dtype=torch.float32)
    cases = [
        ((value, shapes, starts, locations, weights[..., :-1]),
         'ctvis::ms_deform_attn: attention_weights must be [2, 9, 3, 3, 4] (sampling_locations '
         'without its last dimension), got [2, 9, 3, 3, 3]'),
        ((value, shapes.int(), starts, locations, weights),
         'ctvis::ms_deform_attn: spatial_shapes must be an int64 (num_levels, 2) tensor, '
         'got Int[3, 2]'),
        ((value, shapes, starts, locations.double(), weights),
         "ctvis::ms_deform_attn: sampling_locations must have value's dtype Float, got Double"),
        ((value, shapes, starts, locations, weights.to('meta')),
         'ctvis::ms_deform_attn: expects CPU tensors, got attention_weights on meta'),
        ((value, shapes, starts - 1, locations, weights),
         'ctvis::ms_deform_attn: level_start_index[0] is -1 but the levels before it hold 0 keys'),
    ]
    for inputs, expected in cases:
        with pytest.raises(RuntimeError) as error:
            torch.ops.ctvis.ms_deform_attn.default.redispatch(
                torch._C.DispatchKeySet(torch._C.DispatchKey.CPU), *inputs)
        assert str(error.value).splitlines()[0] == expected


def test_op_sources_check_inputs_through_their_own_message_formatting():
    csrc = Path(msda.__file__).parent / 'csrc'
    for source in csrc.glob('*.cpp'):
        calls = [line for line in source.read_text().splitlines() if 'TORCH_CHECK(' in line]
        assert all('#define CTVIS_CHECK' in line for line in calls), (source.name, calls)


def test_opcheck_fake_and_autograd_registrations():
    inputs = [t.requires_grad_() if t.is_floating_point() else t
              for t in make_inputs(bs=1, heads=2, channels=4, queries=4, points=2)]
    torch.library.opcheck(torch.ops.ctvis.ms_deform_attn.default, inputs)


def test_compile_and_export_trace_the_op():
    inputs = make_inputs(bs=1, heads=2, channels=4, queries=6, dtype=torch.float32)
    value, shapes, starts, locations, weights = inputs

    class Attention(torch.nn.Module):
        def forward(self, value, locations, weights):
            return ms_deform_attn(value * 2, shapes, starts, locations, weights.softmax(-1))

    module = Attention()
    expected = module(value, locations, weights)
    compiled = torch.compile(module, backend='aot_eager', fullgraph=True)
    torch.testing.assert_close(compiled(value, locations, weights), expected)
    leaf = value.clone().requires_grad_()
    compiled(leaf, locations, weights).sum().backward()
    reference_leaf = value.clone().requires_grad_()
    module(reference_leaf, locations, weights).sum().backward()
    torch.testing.assert_close(leaf.grad, reference_leaf.grad)
    exported = torch.export.export(module, (value, locations, weights))
    targets = [str(node.target) for node in exported.graph.nodes]
    assert 'ctvis.ms_deform_attn.default' in targets
    torch.testing.assert_close(exported.module()(value, locations, weights), expected)


def test_missing_extension_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(msda, '_extension_error', ImportError('no _C here'))
    monkeypatch.setattr(msda, '_warned_fallback', False)
    assert not msda.extension_available()
    with pytest.raises(ImportError, match=r'no _C here.*pip install --no-deps'):
        msda.load_extension()
    inputs = make_inputs(dtype=torch.float32)
    with pytest.warns(RuntimeWarning, match='slower pure-PyTorch path') as record:
        with OpCounter() as counter:
            output = ms_deform_attn(*inputs)
            ms_deform_attn(*inputs)
    assert len(record) == 1
    assert counter.calls[OP] == 0 and counter.calls['aten::grid_sampler_2d'] > 0
    torch.testing.assert_close(output, reference(*inputs), atol=0, rtol=0)


def test_other_devices_take_mmcv_pytorch_path():
    """Where mmcv has no compiled op and the kernel does not run (here: the meta device)."""
    value, shapes, starts, locations, weights = make_inputs(dtype=torch.float32)
    with OpCounter() as counter:
        output = ms_deform_attn(value.to('meta'), shapes, starts, locations.to('meta'),
                                weights.to('meta'))
    assert output.device.type == 'meta' and output.shape == (2, 9, 15)
    assert counter.calls[OP] == 0 and counter.calls['aten::grid_sampler_2d'] == 3


def pixel_decoder_cfg(type_: str, num_layers: int = 2) -> dict:
    cfg = copy.deepcopy(tiny_model_cfg().track_head.pixel_decoder)
    cfg.update(type=type_, in_channels=[16, 32, 64, 128], strides=[4, 8, 16, 32],
               feat_channels=32, out_channels=32)
    cfg.encoder.num_layers = num_layers
    return cfg


def build_decoder(type_: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    decoder = MODELS.build(pixel_decoder_cfg(type_))
    decoder.init_weights()
    return decoder.eval()


def test_base_config_uses_the_fused_pixel_decoder():
    assert tiny_model_cfg().track_head.pixel_decoder.type == 'FusedMSDeformAttnPixelDecoder'


def test_pixel_decoder_has_mmdets_parameters_and_initialisation():
    ours, mmdet = build_decoder('FusedMSDeformAttnPixelDecoder'), build_decoder(
        'MSDeformAttnPixelDecoder')
    assert type(ours) is FusedMSDeformAttnPixelDecoder and type(mmdet) is MSDeformAttnPixelDecoder
    assert all(type(layer.self_attn) is FusedMultiScaleDeformableAttention
               for layer in ours.encoder.layers)
    state, expected = ours.state_dict(), mmdet.state_dict()
    assert list(state) == list(expected)
    for key in expected:  # same random draws: the retyping consumed none
        assert torch.equal(state[key], expected[key]), key
    # and a checkpoint of mmdet's decoder loads strictly
    ours.load_state_dict(expected, strict=True)


@torch.no_grad()
def test_pixel_decoder_runs_the_kernel_on_cpu_with_mmdets_result():
    ours, mmdet = build_decoder('FusedMSDeformAttnPixelDecoder'), build_decoder(
        'MSDeformAttnPixelDecoder')
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(2, c, 64 // s, 96 // s, generator=gen)
             for c, s in zip([16, 32, 64, 128], [4, 8, 16, 32])]
    assert onednn_fusion_available()  # probed once, before counting
    with OpCounter() as counter:
        mask_feature, multi_scale = ours(feats)
    # inference: the fused op (locations and softmax in the kernel), once per encoder layer, and
    # the layer's six products on oneDNN (value, offsets, logits, output + identity, FFN)
    assert counter.calls[FUSED_OP] == 2 and counter.calls['aten::grid_sampler_2d'] == 0
    assert counter.calls[ONEDNN_OP] == 12 and counter.calls['aten::addmm'] == 0
    with OpCounter() as counter:
        expected_mask, expected_multi = mmdet(feats)
    assert counter.calls[OP] == 0 and counter.calls['aten::grid_sampler_2d'] > 0
    torch.testing.assert_close(mask_feature, expected_mask, atol=1e-5, rtol=1e-5)
    for a, b in zip(multi_scale, expected_multi):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize('batch, size', [(1, (64, 96)), (2, (72, 40)), (1, (36, 68))])
def test_pixel_decoder_forward_is_mmdets_bit_for_bit(batch, size):
    """ctvis' own forward (traceable, no padding mask) on the same modules as mmdet's forward;
    sizes not divisible by 32 give odd level shapes."""
    decoder = build_decoder('FusedMSDeformAttnPixelDecoder', seed=2)
    gen = torch.Generator().manual_seed(3)
    feats = [torch.randn(batch, c, -(-size[0] // s), -(-size[1] // s), generator=gen)
             for c, s in zip([16, 32, 64, 128], [4, 8, 16, 32])]
    mask_feature, multi_scale = decoder(feats)
    expected_mask, expected_multi = MSDeformAttnPixelDecoder.forward(decoder, feats)
    assert torch.equal(mask_feature, expected_mask)
    assert len(multi_scale) == len(expected_multi) == 3
    for level, expected in zip(multi_scale, expected_multi):
        assert torch.equal(level, expected)


def test_pixel_decoder_with_two_levels_below_the_encoder_keeps_each_levels_convolutions():
    """A stride-2 level under the stride-4 one (FusedResNet's stem_out): each FPN convolution
    takes its own level's channels, the mask features come at stride 2 and every level trains;
    mmdet's decoder hands the levels each other's convolutions."""
    channels, strides = [8, 16, 32, 64, 128], [2, 4, 8, 16, 32]
    cfg = pixel_decoder_cfg('FusedMSDeformAttnPixelDecoder')
    cfg.update(in_channels=channels, strides=strides)
    torch.manual_seed(0)
    decoder = MODELS.build(cfg)
    decoder.init_weights()
    assert [conv.conv.in_channels for conv in decoder.lateral_convs] == channels[:2]
    feats = [torch.randn(1, c, 64 // s, 96 // s, requires_grad=True)
             for c, s in zip(channels, strides)]
    mask_feature, multi_scale = decoder.train()(feats)
    assert mask_feature.shape == (1, 32, 32, 48)
    assert [tuple(level.shape[-2:]) for level in multi_scale] == [(2, 3), (4, 6), (8, 12)]
    (mask_feature.square().mean() + sum(level.mean() for level in multi_scale)).backward()
    assert all(feat.grad is not None and feat.grad.abs().sum() > 0 for feat in feats)
    with torch.no_grad():
        inference_mask, _ = decoder.eval()(feats)
    torch.testing.assert_close(inference_mask, mask_feature.detach(), atol=1e-5, rtol=1e-5)
    cfg.type = 'MSDeformAttnPixelDecoder'
    with pytest.raises(RuntimeError):
        MODELS.build(cfg)(feats)


@pytest.mark.parametrize('finest_output_conv', ['separable', None])
def test_pixel_decoder_finest_output_conv(finest_output_conv):
    """The stride-2 level's output convolution as a depthwise 3x3 then a pointwise 1x1 one,
    or none (the lateral projection plus the upsampled stride-4 level straight into the mask
    projection); the other levels keep mmdet's 3x3 convolution and every other parameter."""
    channels, strides = [8, 16, 32, 64, 128], [2, 4, 8, 16, 32]
    cfg = pixel_decoder_cfg('FusedMSDeformAttnPixelDecoder')
    cfg.update(in_channels=channels, strides=strides)
    dense = MODELS.build(cfg).state_dict()
    torch.manual_seed(0)
    decoder = MODELS.build(dict(cfg, finest_output_conv=finest_output_conv))
    decoder.init_weights()
    state = decoder.state_dict()
    replaced = ['output_convs.0.conv.weight']
    if finest_output_conv is None:
        replaced += ['output_convs.0.gn.weight', 'output_convs.0.gn.bias']
    assert [key for key in dense if key not in state] == replaced
    assert all(state[key].shape == dense[key].shape for key in dense if key in state)
    assert type(decoder.output_convs[1].conv) is torch.nn.Conv2d
    decoder.train()
    feats = [torch.randn(2, c, 64 // s, 96 // s, requires_grad=True)
             for c, s in zip(channels, strides)]
    mask_feature, multi_scale = decoder(feats)
    stride_4 = decoder.output_convs[1](decoder.lateral_convs[1](feats[1]) + F.interpolate(
        multi_scale[-1], size=(16, 24), mode='bilinear', align_corners=False))
    stride_2 = decoder.lateral_convs[0](feats[0]) + F.interpolate(
        stride_4, size=(32, 48), mode='bilinear', align_corners=False)
    if finest_output_conv == 'separable':
        depthwise, pointwise = decoder.output_convs[0].conv
        assert depthwise.weight.shape == (32, 1, 3, 3) and pointwise.weight.shape == (32, 32, 1, 1)
        stride_2 = F.relu(decoder.output_convs[0].gn(
            F.conv2d(F.conv2d(stride_2, depthwise.weight, padding=1, groups=32),
                     pointwise.weight)))
    torch.testing.assert_close(mask_feature, decoder.mask_feature(stride_2), atol=1e-6,
                               rtol=1e-5)
    mask_feature.square().mean().backward()
    assert feats[0].grad.abs().sum() > 0
    with torch.no_grad():
        inference_mask, _ = decoder.eval()(feats)
    torch.testing.assert_close(inference_mask, mask_feature.detach(), atol=1e-5, rtol=1e-5)


def test_pixel_decoder_refuses_an_unknown_finest_output_conv():
    with pytest.raises(ValueError, match="'dense', 'separable' or None, got 'none'"):
        MODELS.build(dict(pixel_decoder_cfg('FusedMSDeformAttnPixelDecoder'),
                          finest_output_conv='none'))


def test_encoder_ffns_are_retyped_and_train_as_mmcvs():
    decoder = build_decoder('FusedMSDeformAttnPixelDecoder')
    assert all(type(layer.ffn) is FusedFFN for layer in decoder.encoder.layers)
    ffn = copy.deepcopy(decoder.encoder.layers[0].ffn).train()
    ffn.layers[0][2].p = 0.5  # dropout drawn in training: the same mask as mmcv's forward
    x = torch.randn(2, 9, 32, requires_grad=True)
    torch.manual_seed(5)
    output = ffn(x)
    torch.manual_seed(5)
    expected = FFN.forward(ffn, x)
    assert torch.equal(output, expected) and output.grad_fn is not None
    ffn.eval()
    with torch.no_grad(), OpCounter() as counter:
        output = ffn(x, identity=x * 2)
    assert counter.calls[ONEDNN_OP] == 2
    torch.testing.assert_close(output, FFN.forward(ffn, x, identity=x * 2), atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize('ffn_cfg', [dict(act_cfg=dict(type='GELU')), dict(num_fcs=3)])
def test_other_encoder_ffns_keep_mmcvs_forward(ffn_cfg):
    cfg = pixel_decoder_cfg('FusedMSDeformAttnPixelDecoder')
    for key, value in ffn_cfg.items():
        cfg.encoder.layer_cfg.ffn_cfg[key] = value
    torch.manual_seed(0)
    decoder = MODELS.build(cfg).eval()
    assert all(type(layer.ffn) is FFN for layer in decoder.encoder.layers)
    gen = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, c, 64 // s, 96 // s, generator=gen)
             for c, s in zip([16, 32, 64, 128], [4, 8, 16, 32])]
    mask_feature, _ = decoder(feats)
    with torch.backends.mkldnn.flags(enabled=False):
        expected, _ = MSDeformAttnPixelDecoder.forward(decoder, feats)
    torch.testing.assert_close(mask_feature, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_pixel_decoder_runs_in_float32_under_autocast():
    """The official decoder disables autocast: mixed precision leaves it in float32."""
    decoder = build_decoder('FusedMSDeformAttnPixelDecoder')
    gen = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, c, 64 // s, 96 // s, generator=gen)
             for c, s in zip([16, 32, 64, 128], [4, 8, 16, 32])]
    expected_mask, expected_multi = decoder(feats)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        mask_feature, multi_scale = decoder([feat.bfloat16() for feat in feats])
    assert mask_feature.dtype == torch.float32
    assert all(level.dtype == torch.float32 for level in multi_scale)
    # only the bfloat16 rounding of the inputs remains
    torch.testing.assert_close(mask_feature, expected_mask, atol=0.05, rtol=0.05)
    for level, expected in zip(multi_scale, expected_multi):
        torch.testing.assert_close(level, expected, atol=0.05, rtol=0.05)


@pytest.mark.parametrize('shape', [(2, 5, 4, 12), (3, 1), (4, 17), (0, 12)])
def test_softmax_last_dim_equals_torchs_on_another_dimension(shape):
    """The training path's attention weights: a softmax over the last dimension, computed over
    dimension -2 of an unsqueezed view on the CPU (torch's is slow over short last dimensions)."""
    logits = (torch.randn(shape) * 5).requires_grad_()
    grad = torch.randn(shape)
    with OpCounter(keep=['aten::_softmax']) as counter:
        weights = softmax_last_dim(logits)
    (func, args), = counter.inputs
    assert args[1] in (-2, len(shape) - 1)  # not the last dimension of its input
    torch.testing.assert_close(weights, logits.softmax(-1), atol=1e-6, rtol=1e-5)
    assert weights.is_contiguous()
    (expected_grad, ) = torch.autograd.grad(logits.softmax(-1), logits, grad)
    (actual_grad, ) = torch.autograd.grad(weights, logits, grad)
    torch.testing.assert_close(actual_grad, expected_grad, atol=1e-6, rtol=1e-5)


def test_attention_with_boxes_and_sequence_first_layout():
    torch.manual_seed(0)
    attention = FusedMultiScaleDeformableAttention(embed_dims=16, num_heads=2, num_levels=2,
                                                   num_points=3, batch_first=False).eval()
    torch.nn.init.normal_(attention.sampling_offsets.weight, std=0.5)
    torch.nn.init.normal_(attention.attention_weights.weight)
    shapes = torch.tensor([[4, 5], [2, 3]])
    starts = torch.tensor([0, 20])
    query = torch.randn(26, 2, 16)  # (num_queries, bs, embed_dims): every key is a query
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # mmcv's own deprecation notices
        for last in (2, 4):
            boxes = torch.rand(2, 26, 2, last)
            kwargs = dict(query=query, reference_points=boxes, spatial_shapes=shapes,
                          level_start_index=starts)
            with OpCounter() as counter:
                output = attention(**kwargs)
            expected = super(FusedMultiScaleDeformableAttention, attention).forward(**kwargs)
            assert counter.calls[OP] == 1
            torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
            with torch.no_grad(), OpCounter() as counter:  # inference: products on oneDNN
                output = attention(**kwargs)
            assert counter.calls[ONEDNN_OP] == 4
            torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='must end in 2'):
        attention(query=query, reference_points=torch.rand(2, 26, 2, 3), spatial_shapes=shapes,
                  level_start_index=starts)


# ------------------------------------------ the fused inference op (ms_deform_attn_from_offsets)
def make_offset_inputs(dtype=torch.float64, **case):
    """The inputs of ``ms_deform_attn_from_offsets`` drawn as ``make_inputs`` draws its
    locations (same spread, points outside the maps included): reference points per level,
    offsets in pixels of each level around them, logits of varied scale."""
    value, shapes, starts, locations, weights = make_inputs(dtype=dtype, **case)
    reference_points = locations[:, :, 0, :, 0].clone()  # (bs, queries, levels, 2)
    level_wh = shapes.flip(-1)[:, None].to(dtype)  # (levels, 1, 2): (w, h)
    offsets = (locations - reference_points[:, :, None, :, None]) * level_wh
    logits = (8 * weights - 4).flatten(3)  # (bs, queries, heads, levels * points)
    return value, shapes, starts, reference_points, offsets, logits


def composite(value, shapes, starts, reference_points, offsets, logits):
    """What the fused op computes, in torch ops then the kernel: the module's path in training."""
    locations = reference_points[:, :, None, :, None] + offsets / shapes.flip(-1)[:, None]
    weights = logits.softmax(-1).view(offsets.shape[:-1])
    return multi_scale_deformable_attn_cpu(value, shapes, starts, locations, weights)


FUSED_ATOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('case', list(CASES))
def test_fused_op_equals_locations_and_softmax_then_kernel(case, dtype):
    inputs = make_offset_inputs(dtype=dtype, **CASES[case])
    expected = composite(*inputs)
    output = ms_deform_attn_from_offsets(*inputs)
    assert output.dtype == dtype and output.shape == expected.shape
    assert expected.abs().max() > 0.1  # the case samples something
    torch.testing.assert_close(output, expected, atol=FUSED_ATOL[dtype], rtol=0)


@pytest.mark.parametrize('levels, points', [(0, 2), (2, 0)])
def test_fused_op_without_samples_attends_to_nothing(levels, points):
    """Softmax over no sample read logit[0] of an empty row (a segfault); the op with
    sampling locations already returned zeros there."""
    value = torch.randn(1, 12, 2, 4) if levels else torch.randn(1, 0, 2, 4)
    shapes = torch.tensor([[3, 2], [2, 3]])[:levels]
    starts = torch.tensor([0, 6])[:levels]
    reference = torch.rand(1, 3, levels, 2)
    offsets = torch.zeros(1, 3, 2, levels, points, 2)
    logits = torch.zeros(1, 3, 2, levels * points)
    output = ms_deform_attn_from_offsets(value, shapes, starts, reference, offsets, logits)
    assert output.shape == (1, 3, 8) and torch.equal(output, torch.zeros(1, 3, 8))


def test_fused_op_non_contiguous_inputs():
    value, shapes, starts, points, offsets, logits = make_offset_inputs(dtype=torch.float32)
    expected = composite(value, shapes, starts, points, offsets, logits)
    value_nc = value.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    points_nc = points.transpose(0, 1).contiguous().transpose(0, 1)
    offsets_nc = torch.stack([offsets, offsets + 5], -1)[..., 0]
    logits_nc = logits.transpose(1, 2).contiguous().transpose(1, 2)
    for t in (value_nc, points_nc, offsets_nc, logits_nc):
        assert not t.is_contiguous()
    output = ms_deform_attn_from_offsets(value_nc, shapes, starts, points_nc, offsets_nc,
                                         logits_nc)
    torch.testing.assert_close(output, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_fused_op_softmax_of_extreme_logits(dtype):
    """Logits of +-1e4 overflow exp() unless the row maximum is subtracted first (as torch's
    softmax does): one head has a +1e4 logit, another only -1e4 ones."""
    value, shapes, starts, points, offsets, logits = make_offset_inputs(
        dtype=dtype, spread=(0.05, 0.95))
    logits[:, :, 0, 1] = 1e4
    logits[:, :, 1] = -1e4
    logits[:, :, 1, 2] = -1e4 + 1
    output = ms_deform_attn_from_offsets(value, shapes, starts, points, offsets, logits)
    assert torch.isfinite(output).all()
    torch.testing.assert_close(output, composite(value, shapes, starts, points, offsets, logits),
                               atol=FUSED_ATOL[dtype], rtol=0)


_FUSED_KERNEL_SCRIPT = textwrap.dedent("""
    import sys, torch
    library, cases_file, out_file = sys.argv[1:]
    torch.ops.load_library(library)
    outputs = []
    for value, shapes, starts, points, offsets, logits in torch.load(cases_file):
        locations = points[:, :, None, :, None] + offsets / shapes.flip(-1)[:, None]
        weights = logits.softmax(-1).view(offsets.shape[:-1])
        outputs.append((
            torch.ops.ctvis.ms_deform_attn_from_offsets(value, shapes, starts, points, offsets,
                                                        logits),
            torch.ops.ctvis.ms_deform_attn(value, shapes, starts, locations, weights)))
    torch.save((torch.backends.cpu.get_cpu_capability(), outputs), out_file)
""")


@pytest.mark.parametrize('capability', ['default', 'avx2'])
def test_fused_op_portable_and_avx2_kernels(capability, tmp_path):
    """Both builds of the fused op (see test_portable_and_avx2_kernels), each against the
    composite computation in the same build."""
    cases = [make_offset_inputs(dtype=torch.float32, **case) for case in CASES.values()]
    torch.save(cases, tmp_path / 'cases.pt')
    result = subprocess.run(
        [sys.executable, '-c', _FUSED_KERNEL_SCRIPT, msda._C.__file__,
         str(tmp_path / 'cases.pt'), str(tmp_path / 'outputs.pt')], capture_output=True,
        text=True, timeout=120, env=dict(os.environ, ATEN_CPU_CAPABILITY=capability))
    assert result.returncode == 0, result.stderr
    capability_seen, outputs = torch.load(tmp_path / 'outputs.pt')
    if capability == 'avx2' and capability_seen == 'DEFAULT':
        pytest.skip('this CPU has no AVX2')
    assert capability_seen == capability.upper()
    for fused, expected in outputs:
        assert expected.abs().max() > 0.1
        torch.testing.assert_close(fused, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize('change, message', [
    (lambda v, s, i, r, o, g: (v, s, i, r, o[:, :, :1], g), 'offsets must be'),
    (lambda v, s, i, r, o, g: (v, s, i, r[:, :, :-1], o, g), 'reference_points must be'),
    (lambda v, s, i, r, o, g: (v, s, i, r[:, :-1], o, g), 'reference_points must be'),
    (lambda v, s, i, r, o, g: (v, s, i, r, o, g[..., :-1]),
     r'logits must be \(2, 9, 3, 12\)'),
    (lambda v, s, i, r, o, g: (v, s, i, r, o, g.double()), 'logits must have value.s dtype'),
    (lambda v, s, i, r, o, g: (v[:, :-1], s, i, r, o, g),
     'spatial_shapes hold 55 keys but value has 54'),
])
def test_fused_op_bad_inputs_are_clear_errors(change, message):
    inputs = change(*make_offset_inputs(dtype=torch.float32))
    with pytest.raises(RuntimeError, match='ms_deform_attn_from_offsets: ' + message):
        torch.ops.ctvis.ms_deform_attn_from_offsets(*inputs)


def test_fused_op_refuses_inputs_that_need_gradients():
    inputs = make_offset_inputs(dtype=torch.float32)
    offsets = inputs[4].clone().requires_grad_()
    args = (*inputs[:4], offsets, inputs[5])
    with pytest.raises(RuntimeError, match='for inference and has no backward'):
        ms_deform_attn_from_offsets(*args)
    with torch.no_grad():  # no graph is recorded: fine
        output = ms_deform_attn_from_offsets(*args)
    assert not output.requires_grad


def test_fused_op_opcheck_fake_registration():
    inputs = make_offset_inputs(bs=1, heads=2, channels=4, queries=4, points=2)
    torch.library.opcheck(torch.ops.ctvis.ms_deform_attn_from_offsets.default, inputs)


def attention_inputs(num_queries: int = 26):
    torch.manual_seed(0)
    attention = FusedMultiScaleDeformableAttention(embed_dims=16, num_heads=2, num_levels=2,
                                                   num_points=3, batch_first=True).eval()
    torch.nn.init.normal_(attention.sampling_offsets.weight, std=0.5)
    torch.nn.init.normal_(attention.attention_weights.weight, std=2)
    kwargs = dict(query=torch.randn(2, num_queries, 16),
                  reference_points=torch.rand(2, num_queries, 2, 2),
                  spatial_shapes=torch.tensor([[4, 5], [2, 3]]),
                  level_start_index=torch.tensor([0, 20]))
    return attention, kwargs


def test_attention_fused_in_inference_composite_with_gradients():
    """Eval mode without gradients runs the fused op; with gradients enabled (training, or eval
    outside no_grad) the locations and softmax are torch ops and the kernel has a backward.
    Inputs that require grad (here the reference points) need none without gradients."""
    attention, kwargs = attention_inputs()
    kwargs['reference_points'].requires_grad_()
    with OpCounter() as counter:
        output = attention(**kwargs)
    assert counter.calls[OP] == 1 and counter.calls[FUSED_OP] == 0
    output.sum().backward()
    assert attention.sampling_offsets.weight.grad.abs().sum() > 0
    assert kwargs['reference_points'].grad.abs().sum() > 0
    for no_grad in (torch.no_grad, torch.inference_mode):
        with OpCounter() as counter, no_grad():
            fused = attention(**kwargs)
        assert counter.calls[FUSED_OP] == 1 and counter.calls[OP] == 0
        torch.testing.assert_close(fused, output.detach(), atol=1e-5, rtol=0)


@torch.no_grad()
def test_attention_boxes_in_inference_take_the_composite_path():
    """The fused op takes reference points (x, y) only: boxes (cx, cy, w, h) keep the torch ops
    also without gradients, with the parent's result."""
    attention, kwargs = attention_inputs()
    kwargs['reference_points'] = torch.rand(2, 26, 2, 4)
    with OpCounter() as counter:
        output = attention(**kwargs)
    assert counter.calls[OP] == 1 and counter.calls[FUSED_OP] == 0
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')  # mmcv's own deprecation notices
        expected = super(FusedMultiScaleDeformableAttention, attention).forward(**kwargs)
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_attention_fused_path_compiles_in_one_graph():
    attention, kwargs = attention_inputs()
    expected = attention(**kwargs)
    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    output = torch.compile(attention, backend=record, fullgraph=True)(**kwargs)
    assert len(graphs) == 1
    assert any('ms_deform_attn_from_offsets' in str(node.target)
               for node in graphs[0].graph.nodes)
    torch.testing.assert_close(output, expected, atol=0, rtol=0)
    compiled = torch.compile(attention, backend='aot_eager', fullgraph=True)
    torch.testing.assert_close(compiled(**kwargs), expected, atol=1e-6, rtol=0)


# ------------------------------------------------- the side-by-side benchmark (the kernel's use)
@torch.no_grad()
def test_benchmark_mask2former_is_the_same_detector(benchmark):
    """The side-by-side Mask2Former has CTVIS' detector weights and mmdet's own pixel decoder,
    so its class and mask predictions equal CTVIS' (to the kernel's rounding)."""
    model = build_tiny_model().eval()
    mask2former = benchmark.build_mask2former(tiny_model_cfg(), model)
    assert type(mask2former.panoptic_head.pixel_decoder) is MSDeformAttnPixelDecoder
    assert type(mask2former.backbone) is ResNet  # mmdet's, not the fused one
    frames = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    logits, mask_logits, _ = model.detect(frames)
    samples = [DetDataSample(metainfo=dict(batch_input_shape=(64, 96), img_shape=(64, 96)))] * 2
    cls_preds, mask_preds = mask2former.panoptic_head(mask2former.extract_feat(frames), samples)
    torch.testing.assert_close(cls_preds[-1], logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mask_preds[-1], mask_logits, atol=1e-4, rtol=1e-4)


def test_benchmark_counts_the_kernels_flops(benchmark):
    inputs = make_inputs(bs=2, heads=3, channels=5, queries=9, points=4, dtype=torch.float32)
    flops = benchmark.frame_flops(multi_scale_deformable_attn_cpu, *inputs)
    assert flops == 2 * 4 * (2 * 9 * 3 * 3 * 4) * 5  # 4 neighbours x channels per point
    linear = torch.nn.Linear(8, 16)
    assert benchmark.frame_flops(linear, torch.randn(3, 8)) == 2 * 3 * 8 * 16
    # oneDNN's fused linear and convolution count as torch's (both overloads)
    x, weight = torch.randn(2, 3, 8), torch.randn(16, 8)
    for kwargs in (dict(), dict(residual=torch.randn(2, 3, 16))):
        assert benchmark.frame_flops(
            lambda: onednn.linear(x, weight, **kwargs)) == 2 * 2 * 3 * 8 * 16
    images, kernels = torch.randn(1, 3, 10, 12), torch.randn(4, 3, 3, 3)
    expected = benchmark.frame_flops(lambda: F.conv2d(images, kernels, None, 2, 1))
    assert expected == 2 * (4 * 5 * 6) * (3 * 3 * 3)
    for kwargs in (dict(), dict(residual=torch.randn(1, 4, 5, 6), relu=True)):
        assert benchmark.frame_flops(lambda: onednn.conv2d(
            images, kernels, None, (2, 2), (1, 1), (1, 1), **kwargs)) == expected
