"""Fixes for the pinned stack: torch 2.13, numpy 2.x, mmengine 0.10.7, mmcv 2.1.0, mmdet 3.3.0.

``import ctvis`` calls :func:`apply_compat_fixes` once; calling it again does nothing. Every fix is
narrow (one module attribute or one exact warning), so nothing outside the broken call sites
changes. docs/troubleshooting.md lists the symptoms each fix removes.

1. **Checkpoint loading** (torch >= 2.6 defaults to ``torch.load(weights_only=True)``).
   mmengine 0.10.7 calls a bare ``torch.load``, which refuses the checkpoints mmengine's own Runner
   writes (they hold ``HistoryBuffer``, numpy arrays and dtypes), so resume, ``load_checkpoint``
   and ``tools/test.py`` fail; and its URL loader goes through ``torch.hub``, which unpickles
   downloads with ``weights_only=False``, i.e. it runs any code a file carries. ctvis swaps both for
   :func:`safe_torch_load` / :func:`safe_load_url`: ``torch.load(weights_only=False,
   pickle_module=<restricted unpickler>)``. That unpickler resolves only an allow-list of
   data-only globals (torch's tensor rebuild functions and dtypes, containers, numpy's array,
   dtype and scalar reconstruction, mmengine's ``HistoryBuffer`` with its default statistics
   methods); anything else raises :class:`UnsafeCheckpointError`. We use our own unpickler rather
   than torch's weights-only one with ``add_safe_globals`` because the latter is process-wide
   state and cannot read plain pickles (detectron2 ``.pkl`` weights), which
   :func:`safe_load_file` must load through the same safe path.
   Files the user trusts can be fully unpickled: :func:`trust_checkpoint` or the environment
   variable ``CTVIS_TRUSTED_CHECKPOINTS`` (paths, full URLs or ``sha256:<hex>`` content hashes).
   Downloads are cached under a name derived from the full URL, so trusting one URL never
   unpickles a file fetched from another URL with the same file name. A file that cannot be read
   (empty, cut short, not a checkpoint) raises :class:`CorruptCheckpointError` naming it.
2. **np.float** (removed in numpy 1.24) is still used by mmdet's
   ``mmdet/evaluation/functional/ytviseval.py`` (``YTVISeval.accumulate``, hence mmdet's
   ``YouTubeVISMetric``). Only that module's ``np`` is replaced by a view of numpy that adds
   ``float``; numpy itself is untouched.
3. **pkg_resources**: mmengine resolves ``mmdet::`` config bases with ``pkg_resources``. It works
   on the pinned setuptools (<80) but warns; where setuptools no longer ships it (>= 82) the same
   lookups are answered with ``importlib`` instead.
4. **Known deprecation noise** from torch/mmengine/mmdet/pycocotools on this stack is silenced by
   exact message + module filters (never a blanket ignore), so the warnings that matter stay
   visible; mmdet's ``torch.meshgrid`` calls get the ``indexing='ij'`` they rely on.
5. **Distributed on a CPU-only torch**: mmengine's launcher calls ``torch.cuda.set_device`` and
   its Runner hands ``device_ids`` to DDP for CPU modules; both fail without CUDA. Here they are
   skipped when there is no CUDA / the module is on the CPU (the tools pick the gloo backend).
"""
import collections
import functools
import hashlib
import importlib
import importlib.util
import io
import logging
import os
import os.path as osp
import pickle
import sys
import tarfile
import types
import warnings
import zipfile
from typing import Any, BinaryIO, Callable, Dict, FrozenSet, Optional, Tuple, Union

import numpy as np
import torch

__all__ = [
    'TRUSTED_CHECKPOINTS_ENV', 'CorruptCheckpointError', 'UnsafeCheckpointError',
    'apply_compat_fixes', 'checkpoint_problem', 'file_sha256', 'safe_load_file', 'safe_load_url',
    'safe_torch_load', 'trust_checkpoint', 'url_cache_file'
]

TRUSTED_CHECKPOINTS_ENV = 'CTVIS_TRUSTED_CHECKPOINTS'
"""Environment variable: whitespace-separated (spaces, tabs or newlines) entries whose checkpoints
may be fully unpickled (they can run code: list only what you trust). An entry is a file, a
directory (every file under it), a full URL (``https://...``; only that exact URL) or
``sha256:<64 hex digits>`` (any file with that content). Whitespace separates because it cannot
occur in a URL (``:`` and ``;`` can); a path containing whitespace is trusted by its hash or with
:func:`trust_checkpoint`."""

