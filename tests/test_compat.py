"""Stack fixes of ctvis.utils.compat, on the real torch / mmengine / mmdet of the pinned stack."""
import collections
import copy
import functools
import http.server
import os
import os.path as osp
import pickle
import re
import subprocess
import sys
import textwrap
import threading
import warnings
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import _load_checkpoint
from mmengine.structures import InstanceData
from torch.utils.data import Dataset

import ctvis  # noqa: F401  (applies the fixes)
from conftest import GLOO_PROBE_TIMEOUT_S, free_port, loopback_env
from ctvis.utils import compat
from ctvis.utils.compat import (CorruptCheckpointError, UnsafeCheckpointError, checkpoint_problem,
                                safe_load_file, safe_load_url, trust_checkpoint, url_cache_file)
from mmdet.evaluation.metrics import YouTubeVISMetric
from mmdet.structures import DetDataSample, TrackDataSample

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


# ----------------------------------------------------------------------------------------------
# A tiny model trained by a real mmengine Runner
# ----------------------------------------------------------------------------------------------

class TinyRegressor(BaseModel):
    """y = w.x + b on 3 features; enough to give AdamW and the schedulers real state."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)

    def forward(self, inputs, targets=None, mode='tensor'):
        outputs = self.linear(torch.stack(inputs)).squeeze(-1)
        if mode == 'loss':
            return dict(loss=((outputs - torch.stack(targets))**2).mean())
        return outputs


class TinyRegressionSet(Dataset):

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict:
        features = torch.arange(3, dtype=torch.float32) * 0.1 * (index + 1)
        return dict(inputs=features, targets=features.sum() * 2 - 1)


class RecordStateBeforeTrain(Hook):
    """Snapshot iteration, weights and optimizer state right after load/resume."""

    def before_train(self, runner) -> None:
        self.iter = runner.iter
        self.weights = copy.deepcopy(runner.model.state_dict())
        self.optimizer = copy.deepcopy(runner.optim_wrapper.state_dict())
        self.scheduler_steps = [s.last_step for s in runner.param_schedulers]


def make_runner(work_dir: str, max_iters: int, name: str, resume: bool = False,
                hooks=(), **runner_args) -> Runner:
    return Runner(
        model=TinyRegressor(),
        work_dir=work_dir,
        experiment_name=name,
        train_dataloader=dict(dataset=TinyRegressionSet(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='pseudo_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.05, weight_decay=0.01)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=2),
                         dict(type='MultiStepLR', milestones=[3, 5], by_epoch=False)],
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1000),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=list(hooks),
        resume=resume,
        randomness=dict(seed=0),
        default_scope='mmdet',
        **runner_args)


class CrashAfterIteration(Hook):
    """Simulate a crash right after the checkpoint of iteration ``iteration`` is written."""
    priority = 'LOWEST'  # after CheckpointHook

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == self.iteration:
            raise KeyboardInterrupt(f'simulated crash after iteration {self.iteration}')


@pytest.fixture(scope='module')
def trained_run(tmp_path_factory):
    """A 6-iteration run that crashes after its iteration-4 checkpoint, and an uninterrupted one.

    (Resuming with a larger max_iters would not match: mmengine stores each scheduler's ``end``,
    which defaults to the max_iters of the run that wrote the checkpoint.)
    """
    root = tmp_path_factory.mktemp('runner')
    runner = make_runner(str(root / 'run'), 6, 'compat_run', hooks=[CrashAfterIteration(4)])
    with pytest.raises(KeyboardInterrupt, match='simulated crash'):
        runner.train()
    reference = make_runner(str(root / 'reference'), 6, 'compat_reference')
    reference.train()
    return dict(work_dir=str(root / 'run'), checkpoint=str(root / 'run' / 'iter_4.pth'),
                final_weights=copy.deepcopy(runner.model.state_dict()),
                reference_weights=copy.deepcopy(reference.model.state_dict()))


def test_runner_checkpoint_needs_the_fix(trained_run):
    """torch's default weights-only loader refuses mmengine's own checkpoints (the bug fixed)."""
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(trained_run['checkpoint'])


def test_runner_checkpoint_loads_with_load_checkpoint(trained_run):
    model = TinyRegressor()
    nn.init.zeros_(model.linear.weight)
    checkpoint = load_checkpoint(model, trained_run['checkpoint'], map_location='cpu')
    for key, value in trained_run['final_weights'].items():
        assert torch.equal(model.state_dict()[key], value)
    assert checkpoint['meta']['iter'] == 4
    loss_buffer = checkpoint['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss_buffer, HistoryBuffer)
    assert loss_buffer.data[0].shape == (4, )
    assert set(loss_buffer._statistics_methods) >= {'min', 'max', 'current', 'mean'}
    assert float(loss_buffer.mean()) == pytest.approx(float(np.mean(loss_buffer.data[0])))


def test_resume_restores_iteration_weights_and_optimizer(trained_run):
    checkpoint = safe_load_file(trained_run['checkpoint'])
    recorder = RecordStateBeforeTrain()
    runner = make_runner(trained_run['work_dir'], 6, 'compat_resume', resume=True,
                         hooks=[recorder])
    runner.train()

    assert recorder.iter == 4
    for key, value in checkpoint['state_dict'].items():
        assert torch.equal(recorder.weights[key], value)
    saved_state = checkpoint['optimizer']['state']
    resumed_state = recorder.optimizer['state']
    assert saved_state.keys() == resumed_state.keys() and len(saved_state) == 2
    for index, param_state in saved_state.items():
        for name in ('step', 'exp_avg', 'exp_avg_sq'):
            assert torch.equal(resumed_state[index][name], param_state[name])
    assert recorder.optimizer['param_groups'][0]['lr'] == pytest.approx(
        checkpoint['optimizer']['param_groups'][0]['lr'])
    saved_steps = [s['last_step'] for s in checkpoint['param_schedulers']]
    assert recorder.scheduler_steps == saved_steps
    # Training on from iteration 4 lands exactly where an uninterrupted 6-iteration run does.
    assert runner.iter == 6
    for key, value in trained_run['reference_weights'].items():
        assert torch.equal(runner.model.state_dict()[key], value)


# ----------------------------------------------------------------------------------------------
# Malicious files are refused, nothing runs
# ----------------------------------------------------------------------------------------------

class WritesMarker:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


class ReachesForAttribute:
    """Unpickling this asks getattr for something outside the allowed (object, name) pairs."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, 'register_statistics')


