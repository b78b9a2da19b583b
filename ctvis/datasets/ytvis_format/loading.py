"""Reading YouTube-VIS files: the one error type, the JSON loader and the long-video ids.

Every malformed input of the format (a dataset annotation file, ground truth or results of the
evaluator) raises :class:`YTVISFormatError`, whose message names the file, the entry (and frame)
and the problem.
"""
import contextlib
import gc
import io
import json
import numbers
import os
import os.path as osp
import zipfile
from typing import Any, Iterable, List, Optional, Tuple, Union

from mmengine.fileio import get_local_path

PathOrDict = Union[str, 'os.PathLike[str]', dict]
PathOrList = Union[str, 'os.PathLike[str]', list]


class YTVISFormatError(ValueError):
    """A malformed YouTube-VIS file (dataset annotations, ground truth or results); the message
    names the file, the entry and the problem."""


class MissingFrameError(YTVISFormatError, FileNotFoundError):
    """A frame that an annotation file lists does not exist on disk."""


def load_json_file(path: Union[str, 'os.PathLike[str]']) -> Any:
    """Load a JSON file, or the JSON inside a ``.zip`` (the CodaLab layout: a
    zip holding ``results.json``). A remote path (``s3://...``) is fetched
    through mmengine's file backends first.

    Raises:
        FileNotFoundError: the file does not exist.
        YTVISFormatError: the content is not JSON, or the zip holds no (or
            several) JSON files.
    """
    path = os.fspath(path)
    if '://' in path:
        with get_local_path(path) as local_path:
            return _load_local_json(local_path, path)
    return _load_local_json(path, path)


def _load_local_json(path: str, name: str) -> Any:
    """:func:`load_json_file` of a local ``path``; errors say ``name``."""
    if not osp.isfile(path):
        raise FileNotFoundError(f'{name}: no such file')
    try:
        if path.endswith('.zip'):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith('.json')]
                if 'results.json' in names:
                    names = ['results.json']
                if len(names) != 1:
                    raise YTVISFormatError(f'{name}: expected one JSON file (results.json) in '
                                           f'the zip, found {names or "none"}')
                return json.load(io.TextIOWrapper(archive.open(names[0]), encoding='utf-8'))
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise YTVISFormatError(f'{name}: not valid JSON ({error})') from None
    except zipfile.BadZipFile as error:
        raise YTVISFormatError(f'{name}: not a valid zip ({error})') from None


def load_source(source: Any, default_name: str) -> Tuple[Any, str]:
    """(content, name for messages) of a path or an already loaded object."""
    if isinstance(source, (str, os.PathLike)):
        return load_json_file(source), os.fspath(source)
    return source, default_name


def load_long_video_ids(source: Union[str, 'os.PathLike[str]', Iterable[int]],
                        name: Optional[str] = None) -> List[int]:
    """Video ids of the YouTube-VIS 2022 long videos.

    Args:
        source: ids, or a JSON file holding a list of ids, a list of video
            dicts, or a dict with ``videos`` (a YouTube-VIS style file of the
            long videos) or ``long_video_ids``.
        name: how to name ``source`` in error messages.
    """
    content, name = load_source(source, name or '<long video ids>')
    if isinstance(content, dict):
        content = content.get('long_video_ids', content.get('videos'))
    if isinstance(content, (str, bytes)) or not isinstance(content, Iterable):
        raise YTVISFormatError(f'{name}: expected a list of video ids, a list of videos or a '
                               f"dict with 'videos' or 'long_video_ids'")
    ids = []
    for index, item in enumerate(content):
        if isinstance(item, dict):
            item = item.get('id')
        if not is_int(item):
            raise YTVISFormatError(f'{name}: entry {index} is not a video id: {item!r}')
        ids.append(int(item))
    return ids


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def is_int(value: Any) -> bool:
    """An integer (not a bool) that fits int64, as the parsed arrays hold ids and sizes."""
    # (type() first: the ABC check costs more, and runs per entry)
    return ((type(value) is int or (isinstance(value, numbers.Integral)
                                    and not isinstance(value, bool)))
            and INT64_MIN <= value <= INT64_MAX)


def is_real(value: Any) -> bool:
    return type(value) in (float, int) or (isinstance(value, numbers.Real)
                                           and not isinstance(value, bool))




@contextlib.contextmanager
def gc_paused():
    """Pause the cyclic garbage collector while reading and checking inputs.

    The inputs (JSON files, a results list of every frame's RLE dict) hold
    millions of objects, and each collection pass that new objects trigger
    walks them all (and every other object of the process): that, not the
    work itself, can dominate the run time. Nothing built here has cycles.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