SHA256_PREFIX = 'sha256:'

MapLocation = Union[None, str, torch.device, Callable, Dict[str, str]]

# The first object of a legacy (non-zip) torch.save file; any other first object is a plain pickle.
_TORCH_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint asked for something the restricted unpickler does not rebuild.

    ``str(error)`` names the file and the refused global and says how to load a trusted file.
    """

    def __init__(self, source: str, refused: str) -> None:
        self.source = source
        self.refused = refused
        super().__init__(
            f'{source}: refusing to unpickle {refused}. ctvis loads checkpoints with a restricted '
            'unpickler that only rebuilds tensors, numpy arrays, plain containers and mmengine '
            'log buffers, so a weights file can never run code on load. If you trust this file, '
            'allow full unpickling for it with ctvis.utils.compat.trust_checkpoint(path) or '
            f"{TRUSTED_CHECKPOINTS_ENV}='{source}' (a whitespace-separated list of files, "
            'directories, full URLs or sha256:<hex> content hashes).')


class CorruptCheckpointError(ValueError):
    """A checkpoint file that cannot be read: empty, cut short, or not a checkpoint at all.

    ``str(error)`` names the file, the problem and what to do.
    """

    def __init__(self, path: str, problem: str, advice: Optional[str] = None) -> None:
        self.path = path
        self.problem = problem
        size = osp.getsize(path) if osp.isfile(path) else 0
        advice = advice or (
            'It was probably cut short (an interrupted save or download, a full disk) or is not '
            'a checkpoint. Delete it and use another one: tools/train.py --resume without a path '
            'falls back to the newest intact checkpoint of the work_dir.')
        super().__init__(f'{path}: not a readable checkpoint ({problem}; {size} bytes). {advice}')


class _Refused(pickle.UnpicklingError):
    """Raised inside the unpickler; the loader re-raises it as UnsafeCheckpointError(source)."""


# ----------------------------------------------------------------------------------------------
# 1. Restricted unpickling
# ----------------------------------------------------------------------------------------------

_trusted_sources: set = set()


def trust_checkpoint(entry: str) -> None:
    """Allow full (code-executing) unpickling for one file, every file under a directory, one
    exact URL, or any file whose content has the hash ``sha256:<64 hex digits>``.

    Use only for files you trust, e.g. your own checkpoints that hold custom Python objects.
    """
    _trusted_sources.add(os.fspath(entry))


def _trusted_entries() -> FrozenSet[str]:
    """What :func:`trust_checkpoint` and :data:`TRUSTED_CHECKPOINTS_ENV` trust."""
    listed = os.environ.get(TRUSTED_CHECKPOINTS_ENV, '').split()
    for entry in listed:
        if ':' in entry and '://' not in entry and not entry.startswith(SHA256_PREFIX):
            warnings.warn(
                f'{TRUSTED_CHECKPOINTS_ENV} entry {entry!r} contains ":" but is neither a URL nor '
                'a sha256: hash; entries are separated by whitespace (not ":"), so it trusts '
                'only a path of exactly that name', stacklevel=3)
    return frozenset(_trusted_sources.union(listed))


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's content (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, 'rb') as stream:
        for block in iter(lambda: stream.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _trusted_by_hash(entries: FrozenSet[str], path: Optional[str]) -> bool:
    hashes = {e[len(SHA256_PREFIX):].lower() for e in entries if e.startswith(SHA256_PREFIX)}
    return bool(hashes) and path is not None and osp.isfile(path) and file_sha256(path) in hashes


def _is_trusted(source: str, path: Optional[str] = None) -> bool:
    """Whether ``source`` (a path or URL) may be fully unpickled; ``path`` is the file read.

    A URL is trusted by exactly that URL (never by the name or folder of its cached copy); a file
    by its path or a directory above it; either by the sha256 of ``path``'s content.
    """
    entries = _trusted_entries()
    if source in entries:
        return True
    if '://' not in source:
        real_source = osp.realpath(osp.expanduser(source))
        for entry in entries:
            if '://' in entry or entry.startswith(SHA256_PREFIX):
                continue
            real_entry = osp.realpath(osp.expanduser(entry))
            if real_source == real_entry or real_source.startswith(
                    real_entry.rstrip(os.sep) + os.sep):
                return True
        path = source if path is None else path
    return _trusted_by_hash(entries, path)


def _refuse(what: str) -> None:
    raise _Refused(what)


def _latin1_encode(text: str, encoding: str = 'utf-8') -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: only ``(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        _refuse(f'_codecs.encode with encoding {encoding!r}')
    return text.encode('latin1')


_ALLOWED_ATTRIBUTES: Dict[int, Tuple[Any, frozenset]] = {}


def _restricted_getattr(obj: Any, name: str) -> Any:
    """``getattr`` for the (object, name) pairs that checkpoints need, nothing else.

    Protocol-2 pickles reach methods through ``getattr(cls, name)``: mmengine's ``HistoryBuffer``
    stores its default statistics methods (``HistoryBuffer.mean`` ...) that way.
    """
    allowed = _ALLOWED_ATTRIBUTES.get(id(obj))
    if allowed is None or allowed[0] is not obj or name not in allowed[1]:
        _refuse(f'getattr({getattr(obj, "__qualname__", type(obj).__name__)}, {name!r})')
    return getattr(obj, name)


def _without_backward_hooks(rebuild: Callable, hooks_index: int) -> Callable:
    """Wrap a torch rebuild function so a tensor cannot arrive with pickled backward hooks."""

    @functools.wraps(rebuild)
    def checked_rebuild(*args: Any) -> Any:
        if len(args) > hooks_index and args[hooks_index]:
            _refuse(f'a tensor with backward hooks ({rebuild.__name__})')
        return rebuild(*args)

    return checked_rebuild


def _rebuild_tensor_subclass(func: Callable, new_type: type, args: tuple, state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2`` limited to plain tensors and parameters."""
    if new_type not in (torch.Tensor, torch.nn.Parameter):
        _refuse(f'a tensor of type {getattr(new_type, "__qualname__", new_type)!r}')
    return torch._tensor._rebuild_from_type_v2(func, new_type, args, state)


