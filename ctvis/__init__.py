"""ctvis: CTVIS online video instance segmentation as an OpenMMLab plugin.

Importing the package applies the stack compatibility fixes (:mod:`ctvis.utils.compat`) and
registers every ctvis component into mmdet's registries, so that a config with
``custom_imports=dict(imports=['ctvis'])`` and ``default_scope='mmdet'`` can build them.
"""
from .version import __version__
from .utils import compat  # noqa: F401  (applies the fixes on import)
from . import datasets, engine, evaluation, models  # noqa: F401,E402  (registration)

__all__ = ['__version__']
