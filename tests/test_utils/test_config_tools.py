"""builds_class: a config entry recognised by what its ``type`` builds, under any spelling."""
import pytest
from mmcv.transforms import LoadImageFromFile
from mmengine.runner import IterBasedTrainLoop

import ctvis  # noqa: F401  (registration)
from ctvis.engine import TrainingTimeBudget
from ctvis.evaluation import YTVISMetric
from ctvis.utils import builds_class
from mmdet.datasets.transforms import LoadImageFromNDArray
from mmdet.registry import HOOKS, LOOPS, METRICS, TRANSFORMS


@pytest.mark.parametrize('registry,type_value,cls', [
    (METRICS, 'YTVISMetric', YTVISMetric),
    (METRICS, 'mmdet.YTVISMetric', YTVISMetric),
    (METRICS, YTVISMetric, YTVISMetric),
    (HOOKS, 'mmdet.TrainingTimeBudget', TrainingTimeBudget),
    (LOOPS, 'IterBasedTrainLoop', IterBasedTrainLoop),  # from mmengine, mmdet's parent
    (LOOPS, 'mmengine.IterBasedTrainLoop', IterBasedTrainLoop),
    (TRANSFORMS, 'LoadImageFromFile', LoadImageFromFile),  # from mmcv
    (TRANSFORMS, 'mmcv.LoadImageFromFile', LoadImageFromFile),
])
def test_every_spelling_that_builds_the_class_matches(registry, type_value, cls):
    assert builds_class(registry, type_value, cls)
    if cls in BUILD_ARGS:  # and building agrees (a loop needs a runner)
        assert type(registry.build(dict(type=type_value, **BUILD_ARGS[cls]))) is cls


BUILD_ARGS = {YTVISMetric: dict(ann_file='unused.json'), TrainingTimeBudget: dict(seconds=1),
              LoadImageFromFile: {}}


@pytest.mark.parametrize('registry,type_value,cls', [
    (METRICS, 'ctvis.YTVISMetric', YTVISMetric),  # no such scope: it would not build
    (TRANSFORMS, 'mmdet.LoadImageFromFile', LoadImageFromFile),  # mmcv's, not in mmdet's scope
    (TRANSFORMS, 'LoadImageFromNDArray', LoadImageFromFile),  # a subclass is another class
    (TRANSFORMS, LoadImageFromNDArray, LoadImageFromFile),
    (METRICS, 'CocoVideoMetric', YTVISMetric),
    (METRICS, 'NoSuchMetric', YTVISMetric),
    (METRICS, '', YTVISMetric),
    (METRICS, '.YTVISMetric', YTVISMetric),
    (METRICS, None, YTVISMetric),
])
def test_spellings_that_build_something_else_or_nothing_do_not_match(registry, type_value, cls):
    assert not builds_class(registry, type_value, cls)


def test_a_scope_that_does_not_build_is_refused_by_building_too():
    for registry, name in ((METRICS, 'ctvis.YTVISMetric'), (TRANSFORMS, 'mmdet.LoadImageFromFile')):
        with pytest.raises(KeyError):
            registry.build(dict(type=name, ann_file='unused.json'))
