"""OnlineVideoSegmenter.step on a real tiny model: good frames tracked, bad ones refused clearly."""
import copy
import pickle

import numpy as np
import pytest
import torch

from mmcv.transforms import LoadImageFromFile

from ctvis.apis import OnlineVideoSegmenter, in_memory_test_pipeline
from conftest import build_tiny_model

SIZE = (32, 40)
TEST_PIPELINE = [
    dict(type='TransformBroadcaster', transforms=[dict(type='LoadImageFromFile')]),
    dict(type='PackTrackInputs')
]


@pytest.fixture(scope='module')
def segmenter():
    return OnlineVideoSegmenter(build_tiny_model(), TEST_PIPELINE)


def test_in_memory_pipeline_loads_decoded_frames_whatever_the_loader_is_called():
    """Every spelling that builds mmcv's LoadImageFromFile becomes LoadImageFromNDArray, nested
    steps included; other steps and the config itself stay as they were."""
    for spelling in ('LoadImageFromFile', 'mmcv.LoadImageFromFile', LoadImageFromFile):
        pipeline = [dict(type='TransformBroadcaster', transforms=[
            dict(type=spelling, to_float32=True), dict(type='Resize', scale=(8, 8))]),
            dict(type='PackTrackInputs')]
        swapped = in_memory_test_pipeline(pipeline)
        assert swapped[0]['transforms'] == [
            dict(type='mmdet.LoadImageFromNDArray', to_float32=True),
            dict(type='Resize', scale=(8, 8))]
        assert swapped[1] == dict(type='PackTrackInputs')
        assert pipeline[0]['transforms'][0]['type'] is spelling
    other = [dict(type='LoadImageFromNDArray'), dict(type='LoadAnnotations')]
    assert in_memory_test_pipeline(other) == other


def frame(seed: int = 0, size=SIZE) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, 256, (*size, 3)).astype(np.uint8)


def test_step_tracks_uint8_frames_and_finish_gives_the_video(segmenter):
    segmenter.reset()
    tracks = segmenter.step(frame(0))
    assert segmenter.frame_id == 1
    assert len(tracks.masks) == len(tracks.instances_id) == len(tracks.scores) \
        == len(tracks.queries)
    assert tracks.queries.dtype == torch.long and len(set(tracks.queries.tolist())) == len(tracks)
    assert all(0 <= q < segmenter.model.track_head.num_queries for q in tracks.queries.tolist())
    assert all(tuple(rle['size']) == SIZE for rle in tracks.masks)
    segmenter.step(frame(1)[:, :, ::-1])  # a channel-reversed (negative-stride) view works
    video = segmenter.finish()
    assert len(video) == 2 and segmenter.frame_id == 0  # finish starts a new video


ramp = np.linspace(0, 1, SIZE[0] * SIZE[1] * 3).reshape(*SIZE, 3)
nan_frame = frame(0).astype(np.float32)
nan_frame[3, 4, 1] = np.nan
inf_frame = frame(0).astype(np.float64)
inf_frame[0, 0, 0] = np.inf


@pytest.mark.parametrize('bad, expected', [
    (ramp.astype(np.float32), ['float32 image with values in [0, 1]',
                               '(frame * 255).round().astype(np.uint8)']),
    ((ramp * 255).astype(np.float64), ['float64 image with values in [0, 255]',
                                       'frame.clip(0, 255).round().astype(np.uint8)']),
    (nan_frame, ['float32 image with NaN or infinite values']),
    (inf_frame, ['float64 image with NaN or infinite values']),
    ((ramp * 65535).astype(np.uint16), ['uint16 image (values up to 65535)',
                                        '(frame // 257).astype(np.uint8)']),
    (frame(0).astype(np.int32), ['int32 image', 'uint8']),
    (np.zeros((0, 0, 3), np.uint8), ['empty image of shape (0, 0, 3)']),
    (np.zeros((0, 40, 3), np.uint8), ['empty image of shape (0, 40, 3)']),
    (frame(0)[..., 0], ['single-channel image', 'cv2.COLOR_GRAY2BGR']),
    (frame(0)[..., :1], ['single-channel image', 'cv2.COLOR_GRAY2BGR']),
    (np.dstack([frame(0), frame(1)[..., :1]]), ['4-channel image', 'cv2.COLOR_BGRA2BGR']),
    (frame(0)[..., :2], ['expected an (H, W, 3) BGR image, got shape (32, 40, 2)']),
    (frame(0)[None], ['expected an (H, W, 3) BGR image, got shape (1, 32, 40, 3)']),
    (frame(0).tolist(), ['expected a numpy array (H, W, 3), got list']),
], ids=['float01', 'float255', 'nan', 'inf', 'uint16', 'int32', 'empty', 'zero-height', 'grey',
        'grey1', 'bgra', 'two-channels', 'batch', 'list'])
def test_step_refuses_bad_frames_naming_frame_and_problem(segmenter, bad, expected):
    segmenter.reset()
    segmenter.step(frame(0))
    with pytest.raises(ValueError) as error:
        segmenter.step(bad)
    message = str(error.value)
    assert message.startswith('OnlineVideoSegmenter.step: frame 1: '), message
    for part in expected:
        assert part in message
    # Nothing changed: the stream goes on with the next good frame
    assert segmenter.frame_id == 1
    segmenter.step(frame(2))
    assert len(segmenter.finish()) == 2


