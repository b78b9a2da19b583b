"""Safe checkpoint loading (ctvis.utils.checkpoint, checkpoint_loaders, checkpoint_trust) on the
real torch / mmengine of the pinned stack: Runner checkpoints load and resume, files that carry
code are refused, trusted files load in full, damaged files are named."""
import collections
import copy
import functools
import http.server
import os
import os.path as osp
import pickle
import re
import threading
import zipfile

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner, load_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
from torch.utils.data import Dataset

from ctvis.utils import checkpoint_trust
from ctvis.utils.checkpoint import (CorruptCheckpointError, UnsafeCheckpointError,
                                    checkpoint_globals_allowed, checkpoint_problem,
                                    checkpoint_safe_globals, safe_load_file, safe_load_url,
                                    url_cache_file)
from ctvis.utils.checkpoint_loaders import safe_checkpoint_loading
from ctvis.utils.checkpoint_trust import TRUSTED_CHECKPOINTS_ENV, file_sha256, trust_checkpoint


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
    runner = make_runner(str(root / 'run'), 6, 'checkpoint_run', hooks=[CrashAfterIteration(4)])
    with pytest.raises(KeyboardInterrupt, match='simulated crash'):
        runner.train()
    reference = make_runner(str(root / 'reference'), 6, 'checkpoint_reference')
    reference.train()
    return dict(work_dir=str(root / 'run'), checkpoint=str(root / 'run' / 'iter_4.pth'),
                final_weights=copy.deepcopy(runner.model.state_dict()),
                reference_weights=copy.deepcopy(reference.model.state_dict()))


def test_runner_checkpoint_needs_the_allow_list(trained_run):
    """torch's default weights-only loader refuses mmengine's own checkpoints (the bug fixed), and
    so does mmengine's load_checkpoint outside safe_checkpoint_loading: importing ctvis (conftest
    does) changes nothing."""
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(trained_run['checkpoint'])
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        load_checkpoint(TinyRegressor(), trained_run['checkpoint'], map_location='cpu')
    with checkpoint_globals_allowed():  # mmengine's bare torch.load, allow-list only
        assert torch.load(trained_run['checkpoint'])['meta']['iter'] == 4


def test_runner_checkpoint_loads_with_load_checkpoint(trained_run):
    model = TinyRegressor()
    nn.init.zeros_(model.linear.weight)
    with safe_checkpoint_loading():
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
    runner = make_runner(trained_run['work_dir'], 6, 'checkpoint_resume', resume=True,
                         hooks=[recorder])
    with safe_checkpoint_loading():
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


class ParameterWithCodeHook:
    """A parameter whose pickled backward hook is a shell command."""

    def __reduce__(self):
        hooks = collections.OrderedDict([(0, os.system)])
        return torch._utils._rebuild_parameter, (torch.zeros(2), False, hooks)


@pytest.fixture
def no_trust(monkeypatch):
    monkeypatch.setattr(checkpoint_trust, '_trusted_sources', set())
    monkeypatch.delenv(TRUSTED_CHECKPOINTS_ENV, raising=False)


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
    assert TRUSTED_CHECKPOINTS_ENV in message and 'trust_checkpoint' in message
    assert isinstance(error.value, pickle.UnpicklingError)
    with safe_checkpoint_loading():
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
    monkeypatch.setenv(TRUSTED_CHECKPOINTS_ENV, str(tmp_path))
    safe_load_file(path)
    assert marker.exists()

    marker.unlink()
    monkeypatch.delenv(TRUSTED_CHECKPOINTS_ENV)
    with pytest.raises(UnsafeCheckpointError):
        safe_load_file(path)
    trust_checkpoint(str(path))
    safe_load_file(path)
    assert marker.exists()


