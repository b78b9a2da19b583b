"""Shared fixtures: tiny CTVIS models and tiny synthetic clips, all deterministic."""
import os

# The suite checks the CPU paths and assumes no GPU (mixed precision falls back to fp32, tool
# runs train on the CPU, tensors compared across runs live on the CPU): on a machine with one it
# hides CUDA from the tests and the tools they start, before torch looks for it.
# CTVIS_TESTS_SEE_CUDA=1 keeps it visible.
if os.environ.get('CTVIS_TESTS_SEE_CUDA') != '1':
    os.environ['CUDA_VISIBLE_DEVICES'] = ''

import contextlib
import importlib.util
import json
import logging
import os.path as osp
import signal
import socket
import subprocess
import sys
import textwrap
from collections import Counter
from typing import Iterator, List

import pytest
import torch
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch.utils._python_dispatch import TorchDispatchMode

import ctvis  # noqa: F401
from ctvis.datasets.synthetic.annotations import random_ytvis_set
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample, TrackDataSample

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
TESTS = osp.join(REPO, 'tests')
# What the official CTVIS code computed on fixed weights and frames (see its README)
PARITY = osp.join(REPO, 'tests', 'data', 'parity')
# Time allowed to a process group that should form at once on 127.0.0.1
GLOO_PROBE_TIMEOUT_S = 120


