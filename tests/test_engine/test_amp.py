"""ctvis.engine.amp: mixed precision that falls back to fp32 without CUDA (one log line per run,
fp32 results, training works), and matching costs computed in float32 under autocast."""
import logging
import math
import os.path as osp
import uuid
from typing import Tuple

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
from conftest import REPO, build_tiny_model
from ctvis.datasets.synthetic import square_clip
from ctvis.engine.amp import FALLBACK_MESSAGE


SCHEDULE = osp.join(REPO, 'configs', '_base_', 'schedules', 'ctvis_16k.py')


def zoo_optim_wrapper_cfg() -> dict:
    return Config.fromfile(SCHEDULE).optim_wrapper.to_dict()
FALLBACK = FALLBACK_MESSAGE.format('cpu')


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
        optim_wrapper = build_optim_wrapper(nn.Linear(4, 4), zoo_optim_wrapper_cfg())
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
    optim_wrapper = build_optim_wrapper(nn.Linear(4, 4), zoo_optim_wrapper_cfg())
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


def test_training_loss_runs_under_fp16_autocast():
    """What AMP does on CUDA (fp16 autocast around the loss), here on the CPU: the final layer's
    matching for the contrastive loss once wrote float32 points into an fp16 tensor."""
    model = build_tiny_model(seed=0)
    data = model.data_preprocessor(pseudo_collate([square_clip(num_frames=3)]), True)
    with torch.autocast('cpu', dtype=torch.float16):
        losses = model.loss(data['inputs'], data['data_samples'])
    assert torch.float16 in {loss.dtype for loss in losses.values()}  # autocast was on
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    assert model.track_head.query_feat.weight.grad.abs().sum() > 0
