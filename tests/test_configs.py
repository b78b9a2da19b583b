"""Every shipped config loads, builds its model, its data pipelines and the optimizer it trains
with; the 8-GPU configs' optimizer holds the official lr and weight decay of every parameter.
Every config file inherits at most 2 ``_base_`` levels and edits pipeline steps by type, never by
list position; each top-level config's pipelines hold the steps and clip lengths of its recipe."""
import ast
import glob
import os.path as osp
import re
from typing import List

import pytest
import torch
from mmcv.transforms import Resize as MMCVResize
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import init_default_scope
from torch import nn

from conftest import REPO
from ctvis.utils.config_tools import update_step
from mmdet.registry import MODELS, TRANSFORMS

CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'ctvis', '*.py')))
EXPECTED = {  # config name -> (queries, classes, clip frames, frame range, pseudo/real ratios)
    'ctvis_r50_8xb2-16k_ytvis19': (100, 40, 10, 20, [1.0, 1.5]),
    'ctvis_r50_8xb2-16k_ytvis21': (100, 40, 10, 20, [1.0, 0.8]),
    'ctvis_r50_8xb2-16k_ytvis21-test-ytvis22': (100, 40, 10, 20, [1.0, 0.8]),
    'ctvis_r50_8xb2-16k_ovis': (100, 25, 10, 15, [1.0, 0.75]),
    'ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ytvis19': (200, 40, 8, 16, [1.0, 1.5]),
    'ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ytvis21': (200, 40, 8, 16, [1.0, 0.8]),
    'ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ytvis21-test-ytvis22': (200, 40, 8, 16, [1.0, 0.8]),
    'ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ovis': (200, 25, 6, 10, [1.0, 0.75]),
    'ctvis_quickstart': (12, 4, 5, 4, None),
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


def step(pipeline: list, step_type: str):
    """The one top-level step of ``pipeline`` of type ``step_type``."""
    steps = [s for s in pipeline if s.type == step_type]
    assert len(steps) == 1, f'{len(steps)} {step_type} steps in {[s.type for s in pipeline]}'
    return steps[0]


def test_every_config_is_listed():
    assert sorted(config_name(c) for c in CONFIGS) == sorted(EXPECTED)


def test_config_builds(built):
    name, cfg, model = built
    assert cfg.default_scope == 'mmdet' and 'ctvis' in cfg.custom_imports.imports
    queries, classes, frames, frame_range, ratios = EXPECTED[name]
    assert model.track_head.num_queries == queries
    # CTVIS decodes every query in every frame; the quickstart 10 of its 12 per training frame
    assert model.track_head.num_dropped_queries == (2 if name == QUICKSTART else 0)
    assert model.track_head.num_classes == classes == model.tracker.num_classes
    # the official tracker everywhere; the quickstart's motion cue as retuned for query dropout
    motion = (model.tracker.motion_weight, model.tracker.motion_sigma, model.tracker.motion_history)
    assert motion == ((0.4, 2.0, 10) if name == QUICKSTART else (0.0, 1.0, 10))
    assert len(model.track_head.cls_embed.bias) == classes + 1
    assert model.track_head.num_transformer_decoder_layers == (3 if ratios is None else 9)
    for pipeline in pipelines(cfg):
        Compose(pipeline)  # every transform type exists and accepts its arguments
    train = cfg.train_dataloader.dataset
    if ratios is not None:
        pseudo, real = train.datasets
        assert cfg.train_dataloader.sampler.ratios == ratios
        assert step(pseudo.pipeline, 'PseudoVideoFromImage').num_frames == frames
        clip_sample = step(real.pipeline, 'VideoClipSample')
        assert clip_sample.num_frames == frames and clip_sample.frame_range == frame_range
        assert cfg.train_dataloader.batch_size == 2 and cfg.train_cfg.max_iters == 16000
        assert cfg.param_scheduler.milestones == [6000, 12000]
        assert cfg.train_cfg.val_interval == (4000 if name.endswith('ovis') else 2000)
    else:
        assert step(train.pipeline, 'VideoClipSample').num_frames == frames


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
        assert optimizer.defaults['fused']  # one kernel for the whole update on the CPU
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


# ----------------------------------------------------------------------------- structure
# Every config file: the zoo, its bases, the projects' configs and the tests' configs.
CONFIG_FILES = sorted(
    glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True) +
    glob.glob(osp.join(REPO, 'projects', '*', 'configs', '**', '*.py'), recursive=True) +
    glob.glob(osp.join(REPO, 'tests', 'data', 'configs', '*.py')))
MAX_BASE_LEVELS = 2


