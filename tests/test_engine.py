"""ctvis.engine: the CTVIS optimizer constructor's per-parameter rules, mixed precision that
falls back to fp32 without CUDA (one log line per run, fp32 results, training works), and the
test-time drawing of video predictions with one colour per track."""
import logging
import math
import os.path as osp
import uuid
from types import SimpleNamespace
from typing import Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import BaseMetric, Evaluator
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.optim import AmpOptimWrapper, OptimWrapper, build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import DataLoader

import ctvis.engine.amp as amp_module
from conftest import REPO, build_tiny_model, square_clip
from ctvis.engine import CTVISOptimWrapperConstructor, VideoMaskVisualizationHook, track_color
from ctvis.engine.amp import FALLBACK_MESSAGE
from ctvis.models import VideoPrediction
from mmdet.structures import DetDataSample, TrackDataSample

SCHEDULE = osp.join(REPO, 'configs', '_base_', 'schedules', 'ctvis_16k.py')
FALLBACK = FALLBACK_MESSAGE.format('cpu')


def zoo_optim_wrapper_cfg() -> dict:
    return Config.fromfile(SCHEDULE).optim_wrapper.to_dict()


# ----------------------------------------------------------------------------- constructor
class ToyModel(nn.Module):
    """Every case of the rules: backbone conv / LayerNorm / Swin table / frozen BN, head
    Embedding / Linear / GroupNorm / pixel-decoder level encoding, a module reused under two
    names, a weight tied between two modules, and a parameter of the root module."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.conv = nn.Conv2d(3, 4, 1)
        self.backbone.norm0 = nn.LayerNorm(4)
        self.backbone.attn = nn.Module()
        self.backbone.attn.relative_position_bias_table = nn.Parameter(torch.zeros(3, 2))
        self.backbone.bn = nn.BatchNorm2d(4).requires_grad_(False)
        self.head = nn.Module()
        self.head.query_feat = nn.Embedding(5, 4)
        self.head.fc = nn.Linear(4, 4)
        self.head.gn = nn.GroupNorm(2, 4)
        self.head.pixel_decoder = nn.Module()
        self.head.pixel_decoder.level_encoding = nn.Embedding(3, 4)
        self.head.reused = self.head.fc
        self.head.tied = nn.Linear(4, 4)
        self.head.tied.weight = self.head.fc.weight
        self.scale = nn.Parameter(torch.ones(1))


ZOO_TOY_SETTINGS = {  # (lr, weight decay) under the zoo's paramwise_cfg, base 1e-4 / 0.05
    'backbone.conv.weight': (1e-5, 0.05),
    'backbone.conv.bias': (1e-5, 0.05),
    'backbone.norm0.weight': (1e-5, 0.0),
    'backbone.norm0.bias': (1e-5, 0.0),
    'backbone.attn.relative_position_bias_table': (1e-5, 0.0),
    'head.query_feat.weight': (1e-4, 0.0),
    'head.fc.weight': (1e-4, 0.05),
    'head.fc.bias': (1e-4, 0.05),
    'head.tied.bias': (1e-4, 0.05),
    'head.gn.weight': (1e-4, 0.0),
    'head.gn.bias': (1e-4, 0.0),
    'head.pixel_decoder.level_encoding.weight': (1e-4, 0.05),
    'scale': (1e-4, 0.05),
}


def settings_in(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    """Parameter name -> (lr, weight decay) as the optimizer holds them; each at most once."""
    names = {id(param): name for name, param in model.named_parameters()}
    settings = {}
    for group in optimizer.param_groups:
        for param in group['params']:
            name = names[id(param)]
            assert name not in settings, f'{name} is in two param groups'
            settings[name] = (group['lr'], group['weight_decay'])
    return settings


def test_constructor_applies_every_rule_per_parameter():
    init_default_scope('mmdet')
    model = ToyModel()
    optim_wrapper = build_optim_wrapper(model, zoo_optim_wrapper_cfg())
    optimizer = optim_wrapper.optimizer
    assert type(optimizer) is torch.optim.AdamW
    assert (optimizer.defaults['eps'], optimizer.defaults['betas']) == (1e-8, (0.9, 0.999))
    settings = settings_in(optimizer, model)
    assert settings.keys() == ZOO_TOY_SETTINGS.keys()
    for name, setting in ZOO_TOY_SETTINGS.items():
        assert settings[name] == pytest.approx(setting), name
    # Groups by setting, base settings first (what mmengine logs as the lr).
    assert [g['lr'] for g in optimizer.param_groups] == pytest.approx([1e-4, 1e-4, 1e-5, 1e-5])
    assert [g['weight_decay'] for g in optimizer.param_groups] == [0.05, 0.0, 0.05, 0.0]
    assert optim_wrapper.clip_grad_kwargs == dict(max_norm=0.01, norm_type=2)


def test_constructor_defaults_and_errors():
    model = ToyModel()
    plain = CTVISOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=0.1,
                                                             weight_decay=0.2)))
    assert set(plain.param_settings(model).values()) == {(0.1, 0.2)}  # no rule without config
    assert len(plain.param_settings(model)) == len(ZOO_TOY_SETTINGS)  # frozen BN left out
    optimizer = dict(type='AdamW', lr=0.1, weight_decay=0.2)
    with pytest.raises(ValueError, match=r"unsupported paramwise_cfg keys \['custom_keys'\]"):
        CTVISOptimWrapperConstructor(dict(optimizer=optimizer),
                                     dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
    with pytest.raises(TypeError, match='no_decay_keys must be a sequence'):
        CTVISOptimWrapperConstructor(dict(optimizer=optimizer), dict(no_decay_keys='table'))
    with pytest.raises(ValueError, match='numeric weight_decay'):
        CTVISOptimWrapperConstructor(dict(optimizer=dict(type='AdamW', lr=0.1)))
    with pytest.raises(ValueError, match='has no parameter that requires a gradient'):
        plain.param_groups(nn.BatchNorm2d(2).requires_grad_(False))


# ----------------------------------------------------------------------------- mixed precision
@pytest.fixture
def fresh_logger():
    """A new current MMLogger (as a new Runner makes) whose records are collected."""
    logger = MMLogger.get_instance(f'test_engine_{uuid.uuid4().hex}')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def fallback_lines(records) -> int:
    return sum(FALLBACK in record.getMessage() for record in records)


def test_cpu_falls_back_to_fp32_with_one_log_line(fresh_logger):
    init_default_scope('mmdet')
    assert not torch.cuda.is_available(), 'this test checks the CPU fallback'
    for _ in range(2):  # a second wrapper of the same run adds no line
        optim_wrapper = build_optim_wrapper(ToyModel(), zoo_optim_wrapper_cfg())
        assert type(optim_wrapper) is OptimWrapper
        assert optim_wrapper.clip_grad_kwargs == dict(max_norm=0.01, norm_type=2)
    assert fallback_lines(fresh_logger) == 1
    assert all(record.levelno == logging.WARNING for record in fresh_logger
               if FALLBACK in record.getMessage())


@pytest.mark.filterwarnings('ignore:torch.cuda.amp.GradScaler is enabled, but CUDA')
def test_cuda_device_gets_fp16_amp(fresh_logger, monkeypatch):
    init_default_scope('mmdet')
    # What a CUDA machine reports; AmpOptimWrapper's own check is patched to let it build here.
    monkeypatch.setattr(amp_module, 'get_device', lambda: 'cuda')
    monkeypatch.setattr('mmengine.optim.optimizer.amp_optimizer_wrapper.is_cuda_available',
                        lambda: True)
    optim_wrapper = build_optim_wrapper(ToyModel(), zoo_optim_wrapper_cfg())
    assert isinstance(optim_wrapper, AmpOptimWrapper)
    assert optim_wrapper.cast_dtype == torch.float16
    assert optim_wrapper._scale_update_param is None  # dynamic loss scaling
    assert optim_wrapper.clip_grad_kwargs == dict(max_norm=0.01, norm_type=2)
    assert fallback_lines(fresh_logger) == 0


class AutocastProbe(BaseModel):
    """A model whose predictions are the dtype of a matmul, i.e. whether autocast is on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.eye(4))

    def forward(self, inputs, data_samples=None, mode='tensor'):
        return [(torch.stack(inputs).float() @ self.weight).dtype]