@functools.lru_cache(maxsize=None)
def _allowed_globals() -> Dict[Tuple[str, str], Any]:
    """(module, name) -> object for every global a Runner checkpoint or a state dict needs."""
    from mmengine.logging.history_buffer import HistoryBuffer
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric

    statistics = frozenset(name for name in ('min', 'max', 'current', 'mean')
                           if callable(getattr(HistoryBuffer, name, None)))
    _ALLOWED_ATTRIBUTES[id(HistoryBuffer)] = (HistoryBuffer, statistics)

    utils = torch._utils
    allowed: Dict[Tuple[str, str], Any] = {
        ('collections', 'OrderedDict'): collections.OrderedDict,
        ('collections', 'Counter'): collections.Counter,
        ('builtins', 'set'): set,
        ('builtins', 'frozenset'): frozenset,
        ('builtins', 'complex'): complex,
        ('builtins', 'getattr'): _restricted_getattr,
        ('_codecs', 'encode'): _latin1_encode,
        ('torch', 'Size'): torch.Size,
        ('torch', 'device'): torch.device,
        ('torch', 'Tensor'): torch.Tensor,
        ('torch', 'UntypedStorage'): torch.UntypedStorage,
        ('torch.nn.parameter', 'Parameter'): torch.nn.Parameter,
        ('torch._utils', '_rebuild_tensor'): utils._rebuild_tensor,
        ('torch._tensor', '_rebuild_from_type_v2'): _rebuild_tensor_subclass,
        ('numpy', 'ndarray'): np.ndarray,
        ('numpy', 'dtype'): np.dtype,
        ('mmengine.logging.history_buffer', 'HistoryBuffer'): HistoryBuffer,
    }
    # the rebuild functions that take backward hooks, and the position of that argument
    for rebuild, hooks_index in ((utils._rebuild_tensor_v2, 5), (utils._rebuild_tensor_v3, 5),
                                 (utils._rebuild_parameter, 2),
                                 (utils._rebuild_parameter_with_state, 2)):
        allowed[('torch._utils', rebuild.__name__)] = _without_backward_hooks(rebuild, hooks_index)
    # numpy 2 pickles name numpy._core, numpy 1 pickles numpy.core: both map to the same objects
    # without importing the deprecated numpy.core shim.
    for package in ('numpy._core', 'numpy.core'):
        allowed[(f'{package}.multiarray', '_reconstruct')] = multiarray._reconstruct
        allowed[(f'{package}.multiarray', 'scalar')] = multiarray.scalar
        allowed[(f'{package}.numeric', '_frombuffer')] = numeric._frombuffer
    for name, value in vars(torch).items():  # not dir()/getattr: that would import lazy modules
        if isinstance(value, torch.dtype):
            allowed[('torch', name)] = value
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose ``find_class`` only returns allow-listed, data-only globals."""

    def find_class(self, module: str, name: str) -> Any:
        import _compat_pickle  # protocol-2 pickles may use Python 2 names (__builtin__ ...)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _allowed_globals()[(module, name)]
        except KeyError:
            _refuse(f'the global {module}.{name}')


def _restricted_pickle_module() -> types.ModuleType:
    """A ``pickle_module`` for ``torch.load``: ``Unpickler`` and ``load`` are restricted."""
    module = types.ModuleType('ctvis_restricted_pickle')
    module.Unpickler = _RestrictedUnpickler
    module.load = lambda file, **kwargs: _RestrictedUnpickler(file, **kwargs).load()
    return module


def _torch_forces_weights_only() -> bool:
    return os.getenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '0').lower() in ('1', 'y', 'yes', 'true')


def _is_torch_legacy_header(first_object: Any) -> bool:
    return isinstance(first_object, int) and first_object == _TORCH_LEGACY_MAGIC_NUMBER


# A torch zip checkpoint starts with a zip local-file header; zipfile needs its directory at the
# end (missing when the file was cut short).
_ZIP_LOCAL_HEADER = b'PK\x03\x04'
# What reading a damaged file raises from pickle, zipfile, tarfile or torch's zip reader.
_READ_ERRORS = (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, tarfile.TarError, OSError,
                ValueError, KeyError, IndexError, OverflowError)


def _is_damaged_torch_zip_error(error: RuntimeError) -> bool:
    return 'PytorchStreamReader' in str(error) or 'zip archive' in str(error)


def _load_stream(stream: BinaryIO, map_location: MapLocation, source: str, trusted: bool,
                 path: Optional[str] = None) -> Any:
    """Load a torch checkpoint (zip or legacy) or a plain pickle from a seekable binary stream.

    ``source`` names the file in messages; ``trusted`` files are fully unpickled; ``path``, when
    the stream is that file, lets torch read the file itself (twice as fast).
    """
    start = stream.tell()
    is_zip = zipfile.is_zipfile(stream)
    stream.seek(start)
    if not is_zip and stream.read(len(_ZIP_LOCAL_HEADER)) == _ZIP_LOCAL_HEADER:
        raise CorruptCheckpointError(path or source, 'a zip (torch) checkpoint without the '
                                     'directory at its end: it was cut short')
    stream.seek(start)
    is_tar = not is_zip and _is_tar(stream)

    def torch_load(**kwargs: Any) -> Any:
        stream.seek(start)
        return torch.load(path if path is not None else stream, map_location=map_location,
                          **kwargs)

    if trusted:
        from mmengine.logging import print_log
        print_log(f'{source} is trusted ({TRUSTED_CHECKPOINTS_ENV} / trust_checkpoint): loading '
                  'it with full unpickling', logger='current', level=logging.INFO)
        if not (is_zip or is_tar):
            first = pickle.load(stream, encoding='latin1')
            if not _is_torch_legacy_header(first):
                return first
        return torch_load(weights_only=False)
    if _torch_forces_weights_only():  # the user asked torch for its own, stricter loader
        return torch_load(weights_only=True)
    try:
        if is_zip:
            with zipfile.ZipFile(stream) as archive:
                if any(n.endswith('constants.pkl') for n in archive.namelist()):
                    raise UnsafeCheckpointError(source, 'a TorchScript archive (it holds code)')
        elif not is_tar:
            first = _RestrictedUnpickler(stream, encoding='latin1').load()
            if not _is_torch_legacy_header(first):
                return first  # a plain pickle, e.g. detectron2 .pkl weights
        return torch_load(weights_only=False, pickle_module=_restricted_pickle_module())
    except _Refused as refused:
        raise UnsafeCheckpointError(source, str(refused)) from None


def _is_tar(stream: BinaryIO) -> bool:
    start = stream.tell()
    try:
        with tarfile.open(fileobj=stream, mode='r:'):
            return True
    except tarfile.TarError:
        return False
    finally:
        stream.seek(start)


def safe_load_file(path: Union[str, os.PathLike],
                   map_location: MapLocation = None) -> Any:
    """Load a checkpoint file without ever running code from it.

    Handles torch zip checkpoints, legacy torch files and plain pickles (detectron2 ``.pkl``
    weights: a pickled dict of numpy arrays, read with ``encoding='latin1'`` like detectron2 does).

    Args:
        path: the file.
        map_location: as for :func:`torch.load` (e.g. ``'cpu'``).

    Returns:
        The unpickled object, e.g. a state dict of tensors or a dict of numpy arrays.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        UnsafeCheckpointError: the file asks for a global outside the allow-list.
        CorruptCheckpointError: the file is empty, cut short or not a checkpoint.
    """
    path = osp.expanduser(os.fspath(path))
    return _load_path(path, map_location, path, _is_trusted(path))


def _load_path(path: str, map_location: MapLocation, source: str, trusted: bool,
               advice: Optional[str] = None) -> Any:
    """Load ``path`` (read as ``source``); read errors become :class:`CorruptCheckpointError`."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: checkpoint file not found')
    if osp.getsize(path) == 0:
        raise CorruptCheckpointError(path, 'the file is empty', advice)
    with open(path, 'rb') as stream:
        try:
            return _load_stream(stream, map_location, source, trusted, path)
        except UnsafeCheckpointError:
            raise
        except CorruptCheckpointError as error:
            raise CorruptCheckpointError(path, error.problem, advice) from None
        except _READ_ERRORS as error:
            if 'Weights only load failed' in str(error):  # TORCH_FORCE_WEIGHTS_ONLY_LOAD refusal
                raise
            raise CorruptCheckpointError(path, f'{type(error).__name__}: {error}',
                                         advice) from None
        except RuntimeError as error:
            if not _is_damaged_torch_zip_error(error):
                raise
            raise CorruptCheckpointError(path, str(error).split('. ')[0], advice) from None


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` is not an intact checkpoint file, or None; cheap, nothing is unpickled.

    Zip (torch) checkpoints are checked member by member against their CRCs, which torch itself
    does not do (a flipped byte in a tensor would load silently); other files are loaded with the
    restricted unpickler. A file that is intact but refused as unsafe counts as intact: loading it
    reports that.
    """
    if not osp.isfile(path):
        return 'no such file'
    if osp.getsize(path) == 0:
        return 'the file is empty'
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
                if damaged is not None:
                    return f'the member {damaged} fails its CRC check'
                if not any(n.endswith('data.pkl') for n in archive.namelist()):
                    return 'a zip file without data.pkl, not a torch checkpoint'
            return None
        safe_load_file(path, map_location='cpu')
    except CorruptCheckpointError as error:
        return error.problem
    except zipfile.BadZipFile as error:
        return f'BadZipFile: {error}'
    except UnsafeCheckpointError:
        pass
    return None


def safe_torch_load(f: Union[str, os.PathLike, BinaryIO],
                    map_location: MapLocation = None) -> Any:
    """Drop-in for the ``torch.load(f, map_location=...)`` calls in mmengine's checkpoint code.

    ``f`` is a path or a seekable binary stream (mmengine's petrel/s3 loader passes a BytesIO).
    """
    if isinstance(f, (str, os.PathLike)):
        return safe_load_file(f, map_location)
    name = getattr(f, 'name', None)
    if not f.seekable():
        f = io.BytesIO(f.read())
    if isinstance(name, str):
        return _load_stream(f, map_location, name, _is_trusted(name))
    return _load_stream(f, map_location, '<in-memory checkpoint>', False)


def url_cache_file(url: str, model_dir: Optional[str] = None,
                   file_name: Optional[str] = None) -> str:
    """Where :func:`safe_load_url` keeps the download of ``url``.

    The name starts with a digest of the full URL: two URLs with the same file name (one refused,
    one trusted) never share a cached file.
    """
    from urllib.parse import urlparse
    if model_dir is None:
        model_dir = osp.join(torch.hub.get_dir(), 'checkpoints')
    url_key = hashlib.sha256(url.encode('utf-8')).hexdigest()[:16]
    return osp.join(model_dir, f'{url_key}-{file_name or osp.basename(urlparse(url).path)}')


def safe_load_url(url: str,
                  model_dir: Optional[str] = None,
                  map_location: MapLocation = None,
                  progress: bool = True,
                  check_hash: bool = False,
                  file_name: Optional[str] = None) -> Any:
    """Download ``url`` into the torch hub cache (once) and load it with the restricted unpickler.

    Same arguments as mmengine's ``load_url`` / ``torch.hub.load_state_dict_from_url``, which
    would unpickle the download with ``weights_only=False``. The cached file is named after the
    full URL (:func:`url_cache_file`) and is fully unpickled only when that exact URL, or the
    sha256 of the downloaded content, is trusted. ``check_hash`` verifies the hash prefix in the
    URL's file name (torch.hub's convention). Legacy (torch < 1.6) zipped files are extracted
    first, as torch.hub does, into a folder of their own.
    """
    from urllib.parse import urlparse
    cached_file = url_cache_file(url, model_dir, file_name)
    os.makedirs(osp.dirname(cached_file), exist_ok=True)
    if not osp.exists(cached_file):
        sys.stderr.write(f'Downloading: "{url}" to {cached_file}\n')
        hash_prefix = None
        if check_hash:
            match = torch.hub.HASH_REGEX.search(file_name or osp.basename(urlparse(url).path))
            hash_prefix = match.group(1) if match else None
        torch.hub.download_url_to_file(url, cached_file, hash_prefix, progress=progress)
    advice = f'It is the cached download of {url}: delete it to download it again.'
    loaded_file = cached_file
    if zipfile.is_zipfile(cached_file):
        with zipfile.ZipFile(cached_file) as archive:
            members = archive.infolist()
            if len(members) == 1 and not members[0].is_dir():  # torch < 1.6 hub convention
                extracted = cached_file + '.extracted'
                archive.extractall(extracted)
                loaded_file = osp.join(extracted, members[0].filename)
    return _load_path(loaded_file, map_location, url, _is_trusted(url, loaded_file), advice)


class _ModuleOverlay(types.ModuleType):
    """A module seen through a few replaced attributes; everything else is the module itself.

    Installed as one module's global (e.g. ``mmengine.runner.checkpoint.torch``) so that a fix
    reaches exactly that module's call sites.
    """

    def __init__(self, base: types.ModuleType, **overrides: Any) -> None:
        super().__init__(base.__name__, base.__doc__)
        self.__dict__.update(overrides)
        self.__dict__['_overlay_base'] = base

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__['_overlay_base'], name)


def _patch_mmengine_checkpoint_loading() -> None:
    """Route every torch.load / load_url of mmengine's checkpoint code through the safe loaders.

    Covers ``CheckpointLoader`` schemes (local, http(s), torchvision://, open-mmlab://, mmcls://,
    pavi://, s3/petrel), ``_load_checkpoint``, ``load_checkpoint``, ``Runner.resume`` and
    ``Runner.load_checkpoint`` (all look ``torch``/``load_url`` up in the checkpoint module), and
    ``mmengine.utils.dl_utils.load_url`` for code that calls it directly.
    """
    import mmengine.runner.checkpoint as checkpoint_module
    import mmengine.utils.dl_utils as dl_utils
    import mmengine.utils.dl_utils.hub as hub_module
    if not isinstance(checkpoint_module.torch, _ModuleOverlay):
        checkpoint_module.torch = _ModuleOverlay(torch, load=safe_torch_load)
    if isinstance(getattr(hub_module, 'torch', None), types.ModuleType) and not isinstance(
            hub_module.torch, _ModuleOverlay):  # only bound on torch < 1.7
        hub_module.torch = _ModuleOverlay(torch, load=safe_torch_load)
    for module in (checkpoint_module, dl_utils, hub_module):
        module.load_url = safe_load_url


# ----------------------------------------------------------------------------------------------
# 2. np.float in mmdet's ytviseval
# ----------------------------------------------------------------------------------------------


def _patch_mmdet_ytviseval_np_float() -> None:
    """Give ``mmdet.evaluation.functional.ytviseval`` a numpy view that still has ``np.float``."""
    if hasattr(np, 'float'):  # numpy < 1.24: nothing to fix
        return
    ytviseval = importlib.import_module('mmdet.evaluation.functional.ytviseval')
    if not isinstance(ytviseval.np, _ModuleOverlay):
        ytviseval.np = _ModuleOverlay(np, float=float)


# ----------------------------------------------------------------------------------------------
# 3. mmdet:: config bases without pkg_resources
# ----------------------------------------------------------------------------------------------


def _is_installed(package: str) -> bool:
    """mmengine's ``is_installed`` answered with importlib (no pkg_resources)."""
    from importlib import metadata
    try:
        metadata.distribution(package)
        return True
    except metadata.PackageNotFoundError:
        spec = importlib.util.find_spec(package)
        return spec is not None and spec.origin is not None


def _get_installed_path(package: str) -> str:
    """mmengine's ``get_installed_path`` answered with importlib (no pkg_resources)."""
    from importlib import metadata
    module_name = package
    try:
        top_level = metadata.distribution(package).read_text('top_level.txt')
        if top_level and top_level.split():
            module_name = top_level.split()[0]
    except metadata.PackageNotFoundError:
        pass
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f'cannot locate the installed package {package!r} '
                                  '(is it installed, and not a namespace package?)')
    return osp.dirname(spec.origin)


def _patch_package_lookup_without_pkg_resources() -> None:
    """Where setuptools no longer ships pkg_resources (>= 82), keep ``mmdet::`` bases working."""
    if importlib.util.find_spec('pkg_resources') is not None:
        return  # mmengine's own lookup works (pinned setuptools < 80)
    import mmengine.config.config as config_module
    import mmengine.utils as mmengine_utils
    import mmengine.utils.package_utils as package_utils
    modules = [package_utils, mmengine_utils, config_module]
    if 'mmengine.hub.hub' in sys.modules:  # imported the names already; later imports see ours
        modules.append(sys.modules['mmengine.hub.hub'])
    for module in modules:
        for name, replacement in (('is_installed', _is_installed),
                                  ('get_installed_path', _get_installed_path)):
            if hasattr(module, name):
                setattr(module, name, replacement)


# ----------------------------------------------------------------------------------------------
# 4. Known deprecation noise
# ----------------------------------------------------------------------------------------------

# (message regex, category, module regex): each warns on every run about a call inside
# mmengine/mmdet/torch that a user cannot change; none names a problem in user code.
KNOWN_DEPRECATION_WARNINGS = (
    # mmengine's package lookup for `mmdet::` config bases imports, then reloads, pkg_resources.
    (r'pkg_resources is deprecated as an API', DeprecationWarning,
     r'mmengine\.utils\.package_utils\Z'),
    (r'pkg_resources is deprecated as an API', DeprecationWarning, r'importlib\Z'),
    # mmengine AmpOptimWrapper (--amp on CUDA) builds torch.cuda.amp.GradScaler.
    (r'`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated', FutureWarning,
     r'mmengine\.optim\.optimizer\.amp_optimizer_wrapper\Z'),
    # mmengine.runner.amp.autocast on CUDA asks torch.get_autocast_gpu_dtype().
    (r'torch\.get_autocast_gpu_dtype\(\) is deprecated', DeprecationWarning,
     r'mmengine\.runner\.amp\Z'),
    # three mmdet modules still enter torch.cuda.amp.autocast(enabled=False).
    (r'`torch\.cuda\.amp\.autocast\(args\.\.\.\)` is deprecated', FutureWarning,
     r'mmdet\.models\.(backbones\.csp_darknet|task_modules\.assigners\.sim_ota_assigner'
     r'|layers\.se_layer)\Z'),
    # mmdet imports MultiScaleDeformableAttention from its old mmcv location.
    (r'``MultiScaleDeformableAttention`` has been moved to ``mmcv\.ops\.multi_scale_deform_attn``',
     ImportWarning, r'mmcv\.cnn\.bricks\.transformer\Z'),
    # pycocotools' Cython Masks.__array__ predates numpy 2's copy keyword; every mask.decode()
    # warns (numpy falls back to the old call, results are right).
    (r"__array__ implementation doesn't accept a copy keyword", DeprecationWarning,
     r'pycocotools\.mask\Z'),
)