class OpCounter(TorchDispatchMode):
    """Counts the operators that reach the dispatcher, by name without overload
    (``ctvis::ms_deform_attn``, ``mkldnn::_linear_pointwise``); ``inputs`` keeps the arguments of
    the operators named in ``keep``."""

    def __init__(self, keep=()):
        super().__init__()
        self.calls, self.keep, self.inputs = Counter(), set(keep), []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.name().split('.')[0]
        self.calls[name] += 1
        if name in self.keep:
            self.inputs.append((func, args))
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def logged_messages() -> Iterator[List[str]]:
    """The messages logged to mmengine's current logger inside the block."""
    messages: List[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def load_module(path: str, name: str):
    """Import a script (a tool, a vendored file) as a module, to call its functions in-process."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def benchmark():
    """tools/analysis_tools/benchmark_online_inference.py as a module."""
    return load_module(osp.join(REPO, 'tools', 'analysis_tools',
                                'benchmark_online_inference.py'), 'benchmark_online_inference')


def pythonpath_for(test_file: str) -> str:
    """PYTHONPATH for a subprocess that imports a test module (``custom_imports`` of a test
    config): the module's folder, tests/ (for conftest) and the repository."""
    return os.pathsep.join([osp.dirname(osp.abspath(test_file)), TESTS, REPO])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def loopback_env(**env: str) -> dict:
    """The environment for processes that form a gloo group on this machine only.

    gloo binds to the address the hostname resolves to unless told otherwise; pinning the
    loopback interface keeps the tests independent of the machine's host and DNS settings.
    """
    return dict(os.environ, GLOO_SOCKET_IFNAME='lo', MASTER_ADDR='127.0.0.1', **env)


_GLOO_PROBE = textwrap.dedent("""
    import datetime, sys, torch, torch.distributed as dist
    rank, port = int(sys.argv[1]), sys.argv[2]
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=2, timeout=datetime.timedelta(seconds=60))
    value = torch.tensor([rank + 1.0])
    dist.all_reduce(value)
    assert value.item() == 3.0, value
    dist.destroy_process_group()
""")


@pytest.fixture(scope='session')
def loopback_gloo() -> None:
    """Skip multi-process tests where two processes cannot form a gloo group over 127.0.0.1.

    A sandbox without a working loopback network cannot run them; the probe tells that apart
    from a ctvis failure in two minutes at most instead of letting the tests hang.
    """
    port = str(free_port())
    probes = [subprocess.Popen([sys.executable, '-c', _GLOO_PROBE, str(rank), port],
                               env=loopback_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    failures = []
    for probe in probes:
        try:
            output, _ = probe.communicate(timeout=GLOO_PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for other in probes:
                other.kill()
            pytest.skip(f'two gloo processes did not connect over 127.0.0.1 within '
                        f'{GLOO_PROBE_TIMEOUT_S} s on this machine')
        if probe.returncode:
            failures.append(output.strip()[-600:])
    if failures:
        pytest.skip('two gloo processes cannot form a group over 127.0.0.1 on this machine: '
                    + ' | '.join(failures))


def run_process_group(args: list, cwd: str, env: dict,
                      timeout: int) -> subprocess.CompletedProcess:
    """``subprocess.run`` that, on a timeout, kills every process the command started (a
    launcher's workers too, which ``subprocess.run`` would leave running), then raises."""
    with subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def run_in_repo(args: list, data_root: str, timeout: int = 300,
                **env: str) -> subprocess.CompletedProcess:
    """Run a tool from the repository root on the toy data at ``data_root`` ($CTVIS_TOY_DATA)."""
    environment = loopback_env(CTVIS_TOY_DATA=data_root + '/', **env)
    return run_process_group(args, REPO, environment, timeout)


# The toy set the tool tests train and evaluate on (read-only: tests copy what they edit)
SMALL_TOY_VAL_VIDEOS = 3


@pytest.fixture(scope='session')
def small_toy_root(tmp_path_factory) -> str:
    """4 training videos and 3 validation videos of 6 frames, 64x80, made by the toy tool."""
    root = str(tmp_path_factory.mktemp('small_toy_vis'))
    result = subprocess.run([sys.executable, 'tools/misc/make_toy_vis.py', root, '--videos', '4',
                             '--frames', '6', '--val-videos', str(SMALL_TOY_VAL_VIDEOS), '--size',
                             '64', '80', '--seed', '3'], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return root


def tiny_model_cfg(num_classes: int = 3, num_queries: int = 6, **contrastive) -> Config:
    """The R50 recipe shrunk to a few thousand parameters per layer (ResNet-18, width 32)."""
    cfg = Config.fromfile(osp.join(REPO, 'configs/_base_/models/ctvis_r50.py')).model
    cfg.backbone.update(depth=18, base_channels=16, norm_cfg=dict(type='BN', requires_grad=True),
                        norm_eval=False)
    head = cfg.track_head
    head.update(in_channels=[16, 32, 64, 128], feat_channels=32, out_channels=32,
                num_things_classes=num_classes, num_queries=num_queries)
    head.pixel_decoder.encoder.num_layers = 1
    head.pixel_decoder.encoder.layer_cfg.self_attn_cfg.update(embed_dims=32, num_heads=2)
    head.pixel_decoder.encoder.layer_cfg.ffn_cfg.update(embed_dims=32, feedforward_channels=64)
    head.pixel_decoder.positional_encoding.num_feats = 16
    head.positional_encoding.num_feats = 16
    head.transformer_decoder.num_layers = 2
    for attn in ('self_attn_cfg', 'cross_attn_cfg'):
        head.transformer_decoder.layer_cfg[attn].update(embed_dims=32, num_heads=2)
    head.transformer_decoder.layer_cfg.ffn_cfg.update(embed_dims=32, feedforward_channels=64)
    head.loss_cls.class_weight = [1.0] * num_classes + [0.1]
    head.train_cfg.num_points = 256
    cfg.tracker.num_classes = num_classes
    cfg.contrastive_loss.update(contrastive)
    cfg.test_cfg = dict(max_per_video=num_classes)
    return cfg


def build_tiny_model(seed: int = 0, **kwargs) -> torch.nn.Module:
    init_default_scope('mmdet')
    torch.manual_seed(seed)
    model = MODELS.build(tiny_model_cfg(**kwargs))
    model.init_weights()
    return model


def frame_sample(t: int, length: int, size=(64, 64), ori=(96, 96)) -> TrackDataSample:
    """The metainfo-only sample of frame ``t`` of a ``length``-frame video (id 3) for predict()."""
    frame = DetDataSample(metainfo=dict(frame_id=t, ori_video_length=length, video_id=3,
                                        img_shape=size, ori_shape=ori, batch_input_shape=size))
    sample = TrackDataSample()
    sample.video_data_samples = [frame]
    return sample


@pytest.fixture
def tiny_model():
    return build_tiny_model()


# ---------------------------------------------------------------- YouTube-VIS results
def jsonable(results: List[dict]) -> List[dict]:
    """``results`` with bytes RLE counts decoded (for JSON files)."""
    return [
        dict(r, segmentations=[
            dict(s, counts=s['counts'].decode())
            if s is not None and isinstance(s['counts'], bytes) else s
            for s in r['segmentations']
        ]) for r in results
    ]


def track_samples(gt: dict, results: List[dict]) -> List[TrackDataSample]:
    """Pack results the way the online model emits them: one complete
    TrackDataSample per video (frames' InstanceData: masks as RLE with bytes
    counts, contiguous labels, float32 scores), preceded by an intermediate
    one that must be ignored."""
    category_ids = sorted(c['id'] for c in gt['categories'])
    lengths = {v['id']: len(v['file_names']) for v in gt['videos']}
    samples = []
    for video_id, length in lengths.items():
        entries = [r for r in results if r['video_id'] == video_id]
        intermediate = TrackDataSample(metainfo=dict(video_id=video_id))
        intermediate.video_data_samples = [DetDataSample()]
        samples.append(intermediate)
        frames = []
        for t in range(length):
            frame = DetDataSample(metainfo=dict(video_id=video_id,
                                                frame_id=t))
            masks = []
            for entry in entries:
                rle = entry['segmentations'][t]
                if rle is not None and isinstance(rle['counts'], str):
                    rle = dict(rle, counts=rle['counts'].encode())
                masks.append(rle)
            frame.pred_track_instances = InstanceData(
                masks=masks,
                labels=torch.tensor(
                    [category_ids.index(e['category_id']) for e in entries],
                    dtype=torch.long),
                scores=torch.tensor([e['score'] for e in entries],
                                    dtype=torch.float32),
                instances_id=torch.arange(len(entries)))
            frames.append(frame)
        sample = TrackDataSample(
            metainfo=dict(video_id=video_id, video_complete=True))
        sample.video_data_samples = frames
        samples.append(sample)
    return samples


@pytest.fixture
def gt_file(tmp_path):
    """The random YouTube-VIS set written to gt.json: (path, ground truth, JSON results)."""
    gt, results = random_ytvis_set()
    path = tmp_path / 'gt.json'
    path.write_text(json.dumps(gt))
    return str(path), gt, jsonable(results)