class ParameterWithHook:

    def __reduce__(self):
        hooks = collections.OrderedDict([(0, collections.Counter)])
        return torch._utils._rebuild_parameter, (torch.zeros(2), False, hooks)


@pytest.fixture
def no_trust(monkeypatch):
    monkeypatch.setattr(compat, '_trusted_sources', set())
    monkeypatch.delenv(compat.TRUSTED_CHECKPOINTS_ENV, raising=False)


def weights() -> dict:
    return {'linear.weight': torch.ones(1, 3), 'linear.bias': torch.zeros(1)}


@pytest.mark.parametrize('container', ['torch_zip', 'torch_legacy', 'plain_pickle'])
def test_code_executing_payload_is_refused(tmp_path, no_trust, container):
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'evil.pth'
    if container == 'plain_pickle':  # detectron2 style: numpy weights
        path = tmp_path / 'evil.pkl'
        payload = dict(model={k: v.numpy() for k, v in weights().items()},
                       extra=WritesMarker(str(marker)))
        with open(path, 'wb') as f:
            pickle.dump(payload, f)
    else:
        payload = dict(state_dict=weights(), extra=WritesMarker(str(marker)))
        torch.save(payload, path, _use_new_zipfile_serialization=container == 'torch_zip')

    with pytest.raises(UnsafeCheckpointError) as error:
        safe_load_file(path)
    message = str(error.value)
    assert str(path) in message and 'posix.system' in message
    assert compat.TRUSTED_CHECKPOINTS_ENV in message and 'trust_checkpoint' in message
    assert isinstance(error.value, pickle.UnpicklingError)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(TinyRegressor(), str(path), map_location='cpu')
    with pytest.raises(UnsafeCheckpointError):
        _load_checkpoint(str(path))
    assert not marker.exists()