def relative(path: str) -> str:
    return osp.relpath(path, REPO)


def base_levels(path: str) -> int:
    """Levels of ``_base_`` above ``path``, resolved as mmengine resolves them (other packages'
    bases too): a config whose base has a base of its own has 2 levels."""
    levels = 0
    for base in Config._get_base_files(path):
        base_path, _ = Config._get_cfg_path(base, path)  # absolute for 'mmdet::...'
        levels = max(levels, 1 + base_levels(osp.join(osp.dirname(path), base_path)))
    return levels


def test_base_levels_are_counted():
    levels = {relative(p): base_levels(p) for p in CONFIG_FILES}
    assert levels['configs/_base_/datasets/ytvis19.py'] == 0
    assert levels['configs/_base_/datasets/ovis.py'] == 1
    assert levels['configs/ctvis/ctvis_r50_8xb2-16k_ovis.py'] == 2  # -> ovis.py -> ytvis19.py
    assert levels['projects/minvis/configs/minvis_quickstart.py'] == 2  # -> quickstart -> r50


@pytest.mark.parametrize('path', CONFIG_FILES, ids=relative)
def test_at_most_two_base_levels(path):
    assert base_levels(path) <= MAX_BASE_LEVELS, (
        f'{relative(path)}: {base_levels(path)} levels of _base_ (at most {MAX_BASE_LEVELS}): '
        'inherit the bases of the config you derive from instead')


POSITIONAL_NAME = re.compile(r'(pipeline|transforms)$')


def positional_step_edits(source: str) -> List[str]:
    """``line: code`` of each pipeline step addressed by list position (``pipeline[2]``,
    ``real_video_pipeline[-2]``, ``x.transforms[0]``) in a config's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Subscript):
            continue
        container = node.value
        name = container.attr if isinstance(container, ast.Attribute) else getattr(
            container, 'id', '')
        index = node.slice
        if isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub):
            index = index.operand
        if POSITIONAL_NAME.search(name) and isinstance(index, ast.Constant) and isinstance(
                index.value, int):
            found.append((node.lineno, node.col_offset, ast.unparse(node)))
    return [f'{line}: {code}' for line, _, code in sorted(found)]


def test_positional_step_edits_are_found():
    source = ('a = dict(pipeline=[])\nreal_video_pipeline[-2].num_frames = 1\n'
              'a.pipeline[0].update(num_frames=8)\nb = x.transforms[1]\n'
              "update_step(a.pipeline, 'VideoClipSample', num_frames=1)\n"
              'datasets[0].pipeline = p\nscales = train_scales[0]\n')
    assert positional_step_edits(source) == [
        '2: real_video_pipeline[-2]', '3: a.pipeline[0]', '4: x.transforms[1]']


@pytest.mark.parametrize('path', CONFIG_FILES, ids=relative)
def test_no_pipeline_step_by_position(path):
    with open(path, encoding='utf-8') as f:
        found = positional_step_edits(f.read())
    assert not found, (
        f'{relative(path)} addresses pipeline steps by list position (wrong step once one is '
        f"inserted): {found}; use ctvis.utils.config_tools.update_step(pipeline, 'Type', ...)")


# ----------------------------------------------------------------------------- pipelines
def outline(pipeline: list) -> List[str]:
    """Each step's type with its clip-length arguments; a broadcaster with its inner types."""
    steps = []
    for config in pipeline:
        if config.type == 'TransformBroadcaster':
            inner = ', '.join(t.type for t in config.transforms)
            steps.append(f'TransformBroadcaster[{inner}]')
            continue
        args = ', '.join(f'{key}={config[key]}' for key in ('num_frames', 'frame_range')
                         if key in config)
        steps.append(f'{config.type}({args})' if args else config.type)
    return steps


AUGMENT = ('TransformBroadcaster[LoadImageFromFile, LoadTrackAnnotations, RandomApply, '
           'RandomChoiceResize, RandomFlip, DropEmptyMaskInstances]')
LOAD = 'TransformBroadcaster[LoadImageFromFile, LoadTrackAnnotations]'
TEST = ['TransformBroadcaster[LoadImageFromFile, Resize]', 'PackTrackInputs']


def zoo(frames: int, frame_range: int, pseudo_frames: int = None) -> dict:
    """A zoo recipe's pipelines: COCO pseudo-videos and real clips for training, then test."""
    pseudo_frames = frames if pseudo_frames is None else pseudo_frames
    return dict(
        pseudo=['VideoClipSample(num_frames=1, frame_range=1)', LOAD,
                f'PseudoVideoFromImage(num_frames={pseudo_frames})', 'PackTrackInputs'],
        real=[f'VideoClipSample(num_frames={frames}, frame_range={frame_range})', AUGMENT,
              'PackTrackInputs'],
        test=TEST)


