"""Edit a data pipeline step by its type, not by its list position, in configs.

``pipeline[2].num_frames = 8`` silently edits another step once a step is inserted before it;
``update_step(pipeline, 'PseudoVideoFromImage', num_frames=8)`` fails loudly instead. Configs
import it after their ``_base_`` line (mmengine reads a config whose first statement is an
import of a package as a lazy-import config)::

    _base_ = ['../_base_/datasets/ytvis19.py']
    from ctvis.utils.config_tools import update_step  # noqa: E402

mmengine drops the imported function from the built config.
"""
from typing import Any, List, MutableMapping


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