# Emitted while importing torch.distributed.optim (mmengine's ZeroRedundancyOptimizer import):
# 67 DeprecationWarnings about torch's own module-level torch.jit.script / interface calls.
# Silenced only for that import, so a user's own torch.jit.script still warns.
_TORCH_IMPORT_NOISE = r'`torch\.jit\.(script|interface)` is deprecated'

# mmengine's CheckpointHook and LoggerHook build a FileClient on every run, even when the config
# never mentions one; mmengine then logs these two WARNING lines about its own internals.
KNOWN_LOG_NOISE = frozenset({
    '"FileClient" will be deprecated in future. Please use io functions in '
    'https://mmengine.readthedocs.io/en/latest/api/fileio.html#file-io',
    '"HardDiskBackend" is the alias of "LocalBackend" and the former will be deprecated in '
    'future.',
})


def _filter_known_deprecation_noise() -> None:
    """Install the exact-message filters above (each once)."""
    installed = {(getattr(f[1], 'pattern', f[1]), f[2], getattr(f[3], 'pattern', f[3]))
                 for f in warnings.filters}
    for message, category, module in KNOWN_DEPRECATION_WARNINGS:
        if (message, category, module) not in installed:
            warnings.filterwarnings('ignore', message=message, category=category, module=module)

    if torch.distributed.is_available() and 'torch.distributed.optim' not in sys.modules:
        with warnings.catch_warnings():
            warnings.filterwarnings('ignore', message=_TORCH_IMPORT_NOISE,
                                    category=DeprecationWarning, module=r'torch\.jit\._script\Z')
            importlib.import_module('torch.distributed.optim')

    from mmengine.logging import logger as logger_module
    duplicate_filter = logger_module.FilterDuplicateWarning
    if not getattr(duplicate_filter.filter, '_ctvis_known_noise', False):
        keep_record = duplicate_filter.filter

        @functools.wraps(keep_record)
        def filter_known_noise(self: logging.Filter, record: logging.LogRecord) -> bool:
            return record.msg not in KNOWN_LOG_NOISE and keep_record(self, record)

        filter_known_noise._ctvis_known_noise = True
        duplicate_filter.filter = filter_known_noise