@pytest.mark.parametrize('payload, refused', [
    (ReachesForAttribute(), "getattr(HistoryBuffer, 'register_statistics')"),
    (ParameterWithCodeHook(), 'posix.system'),
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
            with pytest.raises(CorruptCheckpointError) as error, safe_checkpoint_loading():
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
    with pytest.raises(CorruptCheckpointError) as error, safe_checkpoint_loading():
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


def test_http_checkpoints_go_through_the_safe_loader(tmp_path, no_trust, served):
    """mmengine's http(s) scheme (torch.hub would unpickle with weights_only=False)."""
    folder, base = served
    torch.save(dict(state_dict=weights()), folder / 'good.pth')
    marker = tmp_path / 'payload_ran'
    torch.save(dict(state_dict=weights(), extra=WritesMarker(str(marker))), folder / 'evil.pth')
    with safe_checkpoint_loading():
        good = _load_checkpoint(f'{base}/good.pth', map_location='cpu')
        assert torch.equal(good['state_dict']['linear.weight'], torch.ones(1, 3))
        with pytest.raises(UnsafeCheckpointError, match=r'evil\.pth.*posix\.system'):
            _load_checkpoint(f'{base}/evil.pth', map_location='cpu')
    assert not marker.exists()
    assert osp.isfile(url_cache_file(f'{base}/evil.pth'))


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
    monkeypatch.setenv(TRUSTED_CHECKPOINTS_ENV, f'{tmp_path}/elsewhere\n{base}/b/model.pth')
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
    digest = file_sha256(str(local))
    monkeypatch.setenv(TRUSTED_CHECKPOINTS_ENV, 'sha256:' + '0' * 64)  # another file's
    with pytest.raises(UnsafeCheckpointError):
        safe_load_file(local)
    with pytest.raises(UnsafeCheckpointError):
        safe_load_url(f'{base}/mine.pth')
    assert not marker.exists()
    monkeypatch.setenv(TRUSTED_CHECKPOINTS_ENV, f'sha256:{digest.upper()}')
    safe_load_url(f'{base}/mine.pth')  # the download's content has the trusted hash
    assert marker.exists()
    marker.unlink()
    safe_load_file(local)
    assert marker.exists()


def test_colon_separated_trust_list_warns(tmp_path, no_trust, monkeypatch):
    """The old ':'-separated form is one entry now; say so instead of silently trusting nothing."""
    path = tmp_path / 'w.pth'
    torch.save(weights(), path)
    monkeypatch.setenv(TRUSTED_CHECKPOINTS_ENV, f'{tmp_path}/a.pth:{tmp_path}/b.pth')
    with pytest.warns(UserWarning, match='separated by whitespace'):
        safe_load_file(path)




# ----------------------------------------------------------------------------------------------
# safe_checkpoint_loading: mmengine's schemes, undone on exit
# ----------------------------------------------------------------------------------------------

def test_safe_checkpoint_loading_is_undone_on_exit_and_nests():
    schemes = CheckpointLoader._schemes.copy()
    own = (collections.ChainMap, 'collections.ChainMap')  # a user's own allow-list entry
    torch.serialization.add_safe_globals([own])
    try:
        with safe_checkpoint_loading():
            inside = CheckpointLoader._schemes.copy()
            assert CheckpointLoader._get_checkpoint_loader('/x.pth').__module__ == (
                'ctvis.utils.checkpoint_loaders')
            with safe_checkpoint_loading(), checkpoint_globals_allowed():
                assert set(checkpoint_safe_globals()) <= set(
                    torch.serialization.get_safe_globals())
            # the inner exit leaves the outer context whole
            assert CheckpointLoader._schemes == inside
            assert set(checkpoint_safe_globals()) <= set(torch.serialization.get_safe_globals())
            with pytest.raises(RuntimeError, match='inside'):  # an error unwinds it too
                with safe_checkpoint_loading():
                    raise RuntimeError('inside')
            assert CheckpointLoader._schemes == inside
        assert CheckpointLoader._schemes == schemes
        remaining = set(torch.serialization.get_safe_globals())
        assert own in remaining and not remaining & set(checkpoint_safe_globals())
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals([g for g in remaining if g != own])


def test_every_url_scheme_goes_through_the_safe_loader(tmp_path, no_trust, served, monkeypatch):
    """torchvision://, open-mmlab:// (URL or file under mmengine's home) and mmcls:// resolve as
    in mmengine and load through the safe loaders."""
    import ctvis.utils.checkpoint_loaders as loaders
    folder, base = served
    marker = tmp_path / 'payload_ran'
    backbone = {f'backbone.{key}': value for key, value in weights().items()}
    torch.save(dict(state_dict=backbone), folder / 'good.pth')
    torch.save(dict(state_dict=weights(), extra=WritesMarker(str(marker))), folder / 'evil.pth')
    home = tmp_path / 'mmengine_home'
    (home / 'local').mkdir(parents=True)
    torch.save(dict(state_dict=weights(), extra=WritesMarker(str(marker))),
               home / 'local' / 'evil.pth')
    monkeypatch.setenv('MMENGINE_HOME', str(home))
    urls = dict(good=f'{base}/good.pth', evil=f'{base}/evil.pth', local='local/evil.pth')
    for table in ('get_torchvision_models', 'get_external_models', 'get_mmcls_models'):
        monkeypatch.setattr(loaders, table, lambda: urls)
    with safe_checkpoint_loading():
        for scheme in ('torchvision', 'open-mmlab', 'mmcls'):
            loaded = _load_checkpoint(f'{scheme}://good', map_location='cpu')
            # mmengine renames mmcls keys
            key = 'linear.weight' if scheme == 'mmcls' else 'backbone.linear.weight'
            assert torch.equal(loaded['state_dict'][key], torch.ones(1, 3))
            with pytest.raises(UnsafeCheckpointError, match=r'evil\.pth.*posix\.system'):
                _load_checkpoint(f'{scheme}://evil', map_location='cpu')
        with pytest.raises(UnsafeCheckpointError, match=re.escape(str(home / 'local'))):
            _load_checkpoint('openmmlab://local', map_location='cpu')
    assert not marker.exists()


def test_weights_problem_allows_missing_batch_norm_counters_only():
    """Older checkpoints lack ``num_batches_tracked`` (torch fills it in); any other key missing
    leaves a weight at its random initialisation."""
    from ctvis.utils.checkpoint import weights_problem
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    state = {key: value for key, value in model.state_dict().items()
             if not key.endswith('num_batches_tracked')}
    assert weights_problem(model, state) is None
    del state['1.running_var']
    assert 'not in it' in weights_problem(model, state)
