"""Load checkpoints without ever running code from them, with errors that name the file.

torch files go through torch's own weights-only loader (``torch.load(weights_only=True)``), with
exactly the extra types a checkpoint written by mmengine's Runner holds allow-listed
(:func:`checkpoint_safe_globals`): mmengine's ``HistoryBuffer`` and its default statistics methods,
numpy arrays, dtypes and scalars (the log history and :class:`ctvis.engine.RNGStateHook`'s
generator states). The allow-list is added to torch's (process-wide) one only while a load runs,
or while :func:`checkpoint_globals_allowed` is active.

Plain pickles (detectron2 ``.pkl`` weights: a dict of numpy arrays) are not torch files, so
``torch.load`` cannot read them, and torch's weights-only unpickler reads only pickle protocol 2
while detectron2 writes protocol 4. They are read by :class:`_DataUnpickler`, a ``pickle``
unpickler that rebuilds numpy arrays, dtypes and scalars, ``OrderedDict`` and bytes, nothing else.

Files the user trusts (:mod:`ctvis.utils.checkpoint_trust`) are fully unpickled. A file that
cannot be read raises :class:`CorruptCheckpointError`; one that asks for anything outside the
allow-list raises :class:`UnsafeCheckpointError`; both name the file.
"""
import collections
import contextlib
import functools
import hashlib
import io
import logging
import os
import os.path as osp
import pickle
import re
import sys
import tarfile
import threading
import zipfile
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from .checkpoint_trust import TRUSTED_CHECKPOINTS_ENV, is_trusted

__all__ = [
    'CorruptCheckpointError', 'UnsafeCheckpointError', 'checkpoint_globals_allowed',
    'checkpoint_problem', 'checkpoint_safe_globals', 'safe_load_file', 'safe_load_url',
    'safe_torch_load', 'url_cache_file'
]

MapLocation = Union[None, str, torch.device, Callable, Dict[str, str]]