def test_trusted_file_is_fully_unpickled(tmp_path, no_trust, monkeypatch):
    """The explicit opt-in really unpickles everything (here: the payload runs)."""
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'mine.pth'
    torch.save(dict(extra=WritesMarker(str(marker))), path)
    monkeypatch.setenv(compat.TRUSTED_CHECKPOINTS_ENV, str(tmp_path))
    safe_load_file(path)
    assert marker.exists()

    marker.unlink()
    monkeypatch.delenv(compat.TRUSTED_CHECKPOINTS_ENV)
    with pytest.raises(UnsafeCheckpointError):
        safe_load_file(path)
    trust_checkpoint(str(path))
    safe_load_file(path)
    assert marker.exists()


@pytest.mark.parametrize('payload, refused', [
    (ReachesForAttribute(), "getattr(HistoryBuffer, 'register_statistics')"),
    (ParameterWithHook(), 'backward hooks'),
])
def test_restricted_helpers_refuse_other_uses(tmp_path, no_trust, payload, refused):
    path = tmp_path / 'crafted.pth'
    torch.save(dict(x=payload), path)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(refused)):
        safe_load_file(path)


def test_torchscript_archive_is_refused(tmp_path, no_trust):
    path = tmp_path / 'scripted.pt'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('scripted/data.pkl', pickle.dumps({}))
        archive.writestr('scripted/constants.pkl', pickle.dumps(()))
    with pytest.raises(UnsafeCheckpointError, match='TorchScript'):
        safe_load_file(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        safe_load_file(tmp_path / 'nope.pth')


def damaged_copies(tmp_path, original) -> dict:
    """name -> path of an empty, a cut-short and a garbage copy of ``original``'s file."""
    data = original.read_bytes()
    damaged = dict(empty=b'', cut_short=data[:len(data) // 2], garbage=b'\x80\x04junk' * 50,
                   cut_short_legacy=None)
    paths = {}
    for name, content in damaged.items():
        paths[name] = tmp_path / f'{name}.pth'
        if content is None:  # torch's pre-1.6 format, cut short
            torch.save(dict(state_dict=weights()), paths[name],
                       _use_new_zipfile_serialization=False)
            content = paths[name].read_bytes()[:200]
        paths[name].write_bytes(content)
    return paths


@pytest.mark.parametrize('trusted', [False, True])
def test_damaged_checkpoint_errors_name_the_file(tmp_path, no_trust, trusted):
    original = tmp_path / 'good.pth'
    torch.save(dict(state_dict=weights()), original)
    for name, path in damaged_copies(tmp_path, original).items():
        if trusted:
            trust_checkpoint(str(path))
        for load in (safe_load_file, functools.partial(load_checkpoint, TinyRegressor())):
            with pytest.raises(CorruptCheckpointError) as error:
                load(str(path))
            message = str(error.value)
            assert message.startswith(f'{path}: not a readable checkpoint'), (name, message)
            assert 'Delete it' in message and '--resume' in message
            if name == 'empty':
                assert '(the file is empty; 0 bytes)' in message
        assert checkpoint_problem(str(path)) is not None, name
    assert 'empty' in checkpoint_problem(str(tmp_path / 'empty.pth'))
    assert 'cut short' in checkpoint_problem(str(tmp_path / 'cut_short.pth'))
    assert checkpoint_problem(str(original)) is None


def test_checkpoint_problem_finds_a_flipped_byte_torch_would_load(tmp_path):
    path = tmp_path / 'flipped.pth'
    torch.save(dict(state_dict={'w': torch.arange(1000.)}), path)
    data = bytearray(path.read_bytes())
    offset = data.index(torch.arange(1000.)[500:502].numpy().tobytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    assert not torch.equal(safe_load_file(path)['state_dict']['w'], torch.arange(1000.))
    assert 'fails its CRC check' in checkpoint_problem(str(path))


def test_damaged_download_says_to_delete_the_cached_copy(no_trust, served):
    folder, base = served
    torch.save(dict(state_dict=weights()), folder / 'model.pth')
    (folder / 'model.pth').write_bytes((folder / 'model.pth').read_bytes()[:300])
    with pytest.raises(CorruptCheckpointError) as error:
        _load_checkpoint(f'{base}/model.pth')
    cached = url_cache_file(f'{base}/model.pth')
    assert str(error.value).startswith(f'{cached}: not a readable checkpoint')
    assert f'cached download of {base}/model.pth: delete it' in str(error.value)


# ----------------------------------------------------------------------------------------------
# Ordinary files load
# ----------------------------------------------------------------------------------------------

def test_plain_state_dict_and_numpy_values_load(tmp_path, no_trust):
    rich = dict(
        state_dict=collections.OrderedDict(weights()),
        param=nn.Parameter(torch.arange(4.).reshape(2, 2)),
        half=torch.ones(3, dtype=torch.float16),
        dtype=torch.bfloat16,
        size=torch.Size([2, 3]),
        array=np.arange(6, dtype=np.int32).reshape(2, 3),
        scalar=np.float64(0.25),
        np_dtype=np.dtype('float32'),
        counter=collections.Counter([3, 3, 5]),
        ids={1, 2},
        raw=b'\x00\xffckpt',
    )
    for zip_format in (True, False):
        path = tmp_path / f'rich_{zip_format}.pth'
        torch.save(rich, path, _use_new_zipfile_serialization=zip_format)
        loaded = safe_load_file(path, map_location='cpu')
        assert torch.equal(loaded['state_dict']['linear.weight'], torch.ones(1, 3))
        assert isinstance(loaded['param'], nn.Parameter)
        assert torch.equal(loaded['param'], rich['param'])
        assert loaded['half'].dtype == torch.float16 and loaded['dtype'] is torch.bfloat16
        assert loaded['size'] == torch.Size([2, 3])
        np.testing.assert_array_equal(loaded['array'], rich['array'])
        assert loaded['array'].dtype == np.int32
        assert loaded['scalar'] == 0.25 and loaded['np_dtype'] == np.float32
        assert loaded['counter'] == rich['counter'] and loaded['ids'] == {1, 2}
        assert loaded['raw'] == rich['raw']


@pytest.mark.parametrize('protocol', [2, 4, 5])
def test_detectron2_pickle_of_numpy_arrays_loads(tmp_path, no_trust, protocol):
    rng = np.random.RandomState(0)
    d2 = dict(model={
        'backbone.res2.0.conv1.weight': rng.randn(4, 3, 1, 1).astype(np.float32),
        'sem_seg_head.predictor.query_embed.weight': rng.randn(5, 8).astype(np.float32),
        'backbone.res2.0.conv1.norm.running_mean': np.zeros(4, np.float64),
    }, __author__='Detectron2 Model Zoo', matching_heuristics=True)
    path = tmp_path / 'model_final.pkl'
    with open(path, 'wb') as f:
        pickle.dump(d2, f, protocol=protocol)
    loaded = safe_load_file(path)
    assert loaded['__author__'] == 'Detectron2 Model Zoo' and loaded['matching_heuristics']
    for key, value in d2['model'].items():
        np.testing.assert_array_equal(loaded['model'][key], value)
        assert loaded['model'][key].dtype == value.dtype
    bare = tmp_path / 'array.pkl'  # a pickle whose first object is not a dict
    with open(bare, 'wb') as f:
        pickle.dump(np.arange(5), f, protocol=protocol)
    np.testing.assert_array_equal(safe_load_file(bare), np.arange(5))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):

    def log_message(self, *args) -> None:
        pass


def test_http_checkpoints_go_through_the_safe_loader(tmp_path, no_trust, monkeypatch):
    """mmengine's http(s) scheme (torch.hub would unpickle with weights_only=False)."""
    served = tmp_path / 'served'
    served.mkdir()
    torch.save(dict(state_dict=weights()), served / 'good.pth')
    marker = tmp_path / 'payload_ran'
    torch.save(dict(state_dict=weights(), extra=WritesMarker(str(marker))), served / 'evil.pth')
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f'http://127.0.0.1:{server.server_address[1]}'
        good = _load_checkpoint(f'{base}/good.pth', map_location='cpu')
        assert torch.equal(good['state_dict']['linear.weight'], torch.ones(1, 3))
        with pytest.raises(UnsafeCheckpointError, match=r'evil\.pth.*posix\.system'):
            _load_checkpoint(f'{base}/evil.pth', map_location='cpu')
    finally:
        server.shutdown()
        server.server_close()
    assert not marker.exists()
    assert osp.isfile(url_cache_file(f'{base}/evil.pth'))


@pytest.fixture
def served(tmp_path, monkeypatch):
    """An http server on 127.0.0.1 serving tmp_path/served; yields (folder, base URL)."""
    folder = tmp_path / 'served'
    folder.mkdir()
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f'http://127.0.0.1:{server.server_address[1]}'
    finally:
        server.shutdown()
        server.server_close()


def test_trusting_a_url_never_loads_a_refused_download_of_the_same_name(tmp_path, no_trust,
                                                                        served, monkeypatch):
    """Downloads are cached per full URL: trusting b/model.pth cannot unpickle a/model.pth."""
    folder, base = served
    marker = tmp_path / 'payload_ran'
    for name, payload in (('a', WritesMarker(str(marker))), ('b', 'benign')):
        (folder / name).mkdir()
        torch.save(dict(state_dict=weights(), extra=payload), folder / name / 'model.pth')
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f'{base}/a/model.pth')):
        safe_load_url(f'{base}/a/model.pth')
    # whitespace separates entries, so a URL (with its ':') is one entry
    monkeypatch.setenv(compat.TRUSTED_CHECKPOINTS_ENV, f'{tmp_path}/elsewhere\n{base}/b/model.pth')
    assert safe_load_url(f'{base}/b/model.pth')['extra'] == 'benign'
    assert not marker.exists()
    assert url_cache_file(f'{base}/a/model.pth') != url_cache_file(f'{base}/b/model.pth')
    with pytest.raises(UnsafeCheckpointError):  # a/ stays refused, from the cache too
        safe_load_url(f'{base}/a/model.pth')
    assert not marker.exists()


