"""Safe checkpoint loading for mmengine's Runner and ``load_checkpoint``, on request.

mmengine 0.10.7 loads every checkpoint through ``CheckpointLoader``, whose schemes call a bare
``torch.load`` (local files, ``pavi://``, ``s3://``) or torch.hub's URL loader (``http(s)://``,
``torchvision://``, ``open-mmlab://``, ``mmcls://``). On torch >= 2.6 the bare call is weights-only
and refuses the checkpoints the Runner itself writes; the URL loader passes
``weights_only=False``, so a download could run code. :func:`safe_checkpoint_loading` fixes both
for the code it wraps, through mmengine's own extension point (``CheckpointLoader.register_scheme``)
rather than by replacing anything inside mmengine:

- local files and the URL schemes load through :mod:`ctvis.utils.checkpoint` (torch's weights-only
  loader with mmengine's checkpoint types allow-listed, trusted files in full, errors naming the
  file);
- ``pavi://`` and ``s3://``/``petrel://`` keep mmengine's loaders, whose bare ``torch.load`` is
  weights-only already and, inside the context, accepts the same allow-list.

``import ctvis`` does none of this: tools/train.py, tools/test.py and
:meth:`ctvis.apis.OnlineVideoSegmenter.from_config` enter the context; code of your own can too::

    with safe_checkpoint_loading():
        runner.train()  # resume / load_from, as in tools/train.py
"""
import contextlib
import logging
import os
import os.path as osp
from typing import Any, Callable, Iterator, Tuple

import torch
from mmengine.dist import get_dist_info
from mmengine.logging import print_log
from mmengine.runner.checkpoint import (CheckpointLoader, get_deprecated_model_names,
                                        get_external_models, get_mmcls_models,
                                        get_torchvision_models)

from .checkpoint import MapLocation, checkpoint_globals_allowed, safe_load_file, safe_load_url

__all__ = ['safe_checkpoint_loading', 'load_from_local', 'load_from_http',
           'load_from_torchvision', 'load_from_openmmlab', 'load_from_mmcls']

# mmengine logs "Loads checkpoint by <name without load_from_> backend": the names stay mmengine's.


def load_from_local(filename: str, map_location: MapLocation = None) -> Any:
    """A local file, through :func:`~ctvis.utils.checkpoint.safe_load_file`."""
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')  # mmengine's message
    return safe_load_file(filename, map_location)


def load_from_http(filename: str, map_location: MapLocation = None, model_dir: str = None,
                   progress: bool = os.isatty(0)) -> Any:
    """A URL, through :func:`~ctvis.utils.checkpoint.safe_load_url`; in a distributed run rank 0
    downloads first and the other ranks read its copy (mmengine's order)."""
    rank, world_size = get_dist_info()
    checkpoint = None
    if rank == 0:
        checkpoint = safe_load_url(filename, model_dir, map_location, progress)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = safe_load_url(filename, model_dir, map_location, progress)
    return checkpoint


def _deprecated_name(old: str, new: str) -> None:
    print_log(f'{old} is deprecated in favor of {new}', logger='current', level=logging.WARNING)


def load_from_torchvision(filename: str, map_location: MapLocation = None) -> Any:
    """``torchvision://NAME`` (or the deprecated ``modelzoo://NAME``): torchvision's URL."""
    scheme, model_name = filename.split('://', 1)
    if scheme == 'modelzoo':
        _deprecated_name('The URL scheme "modelzoo://"', '"torchvision://"')
    return load_from_http(get_torchvision_models()[model_name], map_location=map_location)


def load_from_openmmlab(filename: str, map_location: MapLocation = None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: a URL or a file under mmengine's home, as
    listed by mmengine."""
    from mmengine.runner.checkpoint import _get_mmengine_home  # mmengine's cache folder
    scheme, model_name = filename.split('://', 1)
    renamed = get_deprecated_model_names()
    if model_name in renamed:
        _deprecated_name(f'{scheme}://{model_name}', f'{scheme}://{renamed[model_name]}')
        model_name = renamed[model_name]
    model_url = get_external_models()[model_name]
    if model_url.startswith(('http://', 'https://')):
        return load_from_http(model_url, map_location=map_location)
    return load_from_local(osp.join(_get_mmengine_home(), model_url), map_location)


def load_from_mmcls(filename: str, map_location: MapLocation = None) -> Any:
    """``mmcls://NAME``: mmcls' URL, keys renamed the way mmengine does."""
    from mmengine.runner.checkpoint import _process_mmcls_checkpoint  # mmengine's key mapping
    model_url = get_mmcls_models()[filename.split('://', 1)[1]]
    return _process_mmcls_checkpoint(load_from_http(model_url, map_location=map_location))


SAFE_SCHEMES: Tuple[Tuple[Tuple[str, ...], Callable], ...] = (
    (('', ), load_from_local),
    (('http://', 'https://'), load_from_http),
    (('modelzoo://', 'torchvision://'), load_from_torchvision),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
    (('mmcls://', ), load_from_mmcls),
)
"""mmengine's CheckpointLoader prefixes and the loaders :func:`safe_checkpoint_loading` gives
them (mmengine's own prefixes, so its prefix matching is unchanged)."""


@contextlib.contextmanager
def safe_checkpoint_loading() -> Iterator[None]:
    """While active, mmengine loads checkpoints safely (see the module docstring); on exit its
    scheme table is back as it was. Contexts nest.

    Enter it around the code that builds and runs the Runner, or calls ``load_checkpoint``.
    """
    # mmengine has register_scheme but no way to unregister: keep a copy of its table.
    saved = CheckpointLoader._schemes.copy()
    try:
        for prefixes, loader in SAFE_SCHEMES:
            CheckpointLoader.register_scheme(list(prefixes), loader, force=True)
        with checkpoint_globals_allowed():
            yield
    finally:
        CheckpointLoader._schemes = saved
