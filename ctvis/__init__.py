"""ctvis: CTVIS online video instance segmentation as an OpenMMLab plugin.

Importing the package registers every ctvis component into mmdet's registries, so that a config
with ``custom_imports=dict(imports=['ctvis'])`` and ``default_scope='mmdet'`` can build them, and
registers the ``torch.ops.ctvis`` operators (:mod:`ctvis.ops`). It changes nothing inside torch,
mmengine or mmdet and installs no warning or log filter; docs/plugin.md lists exactly what it does
and how to load checkpoints safely (:func:`ctvis.utils.safe_checkpoint_loading`).
"""
from .version import __version__
from . import datasets, engine, evaluation, models, utils  # noqa: F401  (registration)

__all__ = ['__version__']