def test_trust_by_content_hash(tmp_path, no_trust, served, monkeypatch):
    folder, base = served
    marker = tmp_path / 'payload_ran'
    torch.save(dict(extra=WritesMarker(str(marker))), folder / 'mine.pth')
    local = tmp_path / 'mine.pth'
    local.write_bytes((folder / 'mine.pth').read_bytes())
    digest = compat.file_sha256(str(local))
    monkeypatch.setenv(compat.TRUSTED_CHECKPOINTS_ENV, 'sha256:' + '0' * 64)  # another file's
    with pytest.raises(UnsafeCheckpointError):
        safe_load_file(local)
    with pytest.raises(UnsafeCheckpointError):
        safe_load_url(f'{base}/mine.pth')
    assert not marker.exists()
    monkeypatch.setenv(compat.TRUSTED_CHECKPOINTS_ENV, f'sha256:{digest.upper()}')
    safe_load_url(f'{base}/mine.pth')  # the download's content has the trusted hash
    assert marker.exists()
    marker.unlink()
    safe_load_file(local)
    assert marker.exists()


def test_colon_separated_trust_list_warns(tmp_path, no_trust, monkeypatch):
    """The old ':'-separated form is one entry now; say so instead of silently trusting nothing."""
    path = tmp_path / 'w.pth'
    torch.save(weights(), path)
    monkeypatch.setenv(compat.TRUSTED_CHECKPOINTS_ENV, f'{tmp_path}/a.pth:{tmp_path}/b.pth')
    with pytest.warns(UserWarning, match='separated by whitespace'):
        safe_load_file(path)


