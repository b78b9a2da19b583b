"""FusedResNet: mmdet's ResNet with batch norm folded and ReLU / residual add fused in CPU
inference; the same parameters and, to float rounding, the same outputs."""
import pytest
import torch

import ctvis.models.fused_resnet as fused_resnet
from conftest import OpCounter
from ctvis.models import FusedResNet
from ctvis.models.fused_resnet import FusedBasicBlock, FusedBottleneck
from mmdet.models.backbones import ResNet
from mmdet.models.backbones.resnet import BasicBlock, Bottleneck
from mmdet.registry import MODELS

CONV_OP = 'mkldnn::_convolution_pointwise'


def build_pair(seed=0, **cfg):
    """FusedResNet and mmdet's ResNet with the same weights and random batch-norm statistics."""
    cfg = {**dict(depth=18, base_channels=8, out_indices=(0, 1, 2, 3)), **cfg}
    torch.manual_seed(seed)
    ours = MODELS.build(dict(type='FusedResNet', **cfg))
    torch.manual_seed(seed)
    for ctvis_argument in ('channels_last', 'stem_out'):
        cfg.pop(ctvis_argument, None)
    theirs = MODELS.build(dict(type='ResNet', **cfg))
    gen = torch.Generator().manual_seed(seed + 1)
    for module in ours.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            module.running_mean.copy_(0.2 * torch.randn(channels, generator=gen))
            module.running_var.copy_(0.5 + torch.rand(channels, generator=gen))
            module.weight.data.copy_(1 + 0.2 * torch.randn(channels, generator=gen))
            module.bias.data.copy_(0.2 * torch.randn(channels, generator=gen))
    theirs.load_state_dict(ours.state_dict())
    ours.eval(), theirs.eval()  # (mmdet's ResNet.train returns None)
    return ours, theirs


def assert_close_outputs(outputs, expected, channels_last=False, tol=1e-5):
    assert len(outputs) == len(expected) == 4
    for out, exp in zip(outputs, expected):
        assert out.shape == exp.shape
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert out.is_contiguous(memory_format=layout)
        torch.testing.assert_close(out, exp, atol=tol, rtol=tol)


def test_same_parameters_initialisation_and_retyped_blocks():
    torch.manual_seed(0)
    ours = FusedResNet(depth=50)
    torch.manual_seed(0)
    theirs = ResNet(depth=50)
    state, expected = ours.state_dict(), theirs.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[key], expected[key]) for key in expected)
    blocks = [m for m in ours.modules() if isinstance(m, Bottleneck)]
    assert len(blocks) == 16 and all(type(b) is FusedBottleneck for b in blocks)
    assert type(FusedResNet(depth=18).layer1[0]) is FusedBasicBlock


@torch.no_grad()
@pytest.mark.parametrize('cfg', [
    dict(),
    dict(depth=50, base_channels=4),
    dict(depth=50, base_channels=4, style='caffe'),
    dict(depth=50, base_channels=4, deep_stem=True, avg_down=True),
])
def test_inference_equals_mmdets_resnet_without_batch_norm_passes(cfg):
    ours, theirs = build_pair(**cfg)
    x = torch.randn(2, 3, 45, 70)
    with OpCounter(keep=[CONV_OP]) as recorder:
        outputs = ours(x)
    assert recorder.calls['aten::native_batch_norm'] == (3 if cfg.get('deep_stem') else 0)
    assert recorder.calls['aten::add_'] + recorder.calls['aten::relu_'] == (
        3 if cfg.get('deep_stem') else 0)  # the deep stem keeps mmdet's modules
    assert recorder.calls[CONV_OP] > 0
    assert_close_outputs(outputs, theirs(x))


def test_training_and_gradients_run_mmdets_forward_bit_for_bit():
    ours, theirs = build_pair(norm_eval=False)
    x = torch.randn(2, 3, 32, 48)
    for mode in (True, False):
        ours.train(mode), theirs.train(mode)
        with OpCounter(keep=[CONV_OP]) as recorder:
            outputs = ours(x)  # gradients recorded (the weights require them)
        assert recorder.calls[CONV_OP] == 0
        assert all(torch.equal(a, b) for a, b in zip(outputs, theirs(x)))
        assert outputs[-1].grad_fn is not None