def toy(frames: int) -> dict:
    return dict(
        train=[f'VideoClipSample(num_frames={frames}, frame_range=4)',
               'TransformBroadcaster[LoadImageFromFile, LoadTrackAnnotations, RandomFlip, '
               'DropEmptyMaskInstances]', 'PackTrackInputs'],
        test=['TransformBroadcaster[LoadImageFromFile]', 'PackTrackInputs'])


PIPELINES = {  # config -> its pipelines' outlines
    'configs/ctvis/ctvis_r50_8xb2-16k_ytvis19.py': zoo(10, 20),
    'configs/ctvis/ctvis_r50_8xb2-16k_ytvis21.py': zoo(10, 20),
    'configs/ctvis/ctvis_r50_8xb2-16k_ytvis21-test-ytvis22.py': zoo(10, 20),
    'configs/ctvis/ctvis_r50_8xb2-16k_ovis.py': zoo(10, 15),
    'configs/ctvis/ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ytvis19.py': zoo(8, 16),
    'configs/ctvis/ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ytvis21.py': zoo(8, 16),
    'configs/ctvis/ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ytvis21-test-ytvis22.py': zoo(8, 16),
    'configs/ctvis/ctvis_swin-l-p4-w12-384-in21k_8xb2-16k_ovis.py': zoo(6, 10),
    'configs/ctvis/ctvis_quickstart.py': toy(5),
    'projects/minvis/configs/minvis_r50_8xb20-16k_ytvis19.py': zoo(1, 20, pseudo_frames=1),
    'projects/minvis/configs/minvis_quickstart.py': toy(1),
    'projects/minvis/configs/ctvis_quickstart_minvis-tracker.py': toy(5),
    'tests/data/configs/ctvis_toy_e2e.py': toy(3),
}


def test_every_top_level_config_has_its_pipelines_listed():
    shipped = {relative(p) for p in CONFIG_FILES
               if '_base_' not in p and not relative(p).startswith('tests')}
    assert shipped | {'tests/data/configs/ctvis_toy_e2e.py'} == set(PIPELINES)


@pytest.mark.parametrize('path', sorted(PIPELINES))
def test_pipeline_steps(path, monkeypatch):
    monkeypatch.setenv('CTVIS_TOY_DATA', 'data/toy_vis/')  # the end-to-end test's config
    cfg = Config.fromfile(osp.join(REPO, path))
    train = cfg.train_dataloader.dataset
    if 'datasets' in train:
        pseudo, real = train.datasets
        assert pseudo.type == 'CocoPseudoVideoDataset' and real.type != pseudo.type
        got = dict(pseudo=outline(pseudo.pipeline), real=outline(real.pipeline))
    else:
        got = dict(train=outline(train.pipeline))
    got['test'] = outline(cfg.test_dataloader.dataset.pipeline)
    assert got == PIPELINES[path]
    assert outline(cfg.val_dataloader.dataset.pipeline) == PIPELINES[path]['test']


@pytest.mark.parametrize('path', sorted(PIPELINES))
def test_datasets_build(path, monkeypatch):
    """Every loader's dataset as built (lazily: no files needed), with its class and version:
    a key left over from a base config (an OVIS loader with YouTube-VIS's dataset_version) is
    refused by the dataset at build time."""
    from mmdet.registry import DATASETS
    monkeypatch.setenv('CTVIS_TOY_DATA', 'data/toy_vis/')
    cfg = Config.fromfile(osp.join(REPO, path))
    init_default_scope('mmdet')
    built = {}
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        config = dict(cfg[loader].dataset, lazy_init=True)
        if 'datasets' in config:
            config['datasets'] = [dict(d, lazy_init=True) for d in config['datasets']]
        dataset = DATASETS.build(config)
        built[loader] = [type(d).__name__ for d in getattr(dataset, 'datasets', [dataset])]
    real = built['train_dataloader'][-1]
    assert built['val_dataloader'] == built['test_dataloader'] == [real]
    from mmdet.registry import METRICS
    for evaluator in ('val_evaluator', 'test_evaluator'):  # settings checked when built
        METRICS.build(cfg[evaluator])
    if cfg.test_evaluator.get('format_only'):  # a submission: in this config's own folder
        name = osp.splitext(osp.basename(path))[0]
        assert cfg.test_evaluator.outfile_prefix == f'./work_dirs/{name}/results'
        assert cfg.val_evaluator.outfile_prefix.startswith(f'./work_dirs/{name}/')
    if 'ytvis22' in path:
        assert cfg.test_dataloader.dataset.dataset_version == '2022'
        assert cfg.test_dataloader.dataset.data_root == cfg.test_evaluator.ann_file[:-10]
    assert ('ovis' in path) == (real == 'OVISDataset')
    if len(built['train_dataloader']) == 2:  # joint training: batches as the official loader's
        from mmdet.registry import DATA_SAMPLERS
        from ctvis.datasets import SourceAspectRatioBatchSampler
        batch_sampler = DATA_SAMPLERS.get(cfg.train_dataloader.batch_sampler.type)
        assert batch_sampler is SourceAspectRatioBatchSampler


