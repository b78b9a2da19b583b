"""ctvis.ops.onednn: oneDNN's fused linear in CPU inference, torch's ``F.linear``
otherwise, the same results (to float rounding)."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ctvis.ops.onednn as onednn
from conftest import OpCounter
from ctvis.ops.onednn import (conv2d, linear, onednn_fusion_available, onednn_fusion_flags,
                                    uses_onednn)

ONEDNN_OP = 'mkldnn::_linear_pointwise'
CONV_OP = 'mkldnn::_convolution_pointwise'


def make(shape=(2, 7, 33), out_features=19, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=gen, dtype=dtype)
    weight = torch.randn(out_features, shape[-1], generator=gen, dtype=dtype)
    bias = torch.randn(out_features, generator=gen, dtype=dtype)
    residual = torch.randn(*shape[:-1], out_features, generator=gen, dtype=dtype)
    return x, weight, bias, residual


def reference(x, weight, bias=None, relu=False, residual=None):
    out = F.linear(x, weight, bias)
    out = out.relu() if relu else out
    return out if residual is None else residual + out


def test_onednn_is_available_here():
    """The stack's torch (CPU wheel) has oneDNN: the fast path must not silently vanish."""
    assert onednn_fusion_available()


@torch.no_grad()
@pytest.mark.parametrize('shape', [(2, 7, 33), (1, 300, 64), (5, 1), (0, 3, 8)])
@pytest.mark.parametrize('post', ['none', 'relu', 'residual', 'no bias'])
def test_fused_linear_equals_torch(shape, post):
    x, weight, bias, residual = make(shape)
    kwargs = dict(relu=post == 'relu', residual=residual if post == 'residual' else None)
    bias = None if post == 'no bias' else bias
    with OpCounter() as counter:
        output = linear(x, weight, bias, **kwargs)
    assert counter.calls[ONEDNN_OP] == 1 and counter.calls['aten::addmm'] == 0
    expected = reference(x, weight, bias, **kwargs)
    assert output.shape == expected.shape
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    if post == 'relu' and x.numel():
        assert (output == 0).any() and (output > 0).any()


@torch.no_grad()
def test_non_contiguous_inputs():
    x, weight, bias, residual = make((7, 2, 16), out_features=5)
    x, residual = x.transpose(0, 1), residual.transpose(0, 1)  # (2, 7, ...) views
    with OpCounter() as counter:
        output = linear(x, weight, bias, residual=residual)
    assert counter.calls[ONEDNN_OP] == 1
    torch.testing.assert_close(output, reference(x, weight, bias, residual=residual),
                               atol=1e-5, rtol=1e-5)


def torch_path_taken(x, weight, bias, **kwargs):
    """Runs ``linear``; returns whether it avoided oneDNN and equalled torch's ops bit for bit."""
    with OpCounter() as counter:
        output = linear(x, weight, bias, **kwargs)
    return (counter.calls[ONEDNN_OP] == 0
            and torch.equal(output, reference(x, weight, bias, **kwargs)))


def test_inputs_that_need_gradients_take_torchs_path():
    x, weight, bias, residual = make()
    weight.requires_grad_(True)
    assert torch_path_taken(x, weight, bias, relu=True)
    output = linear(x, weight, bias, residual=residual)
    output.sum().backward()  # a graph was recorded
    assert weight.grad is not None
    with torch.no_grad():  # the same tensors without a graph: oneDNN
        assert uses_onednn(x, weight, bias)


def test_float64_and_a_disabled_onednn_take_torchs_path():
    with torch.no_grad():
        assert torch_path_taken(*make(dtype=torch.float64)[:3], relu=True)
        with torch.backends.mkldnn.flags(enabled=False):
            assert torch_path_taken(*make()[:3], relu=True)
        assert not torch_path_taken(*make()[:3], relu=True)


@torch.no_grad()
def test_a_broadcast_residual_takes_torchs_path():
    x, weight, bias, _ = make((2, 7, 33))
    assert torch_path_taken(x, weight, bias, residual=torch.randn(19))


def test_relu_and_residual_together_are_refused():
    x, weight, bias, residual = make()
    with pytest.raises(ValueError, match='not both'):
        linear(x, weight, bias, relu=True, residual=residual)


