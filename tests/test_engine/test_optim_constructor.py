"""ctvis.engine.optim_constructor: the CTVIS optimizer constructor applies the official
per-parameter rules (backbone lr, norm and embedding weight decay) on every parameter once."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

from conftest import REPO
from ctvis.engine import CTVISOptimWrapperConstructor


SCHEDULE = osp.join(REPO, 'configs', '_base_', 'schedules', 'ctvis_16k.py')


def zoo_optim_wrapper_cfg() -> dict:
    return Config.fromfile(SCHEDULE).optim_wrapper.to_dict()


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