# ----------------------------------------------------------------------------------------------
# np.float in mmdet's ytviseval, pkg_resources / mmdet:: configs
# ----------------------------------------------------------------------------------------------

def video_sample(video_id: int, predicted_masks: np.ndarray, gt_masks: np.ndarray,
                 img_id_start: int) -> TrackDataSample:
    """One 2-frame video with one GT instance per frame, as mmdet's YouTubeVISMetric expects."""
    import pycocotools.mask as mask_utils
    frames = []
    for frame_id in range(2):
        rle = mask_utils.encode(np.asfortranarray(gt_masks[frame_id].astype(np.uint8)))
        frame = DetDataSample(metainfo=dict(
            video_id=video_id, img_id=img_id_start + frame_id, frame_id=frame_id,
            ori_shape=(8, 8), ori_video_length=2,
            instances=[dict(bbox=[0., 0., 4., 4.], bbox_label=0, instance_id=video_id * 10,
                            mask=rle, ignore_flag=0)]))
        frame.pred_track_instances = InstanceData(
            bboxes=torch.tensor([[0., 0., 4., 4.]]), scores=torch.tensor([0.9]),
            labels=torch.tensor([0]), instances_id=torch.tensor([1]),
            masks=torch.from_numpy(predicted_masks[frame_id][None]))
        frames.append(frame)
    sample = TrackDataSample()
    sample.video_data_samples = frames
    return sample