@torch.no_grad()
def test_compiled_linear_traces_torchs_ops_in_one_graph():
    x, weight, bias, residual = make()
    torch._dynamo.reset()
    compiled = torch.compile(lambda *args: linear(*args, residual=residual), fullgraph=True,
                             backend='eager')
    torch.testing.assert_close(compiled(x, weight, bias),
                               reference(x, weight, bias, residual=residual))


def test_a_torch_without_the_op_falls_back(monkeypatch):
    monkeypatch.setattr(onednn, 'onednn_fusion_available', lambda: False)
    with torch.no_grad():
        assert torch_path_taken(*make()[:3], relu=True)


@torch.no_grad()
def test_flags_turn_the_fused_op_off_within_a_block():
    x, weight, bias, _ = make()
    with onednn_fusion_flags(enabled=False):
        assert torch_path_taken(x, weight, bias, relu=True)
        with onednn_fusion_flags(enabled=True):
            assert uses_onednn(x, weight, bias)
        assert not uses_onednn(x, weight, bias)
    assert uses_onednn(x, weight, bias)
    with pytest.raises(KeyError), onednn_fusion_flags(enabled=False):
        raise KeyError  # the setting is restored on errors too
    assert uses_onednn(x, weight, bias)


@pytest.mark.parametrize('value, expected', [('0', False), ('', True)])
def test_environment_variable_sets_the_default(value, expected):
    code = ('import torch; from ctvis.ops.onednn import uses_onednn; '
            'torch.set_grad_enabled(False); '
            'print(uses_onednn(torch.ones(2, 3)))')
    env = {**os.environ, 'CTVIS_ONEDNN_FUSION': value}
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == str(expected)


CONV_CASES = [((1, 1), (1, 1), (1, 1), 1), ((2, 2), (1, 1), (1, 1), 1), ((2, 1), (0, 2), (2, 1), 1),
              ((1, 1), (1, 1), (1, 1), 2)]


@torch.no_grad()
@pytest.mark.parametrize('stride, padding, dilation, groups', CONV_CASES)
@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('with_residual', [False, True])
def test_fused_conv_equals_torch(stride, padding, dilation, groups, relu, with_residual):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 9, 11, generator=gen)
    weight = torch.randn(8, 6 // groups, 3, 3, generator=gen)
    bias = torch.randn(8, generator=gen)
    expected = F.conv2d(x, weight, bias, stride, padding, dilation, groups)
    residual = torch.randn(expected.shape, generator=gen) if with_residual else None
    if with_residual:
        expected = expected + residual
    expected = expected.relu() if relu else expected
    with OpCounter() as counter:
        output = conv2d(x, weight, bias, stride, padding, dilation, groups, residual=residual,
                        relu=relu)
    assert counter.calls[CONV_OP] == 1 and counter.calls['aten::convolution'] == 0
    torch.testing.assert_close(output, expected, atol=1e-5, rtol=1e-5)
    if relu:
        assert (output == 0).any()


@torch.no_grad()
def test_conv_with_a_broadcast_residual_or_in_float64_takes_torchs_path():
    x, weight = torch.randn(1, 3, 5, 6), torch.randn(4, 3, 3, 3)
    residual = torch.randn(4, 1, 1)
    with OpCounter() as counter:
        output = conv2d(x, weight, None, (1, 1), (1, 1), (1, 1), residual=residual, relu=True)
    assert counter.calls[CONV_OP] == 0
    assert torch.equal(output, (F.conv2d(x, weight, padding=1) + residual).relu())
    with OpCounter() as counter:
        conv2d(x.double(), weight.double(), None, (1, 1), (1, 1), (1, 1))
    assert counter.calls[CONV_OP] == 0


def test_a_changed_private_op_turns_the_fusion_off(monkeypatch):
    """The probe calls every form used: a schema change in torch takes torch's path."""
    real = torch.ops.mkldnn._linear_pointwise

    class Changed:
        def __call__(self, *args):
            return real(*args)

        def binary(self, *args):
            raise TypeError('_linear_pointwise() expected at most 4 argument(s)')

    assert onednn.onednn_fusion_available.__wrapped__()
    monkeypatch.setattr(torch.ops.mkldnn, '_linear_pointwise', Changed())
    assert not onednn.onednn_fusion_available.__wrapped__()