class DtypeMetric(BaseMetric):

    def process(self, data_batch, data_samples) -> None:
        self.results.extend(data_samples)

    def compute_metrics(self, results) -> dict:
        return dict(dtypes=sorted({str(dtype) for dtype in results}))


def probe_runner(tmp_path, val_cfg: dict, test_cfg: dict) -> Runner:
    """A Runner of :class:`AutocastProbe` with these val and test loops."""
    name = f'probe_{uuid.uuid4().hex}'
    loaders = [DataLoader([dict(inputs=torch.ones(4, 4))] * 2, collate_fn=pseudo_collate)
               for _ in range(2)]
    return Runner(model=AutocastProbe(), work_dir=str(tmp_path / name), experiment_name=name,
                  val_dataloader=loaders[0], val_evaluator=Evaluator(DtypeMetric()),
                  val_cfg=val_cfg, test_dataloader=loaders[1],
                  test_evaluator=Evaluator(DtypeMetric()), test_cfg=test_cfg,
                  default_scope='mmdet')


def test_val_and_test_loops_run_fp32_on_cpu(tmp_path):
    # Control: mmengine's fp16 loops autocast a CPU run (to bfloat16), and the probe sees it.
    control = probe_runner(tmp_path, dict(type='ValLoop', fp16=True),
                           dict(type='TestLoop', fp16=True))
    assert control.val() == control.test() == dict(dtypes=['torch.bfloat16'])
    runner = probe_runner(tmp_path, dict(type='AutoAmpValLoop'), dict(type='AutoAmpTestLoop'))
    assert runner.val() == runner.test() == dict(dtypes=['torch.float32'])
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        assert f.read().count(FALLBACK) == 1  # val and test loops of one run: one line


