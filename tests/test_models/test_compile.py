"""The torch.compile path of CTVIS (``CTVIS.compile_detector``): no graph break but mmdet's known
one, the same tracks as the eager model, and a clear error when the backend cannot compile.

The inductor test compiles the tiny model for real (C++ code generation on the CPU), the slowest
test here; the others trace only.
"""
import copy

import pytest
import torch

from conftest import build_tiny_model, frame_sample
from ctvis.models import CTVIS

# torch's own compile machinery touches torch.jit.script_method (deprecated in torch itself)
pytestmark = pytest.mark.filterwarnings(
    'ignore:`torch.jit.script_method` is deprecated:DeprecationWarning')
SIZE = (64, 64)
NUM_FRAMES = 4
# Network outputs: inductor fuses and reorders float32 reductions, so values move by a few ulps
# of the largest intermediate; 1e-4 is far above that and far below any decision of the tracker.
RTOL, ATOL = 1e-4, 1e-5
# A mask pixel whose logit is within that rounding of the threshold may flip: at most 0.1 % of a
# mask's pixels may differ (none did when this was written).
MASK_PIXELS_RTOL = 1e-3


def frames(num_frames: int = NUM_FRAMES) -> torch.Tensor:
    return torch.randn(num_frames, 3, *SIZE, generator=torch.Generator().manual_seed(0))


def track_video(model: CTVIS, inputs: torch.Tensor) -> list:
    """Feed the frames one by one, as the test loop does: the tracks of every frame but the last,
    then (the last frame completes the video) the video output of every frame."""
    tracks = []
    with torch.no_grad():
        for t in range(len(inputs)):
            sample = frame_sample(t, len(inputs), size=SIZE)
            out = model.predict(inputs[t][None, None], [sample])[0]
            if t < len(inputs) - 1:
                tracks.append(out[0].pred_track_instances)
    assert out.metainfo.get('video_complete'), 'the last frame did not complete the video'
    return tracks + [frame.pred_track_instances for frame in out]


def decode(rle: dict) -> torch.Tensor:
    import pycocotools.mask as mask_util
    return torch.from_numpy(mask_util.decode(rle)).bool()


def assert_same_tracks(eager, compiled) -> None:
    assert torch.equal(eager.instances_id, compiled.instances_id)
    assert torch.equal(eager.labels, compiled.labels)
    torch.testing.assert_close(compiled.scores, eager.scores, rtol=RTOL, atol=ATOL)
    assert len(eager.masks) == len(compiled.masks)
    for a, b in zip(eager.masks, compiled.masks):
        a, b = decode(a), decode(b)
        assert (a != b).sum() <= MASK_PIXELS_RTOL * a.numel(), 'masks differ'


def test_the_network_compiles_without_graph_breaks():
    """One graph for the whole per-frame network (the pixel decoder's own forward replaced
    mmdet's, whose ``torch._shape_as_tensor(feat)[2:].to(device)`` dynamo cannot trace)."""
    model = build_tiny_model().eval()
    with torch.no_grad():
        explained = torch._dynamo.explain(CTVIS._network)(model, frames(1))
    assert explained.graph_break_count == 0, [r.reason for r in explained.break_reasons]
    assert explained.graph_count == 1


def test_compile_inductor_gives_the_eager_tracks():
    """Real inductor compilation of the tiny model; tolerances: see RTOL and MASK_PIXELS_RTOL."""
    eager = build_tiny_model().eval()
    compiled = copy.deepcopy(eager)
    compiled.compile_detector()
    inputs = frames()
    with torch.no_grad():
        expected, actual = eager.detect(inputs[:1]), compiled.detect(inputs[:1])
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)
    expected, actual = track_video(eager, inputs), track_video(compiled, inputs)
    assert len(expected) == len(actual) == 2 * NUM_FRAMES - 1
    assert sum(len(tracks) for tracks in expected) > 0, 'nothing tracked: a vacuous comparison'
    for e, a in zip(expected, actual):
        assert_same_tracks(e, a)
    assert eager._compiled_network is None  # the copy compiled, not the original
    # weights loaded after compiling are used (the parameters are inputs of the graph)
    other = build_tiny_model(seed=1).state_dict()
    eager.load_state_dict(other)
    compiled.load_state_dict(other)
    with torch.no_grad():
        expected, actual = eager.detect(inputs[1:2]), compiled.detect(inputs[1:2])
    for e, a in zip(expected, actual):
        torch.testing.assert_close(a, e, rtol=RTOL, atol=ATOL)


def test_compile_detector_is_lazy_and_off_by_default(monkeypatch):
    model = build_tiny_model().eval()
    assert model._compiled_network is None
    calls = []
    monkeypatch.setattr(torch, 'compile', lambda fn, **kwargs: calls.append(kwargs) or fn)
    model.compile_detector()
    assert calls == [dict(dynamic=False, backend='inductor', mode=None)]
    assert set(model.state_dict()) == set(build_tiny_model().state_dict())


def test_a_backend_failure_says_what_to_do():
    def failing_backend(graph, example_inputs):
        raise RuntimeError('no C++ compiler here')

    model = build_tiny_model().eval()
    model.compile_detector(backend=failing_backend)
    with pytest.raises(RuntimeError) as error, torch.no_grad():
        model.detect(frames(1))
    message = str(error.value)
    assert message.startswith('CTVIS.detect: torch.compile could not compile the network for '
                              'frames of shape (1, 3, 64, 64)'), message
    assert '(RuntimeError: no C++ compiler here)' in message
    assert 'C++ compiler on the CPU (g++' in message and 'drop --compile' in message


def test_compile_detector_refuses_where_dynamo_is_unsupported(monkeypatch):
    monkeypatch.setattr(torch._dynamo, 'is_dynamo_supported', lambda: False)
    model = build_tiny_model()
    with pytest.raises(RuntimeError, match='torch.compile is not supported'):
        model.compile_detector()
    assert model._compiled_network is None