def test_step_refuses_a_size_change_within_a_video(segmenter):
    segmenter.reset()
    segmenter.step(frame(0))
    segmenter.step(frame(1))
    with pytest.raises(ValueError, match=r"frame 2: size 32x48 differs from this video's 32x40 "
                       r'\(its first frame\)'):
        segmenter.step(frame(2, (32, 48)))
    assert len(segmenter.finish()) == 2
    segmenter.step(frame(2, (32, 48)))  # a new video may have another size
    assert segmenter.frame_size == (32, 48)
    assert len(segmenter.finish()) == 1


def test_from_config_loads_a_runner_checkpoint_and_refuses_code(tmp_path, monkeypatch):
    """from_config loads a checkpoint as the tools do (mmengine's log history and numpy values
    in it load), refuses a file that would run code, and leaves mmengine as it found it."""
    import os

    import torch
    from mmengine.config import Config
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    from conftest import tiny_model_cfg
    from ctvis.utils import TRUSTED_CHECKPOINTS_ENV, UnsafeCheckpointError

    class RunsCode:

        def __reduce__(self):
            return os.system, (f'touch {tmp_path / "payload_ran"}', )

    monkeypatch.delenv(TRUSTED_CHECKPOINTS_ENV, raising=False)
    model = build_tiny_model(seed=1)
    good, evil = tmp_path / 'iter_2.pth', tmp_path / 'evil.pth'
    extras = dict(message_hub=dict(log_scalars={'train/loss': HistoryBuffer([1.0, 2.0], [1, 1])}),
                  rng=np.random.get_state())
    torch.save(dict(state_dict=model.state_dict(), **extras), good)
    torch.save(dict(state_dict=model.state_dict(), extra=RunsCode()), evil)
    cfg = Config(dict(model=tiny_model_cfg(),
                      test_dataloader=dict(dataset=dict(pipeline=TEST_PIPELINE))))
    schemes = CheckpointLoader._schemes.copy()
    segmenter = OnlineVideoSegmenter.from_config(cfg, str(good))
    for key, value in model.state_dict().items():
        assert torch.equal(segmenter.model.state_dict()[key], value), key
    with pytest.raises(UnsafeCheckpointError, match='posix.system'):
        OnlineVideoSegmenter.from_config(cfg, str(evil))
    assert not (tmp_path / 'payload_ran').exists()
    assert CheckpointLoader._schemes == schemes


def test_from_config_refuses_other_weights_and_non_test_configs(tmp_path):
    """A checkpoint that cannot give the model all its weights (another config's, an
    unconverted detectron2 file) would leave them random with only a log warning; a config
    without a model or test pipeline, or with invalid syntax, would fail deep in mmengine."""
    import torch
    from mmengine.config import Config

    from conftest import tiny_model_cfg

    cfg = Config(dict(model=tiny_model_cfg(),
                      test_dataloader=dict(dataset=dict(pipeline=TEST_PIPELINE))))
    weights = build_tiny_model(seed=1).state_dict()
    counters = [key for key in weights if key.endswith('num_batches_tracked')]
    assert counters  # torch's batch norm fills them in: a checkpoint without them fits
    no_counters = tmp_path / 'no_counters.pth'
    torch.save({key: value for key, value in weights.items() if key not in counters},
               no_counters)
    OnlineVideoSegmenter.from_config(cfg, str(no_counters))
    wider = tmp_path / 'wider.pth'
    torch.save(dict(state_dict=dict(weights, **{'backbone.conv1.weight': torch.zeros(1)})), wider)
    with pytest.raises(ValueError, match=rf'^{wider}: the weights do not fit the model: 1 have '
                       r'another shape \(checkpoint vs model, e.g. backbone.conv1.weight: '
                       r'\(1,\) vs \(16, 3, 7, 7\)\)'):
        OnlineVideoSegmenter.from_config(cfg, str(wider))
    detectron2 = tmp_path / 'model_final.pth'
    torch.save(dict(model={'sem_seg_head.predictor.query_embed.weight': torch.zeros(2)}),
               detectron2)
    with pytest.raises(ValueError, match=rf"^{detectron2}: the weights do not fit the model: "
                       rf"{len(weights) - len(counters)} of the model's {len(weights)} weights "
                       r"are not in it "
                       r'.* holds 1 entries \(e.g. model\).* must be converted first'):
        OnlineVideoSegmenter.from_config(cfg, str(detectron2))

    with pytest.raises(ValueError, match=r'^the config: needs model and '
                       r'test_dataloader.dataset.pipeline \(a CTVIS test config\), has model'):
        OnlineVideoSegmenter.from_config(Config(dict(model=tiny_model_cfg())))
    broken = tmp_path / 'broken.py'
    broken.write_text('model = dict(\n')
    with pytest.raises(ValueError, match=rf"^{broken}, line 1: invalid Python syntax"):
        OnlineVideoSegmenter.from_config(str(broken))