def train_tiny(tmp_path, optim_wrapper: dict) -> Tuple[Runner, str]:
    """Two training iterations of the tiny CTVIS model on a fixed clip: the Runner and its log."""
    name = f'train_{uuid.uuid4().hex}'
    runner = Runner(
        model=build_tiny_model(seed=0), work_dir=str(tmp_path / name), experiment_name=name,
        train_dataloader=DataLoader([square_clip(num_frames=3)] * 2, batch_size=1,
                                    collate_fn=pseudo_collate),
        optim_wrapper=optim_wrapper, train_cfg=dict(by_epoch=False, max_iters=2),
        default_hooks=dict(checkpoint=None, logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0), default_scope='mmdet')
    runner.train()
    with open(osp.join(runner.log_dir, f'{runner.timestamp}.log')) as f:
        return runner, f.read()


def test_zoo_recipe_trains_in_fp32_on_cpu(tmp_path):
    amp, amp_log = train_tiny(tmp_path, zoo_optim_wrapper_cfg())
    assert amp_log.count(FALLBACK) == 1
    assert type(amp.optim_wrapper) is OptimWrapper
    assert math.isfinite(amp.message_hub.get_scalar('train/loss').current())
    fp32_cfg = dict(zoo_optim_wrapper_cfg(), type='OptimWrapper')  # what the docs say for fp32
    fp32, fp32_log = train_tiny(tmp_path, fp32_cfg)
    assert FALLBACK not in fp32_log
    initial = build_tiny_model(seed=0).state_dict()
    trained, reference = amp.model.state_dict(), fp32.model.state_dict()
    moved = [name for name, value in trained.items()
             if value.is_floating_point() and not torch.equal(value, initial[name])]
    assert 'track_head.query_feat.weight' in moved and 'backbone.conv1.weight' in moved
    for name, value in trained.items():
        assert value.dtype not in (torch.float16, torch.bfloat16), name
        assert torch.equal(value, reference[name]), f'{name} differs from a plain fp32 run'


