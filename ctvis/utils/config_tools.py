"""Config helpers that find entries by what they build, not by where or how they are written.

``pipeline[2].num_frames = 8`` silently edits another step once a step is inserted before it;
``update_step(pipeline, 'PseudoVideoFromImage', num_frames=8)`` fails loudly instead. Configs
import it after their ``_base_`` line (mmengine reads a config whose first statement is an
import of a package as a lazy-import config)::

    _base_ = ['../_base_/datasets/ytvis19.py']
    from ctvis.utils.config_tools import update_step  # noqa: E402

mmengine drops the imported function from the built config.

:func:`builds_class` lets the tools recognise an entry (a hook, a metric, a loop, a transform)
however its ``type`` is spelt.
"""
from typing import Any, List, MutableMapping

from mmengine.registry import Registry


def builds_class(registry: Registry, type_value: Any, cls: type) -> bool:
    """Whether a config entry of ``type=type_value`` builds exactly ``cls`` from ``registry``.

    A config may name a class as registered (``'YTVISMetric'``), under a scope
    (``'mmdet.YTVISMetric'``, ``'mmcv.LoadImageFromFile'``) or by the class itself; asking the
    registry, as building does, accepts every spelling that builds ``cls`` and no other (a list
    of names misses some scopes and can list scopes that do not build).
    """
    if not isinstance(type_value, str):
        return type_value is cls
    try:
        return registry.get(type_value) is cls
    except (RuntimeError, TypeError):  # an empty name, or a relative one like '.X'
        return False


def update_step(pipeline: List[MutableMapping], step_type: str, **changes: Any) -> None:
    """Update, in place, the one top-level step of ``pipeline`` whose ``type`` is ``step_type``.

    Args:
        pipeline: a list of transform configs (dicts with a ``type``).
        step_type: the registered name of the step to edit, e.g. ``'VideoClipSample'``.
        **changes: the arguments to set on that step.

    Raises:
        ValueError: no step or more than one step of that type (the message lists the steps).
    """
    matches = [step for step in pipeline if step.get('type') == step_type]
    if len(matches) != 1:
        types = [step.get('type') for step in pipeline]
        raise ValueError(f'update_step: expected exactly one {step_type!r} step in the '
                         f'pipeline, found {len(matches)}; its steps are {types}')
    if not changes:
        raise ValueError(f'update_step: no argument to set on {step_type!r}')
    matches[0].update(changes)