# mmdet modules that call torch.meshgrid without ``indexing`` (torch warns it will become
# required); they all mean the current default, 'ij'. CTVIS' pixel decoder goes through the first.
MMDET_MESHGRID_MODULES = (
    'mmdet.models.layers.transformer.deformable_detr_layers',
    'mmdet.models.detectors.deformable_detr',
    'mmdet.models.task_modules.prior_generators.point_generator',
    'mmdet.models.dense_heads.cascade_rpn_head',
    'mmdet.models.utils.misc',
)


def _meshgrid_ij(*tensors: Any, indexing: str = 'ij') -> Tuple[torch.Tensor, ...]:
    return torch.meshgrid(*tensors, indexing=indexing)


def _patch_mmdet_meshgrid_indexing() -> None:
    """Pass ``indexing='ij'`` (today's default) for mmdet's torch.meshgrid calls.

    Removes ``UserWarning: torch.meshgrid: in an upcoming release, it will be required to pass
    the indexing argument`` at its source, without hiding it for anyone else's calls.
    """
    for name in MMDET_MESHGRID_MODULES:
        module = importlib.import_module(name)
        if not isinstance(module.torch, _ModuleOverlay):
            module.torch = _ModuleOverlay(torch, meshgrid=_meshgrid_ij)


# ----------------------------------------------------------------------------------------------
# 5. Distributed runs with a CPU-only torch (gloo)
# ----------------------------------------------------------------------------------------------