@pytest.mark.parametrize('path', sorted(glob.glob(osp.join(REPO, 'configs', 'ctvis',
                                                       '*test-ytvis22.py'))), ids=config_name)
def test_ytvis22_configs_evaluate_locally_as_their_comment_says(path, tmp_path):
    """The comment's override (a submission by default; with ground truth of one's own, the
    metrics split by the long videos) is accepted as written and builds its metric."""
    from mmdet.registry import METRICS
    from ctvis.utils import load_tool_config
    assert ('--cfg-options test_evaluator.format_only=False\n#   +test_evaluator.long_video_ids='
            in open(path).read())
    cfg = load_tool_config(path, {'test_evaluator.format_only': False,
                                  '+test_evaluator.long_video_ids': [3, 5]},
                           work_dir=str(tmp_path))
    init_default_scope('mmdet')
    assert METRICS.build(cfg.test_evaluator).long_video_ids == [3, 5]


def built_resizes(pipeline: list) -> list:
    """The image resizes of a pipeline as built (``Resize`` objects, inner ones included)."""
    found = []
    for config in pipeline:
        inner = config.transforms if config.type == 'TransformBroadcaster' else [config]
        for step in inner:
            if 'Resize' not in step.type:
                continue
            built = TRANSFORMS.build(step)
            found.append(getattr(built, 'resize', built))
    assert all(isinstance(resize, MMCVResize) for resize in found)
    return found


@pytest.mark.parametrize('path', [p for p in sorted(PIPELINES) if 'quickstart' not in p
                                  and not p.startswith('tests')])
def test_frames_are_resized_as_the_official_code(path):
    """detectron2 resizes frames with Pillow's (antialiased) bilinear, in training and test;
    cv2's bilinear differs by about 1.5 grey levels on average at the smallest training scale."""
    cfg = Config.fromfile(osp.join(REPO, path))
    real = cfg.train_dataloader.dataset.datasets[1]
    resizes = built_resizes(real.pipeline) + built_resizes(cfg.test_dataloader.dataset.pipeline)
    assert len(resizes) == 2 and all(r.backend == 'pillow' for r in resizes)


# ----------------------------------------------------------------------------- update_step
def test_update_step_edits_the_step_of_that_type():
    pipeline = [Config(dict(type='VideoClipSample', num_frames=10, frame_range=20)).to_dict(),
                dict(type='PseudoVideoFromImage', num_frames=10), dict(type='PackTrackInputs')]
    update_step(pipeline, 'PseudoVideoFromImage', num_frames=8)
    assert pipeline == [dict(type='VideoClipSample', num_frames=10, frame_range=20),
                        dict(type='PseudoVideoFromImage', num_frames=8),
                        dict(type='PackTrackInputs')]


@pytest.mark.parametrize('pipeline, problem', [
    ([dict(type='PackTrackInputs')], 'found 0'),
    ([dict(type='VideoClipSample'), dict(type='VideoClipSample')], 'found 2'),
])
def test_update_step_refuses_a_missing_or_ambiguous_step(pipeline, problem):
    with pytest.raises(ValueError, match=problem) as error:
        update_step(pipeline, 'VideoClipSample', num_frames=1)
    assert str([s['type'] for s in pipeline]) in str(error.value)


def test_update_step_refuses_no_change():
    with pytest.raises(ValueError, match='no argument'):
        update_step([dict(type='VideoClipSample')], 'VideoClipSample')


@pytest.mark.parametrize('path', CONFIGS)
def test_contrastive_default_is_the_papers(path):
    """The default contrastive items are the paper's (memory-bank negatives, noise 0.05): the
    ablation (docs/ablation.md) found no row measurably better, so the paper's description stays."""
    loss = Config.fromfile(path).model.contrastive_loss
    assert (loss.negatives, loss.noise_prob) == ('memory', 0.05)
