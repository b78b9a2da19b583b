"""Every shipped config loads, builds its model, its data pipelines and the optimizer it trains
with; the 8-GPU configs' optimizer holds the official lr and weight decay of every parameter."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

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
QUICKSTART = 'ctvis_quickstart'


def config_name(path: str) -> str:
    return osp.basename(path)[:-3]


@pytest.fixture(scope='module', params=CONFIGS, ids=config_name)
def built(request):
    """(name, config, model) of one config; pytest groups the tests by config, so each model
    is built once and freed before the next one (Swin-L has 200M parameters)."""
    cfg = Config.fromfile(request.param)
    init_default_scope('mmdet')
    yield config_name(request.param), cfg, MODELS.build(cfg.model)


def pipelines(cfg):
    train = cfg.train_dataloader.dataset
    for dataset in train.get('datasets', [train]):
        yield dataset.pipeline
    yield cfg.test_dataloader.dataset.pipeline


def test_every_config_is_listed():
    assert sorted(config_name(c) for c in CONFIGS) == sorted(EXPECTED)


def test_config_builds(built):
    name, cfg, model = built
    assert cfg.default_scope == 'mmdet' and 'ctvis' in cfg.custom_imports.imports
    queries, classes, frames, frame_range, ratios = EXPECTED[name]
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
        assert cfg.train_cfg.val_interval == (4000 if name.endswith('ovis') else 2000)
    else:
        assert train.pipeline[0].num_frames == frames


# ----------------------------------------------------------------------------- optimizer
# The official rules (train_ctvis.py, Trainer.build_optimizer), stated on our parameter names:
# lr x0.1 in the backbone; weight decay 0 for the parameters of the official normalization
# types, of the official nn.Embedding modules and of Swin's position tables; trainable only.
BASE_LR, BASE_WD = 1e-4, 0.05
OFFICIAL_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm,
                  nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LayerNorm,
                  nn.LocalResponseNorm)
NO_DECAY_NAMES = ('relative_position_bias_table', 'absolute_pos_embed')
# Each nn.Embedding of our model -> whether the official module holding those weights is an
# nn.Embedding (no decay) or a plain nn.Parameter (decayed: the pixel decoder's level_embed).
EMBEDDINGS = {
    'track_head.query_feat': True,
    'track_head.query_embed': True,
    'track_head.level_embed': True,
    'track_head.pixel_decoder.level_encoding': False,
}
# Hand-written expectations for the names the issue is about, and a few more.
SPOT_CHECKS = {
    'swin': {
        'backbone.stages.0.blocks.0.attn.w_msa.relative_position_bias_table': (1e-5, 0.0),
        'backbone.stages.2.blocks.1.attn.w_msa.relative_position_bias_table': (1e-5, 0.0),
        'backbone.stages.0.blocks.0.norm1.weight': (1e-5, 0.0),
        'backbone.stages.1.blocks.1.norm2.bias': (1e-5, 0.0),
        'backbone.stages.0.downsample.norm.weight': (1e-5, 0.0),
        'backbone.patch_embed.norm.weight': (1e-5, 0.0),
        'backbone.norm3.weight': (1e-5, 0.0),
        'backbone.patch_embed.projection.weight': (1e-5, 0.05),
        'backbone.stages.0.downsample.reduction.weight': (1e-5, 0.05),
        'backbone.stages.3.blocks.1.attn.w_msa.qkv.weight': (1e-5, 0.05),
    },
    'r50': {
        'backbone.conv1.weight': (1e-5, 0.05),
        'backbone.layer4.2.conv3.weight': (1e-5, 0.05),
    },
    'head': {
        'track_head.query_feat.weight': (1e-4, 0.0),
        'track_head.query_embed.weight': (1e-4, 0.0),
        'track_head.level_embed.weight': (1e-4, 0.0),
        'track_head.pixel_decoder.level_encoding.weight': (1e-4, 0.05),
        'track_head.pixel_decoder.input_convs.0.gn.weight': (1e-4, 0.0),
        'track_head.pixel_decoder.encoder.layers.0.norms.0.weight': (1e-4, 0.0),
        'track_head.pixel_decoder.encoder.layers.0.self_attn.value_proj.weight': (1e-4, 0.05),
        'track_head.transformer_decoder.layers.0.cross_attn.attn.in_proj_weight': (1e-4, 0.05),
        'track_head.transformer_decoder.layers.8.ffn.layers.1.weight': (1e-4, 0.05),
        'track_head.transformer_decoder.post_norm.weight': (1e-4, 0.0),
        'track_head.cls_embed.weight': (1e-4, 0.05),
        'track_head.mask_embed.0.bias': (1e-4, 0.05),
        'track_head.reid_embed.4.weight': (1e-4, 0.05),
    },
}


def official_settings(model: nn.Module) -> dict:
    """Parameter name -> (lr, weight decay) by the official rules."""
    embeddings = {name for name, module in model.named_modules()
                  if isinstance(module, nn.Embedding)}
    assert embeddings == set(EMBEDDINGS), 'an nn.Embedding was added or removed: decide its rule'
    expected = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        owner_name, _, attribute = name.rpartition('.')
        owner = model.get_submodule(owner_name)
        no_decay = (isinstance(owner, OFFICIAL_NORMS) or attribute in NO_DECAY_NAMES
                    or EMBEDDINGS.get(owner_name, False))
        lr = BASE_LR * 0.1 if name.split('.')[0] == 'backbone' else BASE_LR
        expected[name] = (lr, 0.0 if no_decay else BASE_WD)
    return expected


def optimizer_settings(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict:
    """Parameter name -> (lr, weight decay) as the optimizer holds them; each at most once."""
    names = {id(param): name for name, param in model.named_parameters()}
    settings = {}
    for group in optimizer.param_groups:
        for param in group['params']:
            assert names[id(param)] not in settings, f'{names[id(param)]} in two groups'
            settings[names[id(param)]] = (group['lr'], group['weight_decay'])
    return settings


def test_optimizer_follows_the_official_rules(built):
    name, cfg, model = built
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)  # as the Runner builds it
    optimizer = optim_wrapper.optimizer
    assert type(optimizer) is torch.optim.AdamW
    if name == QUICKSTART:  # fp32, its own recipe
        assert cfg.optim_wrapper.type == 'OptimWrapper'
        assert (cfg.val_cfg.type, cfg.test_cfg.type) == ('ValLoop', 'TestLoop')
        assert 'fp16' not in cfg.val_cfg and 'fp16' not in cfg.test_cfg
        return
    assert optimizer.defaults['eps'] == 1e-8 and optimizer.defaults['betas'] == (0.9, 0.999)
    assert type(optim_wrapper) is OptimWrapper  # AMP falls back to fp32 without CUDA
    assert optim_wrapper.clip_grad_kwargs == dict(max_norm=0.01, norm_type=2)
    # Mixed precision on CUDA, as the official training and evaluation.
    assert cfg.optim_wrapper.type == 'AutoAmpOptimWrapper'  # fp16, dynamic scale: test_engine
    assert (cfg.val_cfg.type, cfg.test_cfg.type) == ('AutoAmpValLoop', 'AutoAmpTestLoop')

    settings = optimizer_settings(optimizer, model)
    expected = official_settings(model)
    assert settings.keys() == expected.keys()  # every trainable parameter, nothing frozen
    wrong = {n: (settings[n], expected[n]) for n in expected
             if settings[n] != pytest.approx(expected[n])}
    assert not wrong, f'{len(wrong)} parameters differ (got, official): {sorted(wrong.items())}'
    backbone = 'swin' if 'swin' in name else 'r50'
    for spot_name, setting in {**SPOT_CHECKS[backbone], **SPOT_CHECKS['head']}.items():
        assert settings[spot_name] == pytest.approx(setting), spot_name
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    if backbone == 'r50':  # detectron2's FrozenBN: no parameters to optimize
        assert frozen and all('bn' in n or 'downsample.1' in n for n in frozen)
    else:
        assert not frozen
        tables = [n for n in settings if n.endswith('relative_position_bias_table')]
        assert len(tables) == 2 + 2 + 18 + 2
