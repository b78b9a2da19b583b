"""Every shipped config loads, builds its model and its data pipelines."""
import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.registry import init_default_scope

from conftest import REPO
from mmdet.registry import MODELS

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'ctvis', '*.py')))
EXPECTED = {  # config name -> (queries, classes, clip frames, frame range, pseudo/real ratios)
    'ctvis_r50_8xb2-16k_ytvis19': (100, 40, 10, 20, [1.0, 1.5]),
    'ctvis_r50_8xb2-16k_ytvis21': (100, 40, 10, 20, [1.0, 0.8]),
    'ctvis_r50_8xb2-16k_ytvis21-test-ytvis22': (100, 40, 10, 20, [1.0, 0.8]),
    'ctvis_r50_8xb2-16k_ovis': (100, 25, 10, 15, [1.0, 0.75]),
    'ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ytvis19': (200, 40, 8, 16, [1.0, 1.5]),
    'ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ytvis21': (200, 40, 8, 16, [1.0, 0.8]),
    'ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ovis': (200, 25, 6, 10, [1.0, 0.75]),
    'ctvis_quickstart': (10, 4, 5, 4, None),
}


def pipelines(cfg):
    train = cfg.train_dataloader.dataset
    for dataset in train.get('datasets', [train]):
        yield dataset.pipeline
    yield cfg.test_dataloader.dataset.pipeline


def test_every_config_is_listed():
    assert sorted(osp.basename(c)[:-3] for c in CONFIGS) == sorted(EXPECTED)


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: osp.basename(p)[:-3])
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert cfg.default_scope == 'mmdet' and 'ctvis' in cfg.custom_imports.imports
    init_default_scope('mmdet')
    model = MODELS.build(cfg.model)
    queries, classes, frames, frame_range, ratios = EXPECTED[osp.basename(path)[:-3]]
    assert model.track_head.num_queries == queries
    assert model.track_head.num_classes == classes == model.tracker.num_classes
    assert len(model.track_head.cls_embed.bias) == classes + 1
    assert model.track_head.num_transformer_decoder_layers == (3 if ratios is None else 9)
    for pipeline in pipelines(cfg):
        Compose(pipeline)  # every transform type exists and accepts its arguments
    train = cfg.train_dataloader.dataset
    if ratios is not None:
        pseudo, real = train.datasets
        assert cfg.train_dataloader.sampler.ratios == ratios
        assert pseudo.pipeline[2].num_frames == frames
        assert real.pipeline[0].num_frames == frames and real.pipeline[0].frame_range == frame_range
        assert cfg.train_dataloader.batch_size == 2 and cfg.train_cfg.max_iters == 16000
        assert cfg.param_scheduler.milestones == [6000, 12000]
        assert cfg.optim_wrapper.clip_grad.max_norm == 0.01
        assert cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
    else:
        assert train.pipeline[0].num_frames == frames