# The first object of a legacy (non-zip) torch.save file; any other first object is a plain pickle.
_TORCH_LEGACY_MAGIC_NUMBER = 0x1950a86a20f9469cfc6c
# HistoryBuffer's default statistics: protocol-2 pickles reach them as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_STATISTICS = frozenset({'min', 'max', 'current', 'mean'})


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint asked for something the weights-only loader does not rebuild.

    ``str(error)`` names the file and the refused global and says how to load a trusted file.
    """

    def __init__(self, source: str, refused: str) -> None:
        self.source = source
        self.refused = refused
        super().__init__(
            f'{source}: refusing to unpickle {refused}. ctvis loads checkpoints with torch\'s '
            'weights-only loader, which only rebuilds tensors, numpy arrays, plain containers '
            'and mmengine log buffers, so a weights file can never run code on load. If you '
            'trust this file, allow full unpickling for it with '
            f"ctvis.utils.trust_checkpoint(path) or {TRUSTED_CHECKPOINTS_ENV}='{source}' (a "
            'whitespace-separated list of files, directories, full URLs or sha256:<hex> content '
            'hashes).')


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
    """Raised while unpickling; the loader re-raises it as UnsafeCheckpointError(source)."""


def _qualname(obj: Any) -> str:
    return getattr(obj, '__qualname__', type(obj).__name__)


def _history_buffer_statistic(obj: Any, name: str) -> Any:
    """``getattr`` for ``(HistoryBuffer, 'min'|'max'|'current'|'mean')`` only.

    Protocol-2 pickles (``torch.save``'s default) reach the statistics methods mmengine's
    ``HistoryBuffer`` stores as ``getattr(HistoryBuffer, 'mean')``; a general ``getattr`` would
    reach anything (a function's ``__globals__``, for one).
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is not HistoryBuffer or name not in _HISTORY_BUFFER_STATISTICS:
        raise _Refused(f'getattr({_qualname(obj)}, {name!r})')
    return getattr(obj, name)


def _numpy_modules() -> Tuple[Any, Any]:
    try:
        from numpy._core import multiarray, numeric  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray, numeric
    return multiarray, numeric


def _numpy_globals() -> Dict[str, Any]:
    """'module.name' -> object for numpy's array, dtype and scalar reconstruction.

    numpy 2 pickles name ``numpy._core``, numpy 1 pickles ``numpy.core``: both map to the same
    objects, without importing the deprecated ``numpy.core`` shim.
    """
    multiarray, numeric = _numpy_modules()
    found = {'numpy.ndarray': np.ndarray, 'numpy.dtype': np.dtype}
    for package in ('numpy._core', 'numpy.core'):
        found[f'{package}.multiarray._reconstruct'] = multiarray._reconstruct
        found[f'{package}.multiarray.scalar'] = multiarray.scalar
        found[f'{package}.numeric._frombuffer'] = numeric._frombuffer
    return found


@functools.lru_cache(maxsize=None)
def checkpoint_safe_globals() -> Tuple[Tuple[Any, str], ...]:
    """The ``(object, 'module.name')`` entries that torch's weights-only loader needs, beyond its
    defaults, to read the checkpoints mmengine's Runner writes (and ctvis' RNGStateHook adds to).

    mmengine's ``HistoryBuffer``; ``getattr`` limited to its statistics methods; numpy's array,
    dtype and scalar reconstruction; and the dtype classes (``np.dtype('float32')`` is a
    ``numpy.dtypes.Float32DType``), which torch's loader must be told it may ``__setstate__``.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    entries = [(HistoryBuffer, 'mmengine.logging.history_buffer.HistoryBuffer'),
               (_history_buffer_statistic, 'builtins.getattr')]
    entries += [(obj, name) for name, obj in _numpy_globals().items()]
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes['All']} - {np.dtype}
    entries += [(cls, f'{cls.__module__}.{cls.__qualname__}')
                for cls in sorted(dtype_classes, key=_qualname)]
    return tuple(entries)


_allow_list_lock = threading.Lock()
_allow_list_users = 0
_allow_list_added: List[Tuple[Any, str]] = []


@contextlib.contextmanager
def checkpoint_globals_allowed() -> Iterator[None]:
    """While active, torch's weights-only loader (any ``torch.load``, mmengine's bare calls too)
    also accepts :func:`checkpoint_safe_globals`.

    torch keeps its allow-list process-wide: entries already there (a user's own
    ``add_safe_globals``) are left alone, the others are added on the first entry and removed
    when the last active context exits (contexts may nest and overlap across threads).
    """
    global _allow_list_users, _allow_list_added
    with _allow_list_lock:
        if _allow_list_users == 0:
            present = set(torch.serialization.get_safe_globals())
            _allow_list_added = [g for g in checkpoint_safe_globals() if g not in present]
            torch.serialization.add_safe_globals(_allow_list_added)
        _allow_list_users += 1
    try:
        yield
    finally:
        with _allow_list_lock:
            _allow_list_users -= 1
            if _allow_list_users == 0:
                kept = [g for g in torch.serialization.get_safe_globals()
                        if g not in _allow_list_added]
                torch.serialization.clear_safe_globals()
                torch.serialization.add_safe_globals(kept)
                _allow_list_added = []


def _latin1_encode(text: str, encoding: str = 'utf-8') -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: only ``(str, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ('latin1', 'latin-1'):
        raise _Refused(f'_codecs.encode with encoding {encoding!r}')
    return text.encode('latin1')


@functools.lru_cache(maxsize=None)
def _plain_pickle_globals() -> Dict[str, Any]:
    return dict(_numpy_globals(), **{'collections.OrderedDict': collections.OrderedDict,
                                     '_codecs.encode': _latin1_encode})


class _DataUnpickler(pickle.Unpickler):
    """Reads plain pickles of numpy data (detectron2 ``.pkl``): numpy's array, dtype and scalar
    reconstruction, ``OrderedDict`` and bytes are the only globals it resolves."""

    def find_class(self, module: str, name: str) -> Any:
        import _compat_pickle  # protocol-2 pickles may use Python 2 names (__builtin__ ...)
        module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        try:
            return _plain_pickle_globals()[f'{module}.{name}']
        except KeyError:
            raise _Refused(f'the global {module}.{name}') from None


def _is_torch_legacy_header(first_object: Any) -> bool:
    return isinstance(first_object, int) and first_object == _TORCH_LEGACY_MAGIC_NUMBER


# A torch zip checkpoint starts with a zip local-file header; zipfile needs its directory at the
# end (missing when the file was cut short).
_ZIP_LOCAL_HEADER = b'PK\x03\x04'
# What reading a damaged file raises from pickle, zipfile, tarfile or torch's zip reader.
_READ_ERRORS = (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, tarfile.TarError, OSError,
                ValueError, KeyError, IndexError, OverflowError)
# How torch.load(weights_only=True) says that it refused something.
_WEIGHTS_ONLY_REFUSAL = 'Weights only load failed'


def _is_damaged_torch_zip_error(error: RuntimeError) -> bool:
    """A zip checkpoint torch cannot read, or a legacy (non-zip) one cut short in its tensor
    data ("unexpected EOF, expected N more bytes. The file might be corrupted.")."""
    return any(sign in str(error) for sign in ('PytorchStreamReader', 'zip archive',
                                               'unexpected EOF'))


def _refusal(message: str) -> str:
    """What torch's weights-only loader refused, from its error message."""
    refused_global = re.search(r'GLOBAL (\S+) (?:was not an allowed global|whose module)', message)
    if refused_global:
        return f'the global {refused_global.group(1)}'
    # torch's preamble, the unpickler's own message, torch's pointer to its documentation
    paragraphs = [p.strip() for p in message.split('\n\n') if p.strip() and not p.strip(
    ).startswith(('Weights only load failed', 'Check the documentation'))]
    return (paragraphs[-1] if paragraphs else message).splitlines()[0]


def _is_tar(stream: BinaryIO) -> bool:
    start = stream.tell()
    try:
        with tarfile.open(fileobj=stream, mode='r:'):
            return True
    except tarfile.TarError:
        return False
    finally:
        stream.seek(start)


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

    def torch_load(weights_only: bool) -> Any:
        stream.seek(start)
        # torch reads a zip file faster by its path; a legacy file from the stream, so that where
        # the stream stopped tells a file cut short from one refused
        return torch.load(path if path is not None and is_zip else stream,
                          map_location=map_location, weights_only=weights_only)

    if trusted:
        from mmengine.logging import print_log
        print_log(f'{source} is trusted ({TRUSTED_CHECKPOINTS_ENV} / trust_checkpoint): loading '
                  'it with full unpickling', logger='current', level=logging.INFO)
        if not (is_zip or is_tar):
            first = pickle.load(stream, encoding='latin1')
            if not _is_torch_legacy_header(first):
                return first
        return torch_load(weights_only=False)
    try:
        if is_zip:
            with zipfile.ZipFile(stream) as archive:
                if any(n.endswith('constants.pkl') for n in archive.namelist()):
                    raise UnsafeCheckpointError(source, 'a TorchScript archive (it holds code)')
        elif not is_tar:
            first = _DataUnpickler(stream, encoding='latin1').load()
            if not _is_torch_legacy_header(first):
                return first  # a plain pickle, e.g. detectron2 .pkl weights
        with checkpoint_globals_allowed():
            return torch_load(weights_only=True)
    except _Refused as refused:
        raise UnsafeCheckpointError(source, str(refused)) from None
    except pickle.UnpicklingError as error:
        if isinstance(error, UnsafeCheckpointError) or _WEIGHTS_ONLY_REFUSAL not in str(error):
            raise
        if not is_zip and stream.tell() >= stream.seek(0, os.SEEK_END):
            # e.g. a global's name cut in two: what was refused is the end of the file
            raise CorruptCheckpointError(path or source, 'the file ends inside a pickle: it was '
                                         'cut short') from None
        raise UnsafeCheckpointError(source, _refusal(str(error))) from None


def safe_load_file(path: Union[str, os.PathLike], map_location: MapLocation = None) -> Any:
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
    return _load_path(path, map_location, path, is_trusted(path))


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
            if _WEIGHTS_ONLY_REFUSAL in str(error):  # a trusted file, TORCH_FORCE_WEIGHTS_ONLY_LOAD
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
    does not do (a flipped byte in a tensor would load silently); other files are loaded with
    :func:`safe_load_file`. A file that is intact but refused as unsafe counts as intact: loading
    it reports that.
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


def checkpoint_file_error(path: str, advice: str) -> Optional[str]:
    """The one-line message of a tool that cannot use the checkpoint file ``path``, or None:
    ``PATH: checkpoint not found`` or ``PATH: not a readable checkpoint (PROBLEM); ADVICE``
    (:func:`checkpoint_problem`)."""
    problem = checkpoint_problem(path)
    if problem == 'no such file':
        return f'{path}: checkpoint not found'
    if problem is not None:
        return f'{path}: not a readable checkpoint ({problem}); {advice}'
    return None


def weights_problem(model: torch.nn.Module, checkpoint: Any) -> Optional[str]:
    """Why a loaded checkpoint cannot give ``model`` all its weights, or None.

    mmengine loads weights with ``strict=False``: the model's parameters and buffers that the
    checkpoint lacks, or holds with another shape, keep their random initialisation, with only a
    warning in the log. For inference that is a wrong model (a checkpoint of another config, an
    unconverted detectron2 file), so callers refuse it, as they refuse weights that are not
    finite (a diverged training: the model would output garbage without an error). Keys the
    model does not have are allowed, and so are missing batch-norm ``num_batches_tracked``
    counters.

    Args:
        model (torch.nn.Module): The model (unwrapped from DDP and the like).
        checkpoint: What was loaded from the file: a state dict, or a dict with ``state_dict``
            (``module.`` prefixes are dropped, as mmengine does).
    """
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        return f'it holds a {type(checkpoint).__name__}, not a state dict'
    state = {re.sub(r'^module\.', '', str(key)): value for key, value in state.items()}
    expected = model.state_dict()
    # torch's batch norm fills in a missing step counter itself (older checkpoints lack it)
    missing = [key for key in expected
               if key not in state and not key.endswith('.num_batches_tracked')]
    mismatched = [f'{key}: {tuple(state[key].shape)} vs {tuple(value.shape)}'
                  for key, value in expected.items()
                  if key in state and hasattr(state[key], 'shape')
                  and tuple(state[key].shape) != tuple(value.shape)]
    if not missing and not mismatched:
        non_finite = [key for key in expected if key in state
                      and torch.is_tensor(state[key]) and state[key].is_floating_point()
                      and not bool(torch.isfinite(state[key]).all())]
        if non_finite:
            return (f'{len(non_finite)} of its weights are not finite (NaN or inf, e.g. '
                    f'{", ".join(non_finite[:3])}): the training that wrote it diverged, or the '
                    'file was damaged')
        return None
    problems = []
    if missing:
        problems.append(f'{len(missing)} of the model\'s {len(expected)} weights are not in it '
                        f'(e.g. {", ".join(missing[:3])})')
    if mismatched:
        problems.append(f'{len(mismatched)} have another shape (checkpoint vs model, e.g. '
                        f'{"; ".join(mismatched[:3])})')
    held = ', '.join(map(str, list(state)[:3])) or 'nothing'
    return (f'the weights do not fit the model: {" and ".join(problems)}; they would keep their '
            f'random initialisation. The checkpoint holds {len(state)} entries (e.g. {held}): '
            'is it for another config? An official detectron2 checkpoint must be converted '
            'first (tools/model_converters/ctvis_d2_to_mmdet.py)')


def safe_torch_load(f: Union[str, os.PathLike, BinaryIO], map_location: MapLocation = None) -> Any:
    """:func:`safe_load_file` for a path or a binary stream (a stream is trusted only by its
    ``name``; an in-memory one never)."""
    if isinstance(f, (str, os.PathLike)):
        return safe_load_file(f, map_location)
    name = getattr(f, 'name', None)
    if not f.seekable():
        f = io.BytesIO(f.read())
    if isinstance(name, str):
        return _load_stream(f, map_location, name, is_trusted(name))
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
    """Download ``url`` into the torch hub cache (once) and load it like :func:`safe_load_file`.

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
    return _load_path(loaded_file, map_location, url, is_trusted(url, loaded_file), advice)