@torch.no_grad()
def test_float64_takes_mmdets_forward():
    ours, theirs = build_pair()
    ours.double(), theirs.double()
    x = torch.randn(1, 3, 32, 48, dtype=torch.float64)
    assert all(torch.equal(a, b) for a, b in zip(ours(x), theirs(x)))


@torch.no_grad()
def test_folded_weights_follow_changed_parameters():
    ours, theirs = build_pair()
    x = torch.randn(1, 3, 32, 48)
    assert_close_outputs(ours(x), theirs(x))
    other, _ = build_pair(seed=7)
    ours.load_state_dict(other.state_dict())  # in-place copies: new versions
    theirs.load_state_dict(other.state_dict())
    assert_close_outputs(ours(x), theirs(x))
    norm = ours.layer1[0].norm1  # a new tensor in place of a buffer
    norm.running_var = norm.running_var * 4
    theirs.layer1[0].norm1.running_var = norm.running_var.clone()
    assert_close_outputs(ours(x), theirs(x))


@torch.no_grad()
def test_channels_last_from_the_threshold_on(monkeypatch):
    monkeypatch.setattr(fused_resnet, 'CHANNELS_LAST_MIN_PIXELS', 40 * 48)
    ours, theirs = build_pair()
    for height, channels_last in ((40, True), (39, False)):
        x = torch.randn(1, 3, height, 48)
        with OpCounter(keep=[CONV_OP]) as recorder:
            outputs = ours(x)
        stem_input = recorder.inputs[0][1][0]
        weights = [args[2] if func._overloadname == 'binary' else args[1]
                   for func, args in recorder.inputs]
        assert stem_input.is_contiguous(memory_format=torch.channels_last) == channels_last
        assert stem_input.is_contiguous() != channels_last
        # folded weights cached in the input's layout (else converted on every call)
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert all(w.is_contiguous(memory_format=layout) for w in weights)
        assert any(not w.is_contiguous() for w in weights) == channels_last
        assert_close_outputs(outputs, theirs(x), channels_last)


@torch.no_grad()
def test_blocks_it_cannot_fold_keep_mmdets_forward():
    ours, theirs = build_pair(norm_cfg=dict(type='GN', num_groups=4))
    assert not any(isinstance(m, (FusedBasicBlock, FusedBottleneck)) for m in ours.modules())
    x = torch.randn(1, 3, 32, 48)
    assert all(torch.equal(a, b) for a, b in zip(ours(x), theirs(x)))
    dcn = FusedResNet(depth=50, base_channels=4, dcn=dict(type='DCN', deform_groups=1),
                      stage_with_dcn=(False, True, False, False))
    assert type(dcn.layer1[0]) is FusedBottleneck and type(dcn.layer2[0]) is Bottleneck
    assert type(FusedResNet(depth=18).layer1[0]) is not BasicBlock


@torch.no_grad()
def test_training_mode_without_gradients_uses_batch_statistics():
    ours, theirs = build_pair(norm_eval=False)
    ours.train(), theirs.train()
    x = torch.randn(2, 3, 32, 48)
    assert all(torch.equal(a, b) for a, b in zip(ours(x), theirs(x)))


@torch.no_grad()
@pytest.mark.parametrize('conv_bias, affine', [(True, True), (True, False), (False, False)])
def test_fold_batch_norm_equals_conv_then_norm(conv_bias, affine):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 5, 3, padding=1, bias=conv_bias)
    norm = torch.nn.BatchNorm2d(5, affine=affine, eps=0.01).eval()
    norm.running_mean.normal_()
    norm.running_var.uniform_(0.5, 2)
    if affine:
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(2, 3, 6, 7)
    weight, bias = fused_resnet.fold_batch_norm(conv, norm)
    torch.testing.assert_close(torch.nn.functional.conv2d(x, weight, bias, padding=1),
                               norm(conv(x)), atol=1e-5, rtol=1e-5)