# ----------------------------------------------------------------------------- matching precision
def test_matching_costs_are_float32_under_autocast():
    """The official matcher computes its costs with autocast off (fp16 costs can reorder)."""
    head = build_tiny_model().track_head
    seen = []
    assign = head.assigner.assign

    def recording_assign(pred_instances, gt_instances, img_meta):
        seen.append((pred_instances.scores.dtype, pred_instances.masks.dtype,
                     torch.is_autocast_enabled('cpu')))
        return assign(pred_instances, gt_instances, img_meta)

    head.assigner.assign = recording_assign
    gen = torch.Generator().manual_seed(0)
    cls_score = torch.randn(6, 4, generator=gen).bfloat16()
    mask_pred = torch.randn(6, 16, 16, generator=gen).bfloat16()
    gt = InstanceData(labels=torch.tensor([0, 2]), masks=torch.rand(2, 16, 16, generator=gen) > 0.5)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        head._get_targets_single(cls_score, mask_pred, gt, dict(img_shape=(16, 16)))
    assert seen == [(torch.float32, torch.float32, False)]


# ----------------------------------------------------------------------------- drawing
def test_track_color_is_fixed_per_id_vivid_and_far_apart_for_neighbours():
    colors = [track_color(track_id) for track_id in range(12)]
    assert colors == [track_color(track_id) for track_id in range(12)]  # depends on the id only
    assert len(set(colors)) == 12
    assert all(isinstance(c, int) and 0 <= c <= 255 for color in colors for c in color)
    hsv = cv2.cvtColor(np.uint8([colors]), cv2.COLOR_BGR2HSV)[0].astype(int)
    assert (hsv[:, 1] >= 190).all() and (hsv[:, 2] == 255).all()  # saturated and bright
    hue_steps = np.abs(np.diff(hsv[:, 0]))
    assert (np.minimum(hue_steps, 180 - hue_steps) >= 60).all()  # neighbours differ in hue


def test_visualization_hook_draws_each_frame_of_the_video_prediction(tmp_path):
    """Masks scoring above ``score_thr`` are blended with their track's colour into
    ``out_dir/<video_id>/<frame file>``; a score equal to the threshold is not drawn."""
    height, width, grey = 40, 48, 100
    masks = np.zeros((2, height, width), np.uint8)
    masks[0, 20:35, 8:30] = 1
    masks[1, 30:38, 36:46] = 1
    rles = []
    for mask in masks:
        rle = mask_util.encode(np.asfortranarray(mask))
        rles.append(dict(rle, counts=rle['counts'].decode()))
    prediction = VideoPrediction(
        scores=torch.tensor([0.75, 0.25], dtype=torch.float64), labels=torch.tensor([1, 0]),
        track_ids=torch.tensor([5, 7]), masks=[[rles[0], rles[0]], [rles[1], None]],
        ori_shape=(height, width), num_frames=2)
    frames = []
    for frame_id in range(2):
        path = str(tmp_path / f'{frame_id:05d}.png')
        cv2.imwrite(path, np.full((height, width, 3), grey, np.uint8))
        frames.append(DetDataSample(metainfo=dict(img_path=path, frame_id=frame_id, video_id=9)))
    video = TrackDataSample(metainfo=dict(video_id=9))
    video.video_data_samples = frames
    runner = SimpleNamespace(test_dataloader=SimpleNamespace(
        dataset=SimpleNamespace(metainfo=dict(classes=('cat', 'dog')))))
    hook = VideoMaskVisualizationHook(str(tmp_path / 'painted'), score_thr=0.25)
    hook.after_test_iter(runner, 0, dict(data_samples=[video]),
                         [prediction.to_data_sample(video_id=9)])
    blended = (0.5 * grey + 0.5 * np.array(track_color(5))).astype(np.uint8)
    for frame_id in range(2):
        painted = cv2.imread(str(tmp_path / 'painted' / '9' / f'{frame_id:05d}.png'))
        assert (painted[28, 20] == blended).all()  # inside track 5's mask, off its box and label
        assert (painted[30:38, 36:46] == grey).all()  # track 7 scores the threshold: not drawn
    assert hook.frame_paths == {}  # every frame drawn once
    with pytest.raises(KeyError, match='no img_path was seen for frame 0 of video 9'):
        hook.draw_video(prediction.to_data_sample(video_id=9), None)