def test_from_config_refuses_damaged_and_non_finite_checkpoints(tmp_path):
    """A flipped byte inside a tensor loads silently in torch, and NaN weights (a diverged
    training) run without an error: both would give garbage tracks, so both are refused naming
    the file (mutants caught: no CRC check in from_config; no finiteness check)."""
    from mmengine.config import Config

    from conftest import tiny_model_cfg

    cfg = Config(dict(model=tiny_model_cfg(),
                      test_dataloader=dict(dataset=dict(pipeline=TEST_PIPELINE))))
    weights = build_tiny_model(seed=1).state_dict()
    flipped = tmp_path / 'flipped.pth'
    torch.save(dict(state_dict=weights), flipped)
    data = bytearray(flipped.read_bytes())
    key = 'backbone.conv1.weight'
    data[data.index(weights[key].flatten()[:4].numpy().tobytes())] ^= 0xFF
    flipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf'^{flipped}: the member .* fails its CRC check'):
        OnlineVideoSegmenter.from_config(cfg, str(flipped))
    diverged = tmp_path / 'diverged.pth'
    nan_weight = weights[key].clone()
    nan_weight[0, 0, 0, 0] = float('nan')
    torch.save(dict(state_dict=dict(weights, **{key: nan_weight})), diverged)
    with pytest.raises(ValueError, match=rf'^{diverged}: 1 of its weights are not finite \(NaN '
                       rf'or inf, e.g. {key}\): the training that wrote it diverged'):
        OnlineVideoSegmenter.from_config(cfg, str(diverged))
    with pytest.raises(ValueError, match=rf'^{tmp_path}: is a folder, not a checkpoint file'):
        OnlineVideoSegmenter.from_config(cfg, str(tmp_path))
    intact = tmp_path / 'intact.pth'
    torch.save(dict(state_dict=weights), intact)
    assert OnlineVideoSegmenter.from_config(cfg, str(intact)).step(frame()) is not None


def test_without_the_video_result_the_stream_keeps_no_record():
    """A camera stream never asks for the video result; its record grew by about 1 KiB a
    detection for as long as the stream ran. Per-frame tracks are unchanged without it."""
    model = build_tiny_model()
    frames = [frame(seed) for seed in range(12)]
    recording = OnlineVideoSegmenter(model, TEST_PIPELINE)
    expected = [recording.step(f) for f in frames]
    assert len(recording.model.tracker.video.track_ids) > 0
    recording.finish()
    del recording
    streaming = OnlineVideoSegmenter(model, TEST_PIPELINE, video_result=False)
    for f, wanted in zip(frames, expected):
        tracks = streaming.step(f)
        assert tracks.instances_id.tolist() == wanted.instances_id.tolist()
        assert tracks.masks == wanted.masks and torch.equal(tracks.scores, wanted.scores)
    assert model.tracker.video.track_ids == [] and model.tracker.video.rle_bytes == 0
    with pytest.raises(RuntimeError, match='video_result=False and keeps no video-level record'):
        streaming.finish()


def test_a_model_drives_one_live_segmenter_at_a_time():
    """The tracker state lives on the model: two interleaved streams on one model would mix
    their tracks, so a second live segmenter of the same model is refused."""
    model = build_tiny_model()
    first = OnlineVideoSegmenter(model, TEST_PIPELINE)
    with pytest.raises(ValueError, match='this model already drives another live '
                       'OnlineVideoSegmenter.* build one model per stream'):
        OnlineVideoSegmenter(model, TEST_PIPELINE)
    OnlineVideoSegmenter(build_tiny_model(), TEST_PIPELINE)  # another model is fine
    copied = copy.deepcopy(model)  # as the message suggests; the copy is free, and picklable
    assert OnlineVideoSegmenter(copied, TEST_PIPELINE).model is copied
    pickle.dumps(model)
    del first
    assert OnlineVideoSegmenter(model, TEST_PIPELINE).model is model  # free once it is gone


def test_compile_is_off_by_default_and_compiles_the_network_when_asked(monkeypatch):
    """``compile=True`` (constructor and from_config) hands the model to
    ``CTVIS.compile_detector``; without it nothing is compiled. tests/test_models/test_compile.py
    checks that the compiled model tracks as the eager one."""
    from mmengine.config import Config

    from conftest import tiny_model_cfg
    from ctvis.models import CTVIS

    compiled = []
    monkeypatch.setattr(CTVIS, 'compile_detector', lambda model: compiled.append(model))
    model = build_tiny_model()
    assert OnlineVideoSegmenter(model, TEST_PIPELINE).model._compiled_network is None
    assert compiled == []
    OnlineVideoSegmenter(model, TEST_PIPELINE, compile=True)
    assert compiled == [model]
    cfg = Config(dict(model=tiny_model_cfg(),
                      test_dataloader=dict(dataset=dict(pipeline=TEST_PIPELINE))))
    assert OnlineVideoSegmenter.from_config(cfg).model not in compiled
    segmenter = OnlineVideoSegmenter.from_config(cfg, compile=True)
    assert compiled[-1] is segmenter.model and len(compiled) == 2