def test_a_model_built_in_inference_mode_runs_fused():
    """Its parameters are inference tensors, which have no version counter."""
    with torch.inference_mode():
        torch.manual_seed(0)
        ours = FusedResNet(depth=18, base_channels=8)
        torch.manual_seed(0)
        theirs = ResNet(depth=18, base_channels=8)
        ours.eval(), theirs.eval()
        x = torch.randn(1, 3, 32, 48)
        with OpCounter(keep=[CONV_OP]) as recorder:
            outputs = ours(x)
        assert recorder.calls[CONV_OP] > 0
        assert_close_outputs(outputs, theirs(x))
        # weights loaded in place after a forward: an inference tensor's version stays 0, so
        # the folded weights were stale (outputs off by as much as their size)
        torch.manual_seed(1)
        other = ResNet(depth=18, base_channels=8).state_dict()
        ours.load_state_dict(other)
        theirs.load_state_dict(other)
        assert_close_outputs(ours(x), theirs(x))


def test_a_block_frozen_in_part_keeps_its_gradients():
    """Only the input and conv1's weight decided the path: with conv1 frozen and the rest
    trainable, the fused (detached) path ran and no gradient reached the block."""
    ours, theirs = build_pair()
    for model in (ours, theirs):
        model.conv1.weight.requires_grad_(False)
        model.layer1[0].conv1.weight.requires_grad_(False)
    x = torch.randn(1, 3, 32, 48)
    sum(out.sum() for out in ours(x)).backward()
    sum(out.sum() for out in theirs(x)).backward()
    theirs_parameters = dict(theirs.named_parameters())
    trained = [name for name, p in ours.named_parameters() if p.requires_grad]
    assert 'layer1.0.conv2.weight' in trained and 'conv1.weight' not in trained
    for name in trained:
        ours_grad = dict(ours.named_parameters())[name].grad
        assert ours_grad is not None, name
        torch.testing.assert_close(ours_grad, theirs_parameters[name].grad)


@torch.no_grad()
def test_folded_weights_follow_a_changed_eps():
    ours, theirs = build_pair()
    x = torch.randn(1, 3, 32, 48)
    assert_close_outputs(ours(x), theirs(x))
    for model in (ours, theirs):
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.eps = 1.0
    assert_close_outputs(ours(x), theirs(x))


@pytest.mark.parametrize('channels_last', [True, False])
def test_channels_last_argument_overrides_the_threshold(monkeypatch, channels_last):
    monkeypatch.setattr(fused_resnet, 'CHANNELS_LAST_MIN_PIXELS', 1)
    ours, theirs = build_pair(norm_eval=False, channels_last=channels_last)
    stem_inputs = []
    ours.conv1.register_forward_pre_hook(lambda module, args: stem_inputs.append(args[0]))
    x = torch.randn(2, 3, 32, 48)
    for training in (True, False):  # also in training (mmdet's forward on channels-last maps)
        ours.train(training), theirs.train(training)
        with torch.no_grad():
            outputs = ours(x)
            # batch statistics summed in another order: a looser tolerance in training
            assert_close_outputs(outputs, theirs(x), channels_last, 1e-4 if training else 1e-5)
    if channels_last:  # the fused inference passes the stem's folded weights, not conv1
        assert len(stem_inputs) == 1
        assert stem_inputs[0].is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), OpCounter(keep=[CONV_OP]) as recorder:
        ours(x)
    assert recorder.inputs[0][1][0].is_contiguous() != channels_last


@pytest.mark.parametrize('training', [False, True])
def test_stem_out_returns_the_stride_2_stem_map_first(training):
    ours, theirs = build_pair(norm_eval=False, stem_out=True)
    ours.train(training), theirs.train(training)
    x = torch.randn(2, 3, 32, 48)
    with torch.no_grad():
        outputs = ours(x)
        stem = theirs.relu(theirs.norm1(theirs.conv1(x)))  # before the max pooling
        expected = theirs(x)
    assert len(outputs) == 5 and outputs[0].shape == (2, 8, 16, 24)
    torch.testing.assert_close(outputs[0], stem, atol=1e-5, rtol=1e-5)
    assert_close_outputs(outputs[1:], expected)
    assert len(FusedResNet(depth=18, base_channels=8)(x)) == 4  # off by default