def test_mmdet_youtube_vis_metric_runs_with_np_float_fix():
    assert not hasattr(np, 'float')  # numpy itself keeps the removal
    square = np.zeros((2, 8, 8), bool)
    square[:, :4, :4] = True
    elsewhere = np.zeros((2, 8, 8), bool)
    elsewhere[:, 5:, 5:] = True
    evaluator = Evaluator(YouTubeVISMetric(metric_items=['mAP', 'mAP_50']))
    evaluator.dataset_meta = dict(classes=('thing', ))
    evaluator.process([video_sample(1, square, square, 0)])
    evaluator.process([video_sample(2, elsewhere, square, 2)])
    metrics = evaluator.evaluate(2)
    # one of the two videos found at IoU 1, the other missed: precision 1 up to recall 0.5
    assert metrics['youtube_vis/segm_mAP'] == pytest.approx(0.505, abs=1e-3)
    assert metrics['youtube_vis/segm_mAP_50'] == pytest.approx(0.505, abs=1e-3)


MMDET_BASE_CONFIG = textwrap.dedent("""
    _base_ = ['mmdet::_base_/default_runtime.py']
    train_cfg = dict(type='IterBasedTrainLoop', max_iters=3)
""")


def test_mmdet_base_inheritance(tmp_path):
    path = tmp_path / 'inherits_mmdet.py'
    path.write_text(MMDET_BASE_CONFIG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        compat.apply_compat_fixes()  # pytest resets warning filters per test; reinstall ours
        cfg = Config.fromfile(str(path))
    assert cfg.default_scope == 'mmdet'
    assert cfg.default_hooks.checkpoint.type == 'CheckpointHook'
    assert cfg.train_cfg.max_iters == 3
    assert not [w for w in caught if 'pkg_resources' in str(w.message)]


def test_mmdet_base_inheritance_without_pkg_resources(tmp_path, monkeypatch):
    """setuptools >= 82 ships no pkg_resources: the importlib lookup takes over."""
    import mmengine.config.config as config_module
    import mmengine.utils as mmengine_utils
    import mmengine.utils.package_utils as package_utils
    original_path = package_utils.get_installed_path('mmdet')
    for module in (package_utils, mmengine_utils, config_module):
        for name in ('is_installed', 'get_installed_path'):
            monkeypatch.setattr(module, name, getattr(module, name))
    monkeypatch.setitem(sys.modules, 'pkg_resources', None)  # makes `import pkg_resources` fail
    with pytest.raises(ImportError):
        package_utils.get_installed_path('mmdet')  # mmengine's own lookup now breaks

    compat.apply_compat_fixes()
    assert config_module.get_installed_path('mmdet') == original_path
    assert config_module.is_installed('mmdet') and not config_module.is_installed('no_such_pkg')
    path = tmp_path / 'inherits_mmdet.py'
    path.write_text(MMDET_BASE_CONFIG)
    assert Config.fromfile(str(path)).default_scope == 'mmdet'


# ----------------------------------------------------------------------------------------------
# Deprecation noise, idempotence
# ----------------------------------------------------------------------------------------------

NOISE_SCRIPT = textwrap.dedent("""
    import logging, os, sys, warnings
    import ctvis
    import torch
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_wrapper
    from mmengine.config import Config
    from mmengine.fileio import FileClient
    from mmengine.logging import MMLogger, print_log
    from mmengine.runner.amp import autocast

    MMLogger.get_instance('noise_check', logger_name='noise_check')
    Config.fromfile(sys.argv[1])                      # pkg_resources import + reload
    with autocast(device_type='cuda', enabled=False):  # torch.get_autocast_gpu_dtype()
        pass
    exec(compile('GradScaler()', amp_wrapper.__file__, 'exec'), vars(amp_wrapper))
    FileClient.infer_client(None, '.')                # mmengine's own deprecated FileClient
    import numpy as np, pycocotools.mask as mask_utils
    mask_utils.decode(mask_utils.encode(np.asfortranarray(np.ones((4, 4), np.uint8))))
    from mmdet.models.layers.transformer import DeformableDetrTransformerEncoder as Encoder
    points = Encoder.get_encoder_reference_points(torch.tensor([[2, 3]]), torch.ones(1, 1, 2),
                                                  'cpu')
    expected = torch.tensor([[0.5, 0.5], [1.5, 0.5], [2.5, 0.5], [0.5, 1.5], [1.5, 1.5],
                             [2.5, 1.5]]) / torch.tensor([3.0, 2.0])  # (x, y), 'ij' order
    assert torch.allclose(points[0, :, 0], expected)
    torch.get_autocast_gpu_dtype()                    # controls: a user's own deprecated calls
    torch.meshgrid(torch.arange(2), torch.arange(2))
    print_log('control: a real warning', logger='current', level=logging.WARNING)
""")


def test_known_noise_is_silenced_and_the_rest_still_shows(tmp_path):
    config = tmp_path / 'inherits_mmdet.py'
    config.write_text(MMDET_BASE_CONFIG)
    script = tmp_path / 'test_noise_script.py'
    script.write_text(NOISE_SCRIPT)
    result = subprocess.run([sys.executable, '-W', 'always', str(script), str(config)],
                            capture_output=True, text=True, cwd=str(tmp_path), timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for noise in ('pkg_resources is deprecated', '`torch.jit.script` is deprecated',
                  '`torch.cuda.amp.GradScaler(args...)` is deprecated',
                  '"FileClient" will be deprecated', '"HardDiskBackend" is the alias',
                  "__array__ implementation doesn't accept a copy keyword"):
        assert noise not in output
    # the user's own deprecated calls, the unrelated GradScaler warning and real log lines remain
    assert output.count('torch.get_autocast_gpu_dtype() is deprecated') == 1
    assert output.count('torch.meshgrid: in an upcoming release') == 1
    # torch warns about meshgrid once per process: here only at the user's call, made last
    assert (output.index('torch.meshgrid: in an upcoming release')
            > output.index('torch.get_autocast_gpu_dtype() is deprecated'))
    assert 'CUDA is not available.  Disabling' in output
    assert 'control: a real warning' in output


_CPU_DISTRIBUTED_CHECK = textwrap.dedent("""
    import gc, os, sys
    import pytest, torch, torch.distributed as dist, torch.nn as nn
    import mmengine.dist.utils as dist_utils
    from test_compat import TinyRegressor, make_runner  # imports ctvis, which applies the fixes
    from ctvis.utils import run_and_release_process_group

    with pytest.raises(AttributeError, match='_cuda_setDevice'):
        torch.cuda.set_device(0)  # what mmengine's _init_dist_pytorch would hit
    dist_utils.torch.cuda.set_device(0)  # ctvis: a no-op without CUDA

    def gloo_threads():
        names = [open(f'/proc/self/task/{task}/comm').read().strip()
                 for task in os.listdir('/proc/self/task')]
        return [name for name in names if 'gloo' in name]

    kept = []

    def train(name, keep_runner=False):  # what tools/train.py runs, as torchrun's rank 0 of 1
        runner = make_runner(os.path.join(sys.argv[1], name), 2, name, launcher='pytorch',
                             env_cfg=dict(dist_cfg=dict(backend='gloo', timeout=60)))
        assert dist.get_backend() == 'gloo'
        with pytest.raises(ValueError, match='device_ids'):  # plain torch DDP refuses CPU + ids
            nn.parallel.DistributedDataParallel(TinyRegressor(), device_ids=[0])
        assert runner.model.device_ids is None  # the Runner's MMDistributedDataParallel
        runner.train()
        dist.broadcast_object_list([{'AP': 1.0}], src=0)  # how the evaluator ends a test run
        assert gloo_threads()
        if keep_runner:
            kept.append(runner)

    run_and_release_process_group(lambda: train('released'))
    assert not dist.is_initialized()
    assert gloo_threads() == [], gloo_threads()  # joined: none left to abort the exit
    print('cpu distributed pieces: ok', flush=True)

    run_and_release_process_group(lambda: train('kept', keep_runner=True))
    assert not dist.is_initialized() and gloo_threads()  # alive through `kept`, as the log says
    kept.clear()
    gc.collect()
    assert gloo_threads() == []  # so this process, too, exits without gloo threads
""")


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the CPU-only code paths')
def test_cpu_only_distributed_pieces(loopback_gloo, tmp_path):
    """mmengine's launcher device call and the Runner's DDP wrapping work without CUDA, and the
    tools' process group, gloo threads included, is gone before the interpreter exits.

    In a fresh process (a process group is process-wide state), bounded in time.
    """
    result = subprocess.run([sys.executable, '-c', _CPU_DISTRIBUTED_CHECK, str(tmp_path)],
                            env=loopback_env(PYTHONPATH=osp.dirname(__file__), RANK='0',
                                             LOCAL_RANK='0', WORLD_SIZE='1',
                                             MASTER_PORT=str(free_port())),
                            capture_output=True, text=True, timeout=GLOO_PROBE_TIMEOUT_S)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert 'cpu distributed pieces: ok' in result.stdout
    assert 'the process group is still referenced' in result.stdout + result.stderr


def test_apply_compat_fixes_is_idempotent():
    import mmengine.runner.checkpoint as checkpoint_module
    from mmengine.logging.logger import FilterDuplicateWarning
    import mmdet.evaluation.functional.ytviseval as ytviseval
    compat.apply_compat_fixes()
    state = (checkpoint_module.torch, checkpoint_module.load_url, ytviseval.np,
             FilterDuplicateWarning.filter, list(warnings.filters))
    compat.apply_compat_fixes()
    assert checkpoint_module.torch is state[0] and checkpoint_module.load_url is state[1]
    assert ytviseval.np is state[2] and FilterDuplicateWarning.filter is state[3]
    assert warnings.filters == state[4]
    assert checkpoint_module.torch.load is compat.safe_torch_load
    assert checkpoint_module.torch.Tensor is torch.Tensor  # everything else is torch itself
