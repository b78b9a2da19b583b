"""ctvis as a plugin: custom_imports + mmdet bases, in a fresh interpreter, builds a CTVIS model."""
import os.path as osp
import subprocess
import sys

from conftest import REPO

CONFIG = osp.join(REPO, 'tests', 'data', 'configs', 'plugin_ctvis.py')

SCRIPT = f'''
import sys
from mmengine.config import Config
from mmengine.registry import init_default_scope
cfg = Config.fromfile({CONFIG!r})
assert 'ctvis' in sys.modules, 'custom_imports did not import ctvis'
assert cfg.default_scope == 'mmdet'
init_default_scope(cfg.default_scope)
from mmdet.registry import MODELS
model = MODELS.build(cfg.model)
print(type(model).__module__, type(model).__name__, type(model.track_head).__name__,
      type(model.tracker).__name__)
'''


def test_custom_imports_with_mmdet_bases_builds_ctvis():
    result = subprocess.run([sys.executable, '-c', SCRIPT], capture_output=True, text=True,
                            cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ['ctvis.models.ctvis', 'CTVIS', 'CTVISHead', 'CTVISTracker']


def test_import_ctvis_registers_into_mmdet_registries():
    """Each component is in mmdet's own registry (where ``default_scope='mmdet'`` builds from, not
    only in a parent or child) under its name, and it is ctvis' object."""
    import ctvis  # noqa: F401
    from mmdet.registry import (DATA_SAMPLERS, DATASETS, HOOKS, LOOPS, METRICS, MODELS,
                                OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, TRANSFORMS)
    for registry, names in ((MODELS, ['CTVIS', 'CTVISHead', 'ConsistentContrastiveLoss',
                                      'CTVISTracker', 'RandomIdentityTracker']),
                            (DATASETS, ['YTVISDataset', 'OVISDataset', 'CocoPseudoVideoDataset']),
                            (TRANSFORMS, ['VideoClipSample', 'DropEmptyMaskInstances',
                                          'PseudoVideoFromImage']),
                            (DATA_SAMPLERS, ['DatasetRatioSampler']),
                            (METRICS, ['YTVISMetric']),
                            (OPTIM_WRAPPER_CONSTRUCTORS, ['CTVISOptimWrapperConstructor']),
                            (OPTIM_WRAPPERS, ['AutoAmpOptimWrapper']),
                            (LOOPS, ['AutoAmpValLoop', 'AutoAmpTestLoop']),
                            (HOOKS, ['RNGStateHook', 'VideoMaskVisualizationHook'])):
        for name in names:
            assert name in registry.module_dict, f'{name} not in {registry.name}'
            module = registry.module_dict[name].__module__
            assert module.startswith('ctvis.'), f'{registry.name}.{name} comes from {module}'