def _set_cuda_device_if_any(device: Any) -> None:
    """``torch.cuda.set_device`` that does nothing where torch has no CUDA.

    mmengine's pytorch/slurm/mpi launchers call ``torch.cuda.set_device(local_rank)``
    unconditionally; a CPU-only torch raises ``AttributeError: module 'torch._C' has no
    attribute '_cuda_setDevice'`` there.
    """
    if torch.cuda.is_available():
        torch.cuda.set_device(device)


def _patch_mmengine_cpu_distributed() -> None:
    """Let ``init_dist`` and the Runner's DDP wrapper work on CPU-only machines (gloo)."""
    import mmengine.dist.utils as dist_utils
    from mmengine.model.wrappers.distributed import MMDistributedDataParallel
    if not isinstance(dist_utils.torch, _ModuleOverlay):
        dist_utils.torch = _ModuleOverlay(
            torch, cuda=_ModuleOverlay(torch.cuda, set_device=_set_cuda_device_if_any))

    wrap = MMDistributedDataParallel.__init__
    if getattr(wrap, '_ctvis_cpu_modules', False):
        return

    @functools.wraps(wrap)
    def init_without_cpu_device_ids(self, module: torch.nn.Module, *args: Any,
                                    **kwargs: Any) -> None:
        # The Runner always passes device_ids=[LOCAL_RANK]; torch's DDP accepts device_ids only
        # for modules on one GPU and rejects them for CPU modules.
        if kwargs.get('device_ids') and all(p.device.type == 'cpu' for p in module.parameters()):
            kwargs['device_ids'] = None
        wrap(self, module, *args, **kwargs)

    init_without_cpu_device_ids._ctvis_cpu_modules = True
    MMDistributedDataParallel.__init__ = init_without_cpu_device_ids


# ----------------------------------------------------------------------------------------------


def apply_compat_fixes() -> None:
    """Apply every fix above; idempotent (``import ctvis`` calls it)."""
    _filter_known_deprecation_noise()  # first: the imports below would trigger the noise
    _patch_mmengine_checkpoint_loading()
    _patch_package_lookup_without_pkg_resources()
    _patch_mmdet_ytviseval_np_float()
    _patch_mmdet_meshgrid_indexing()
    _patch_mmengine_cpu_distributed()


apply_compat_fixes()
