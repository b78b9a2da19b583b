"""Reading and checking YouTube-VIS / OVIS ground truth and results.

Ground truth is the raw YouTube-VIS / OVIS JSON (``videos``, ``annotations``
with per-frame ``segmentations`` and ``areas``, ``categories``); results are
the standard list ``[{video_id, category_id, score, segmentations}]`` with one
RLE (or None) per frame. Both are parsed into arrays (:class:`GroundTruth`,
:class:`Tracks`) and every malformed entry raises :class:`YTVISFormatError`
naming the file, the entry (and frame) and the problem.

Every RLE is checked before it reaches pycocotools, which trusts the run
lengths (a malformed string hangs it or makes it read out of bounds), without
decoding a mask to pixels:

* uncompressed RLEs (ground truth) are read into one uint32 array and summed
  with numpy, all at once;
* compressed strings: their characters and termination (numpy, on all
  strings at once), then whether their runs cover the frame exactly, as the
  area of the mask plus the area of its complement (two
  ``pycocotools.mask.area`` passes, which also give the areas; strings of at
  most three run lengths, e.g. empty masks, are summed with numpy).

For the video IoU (:mod:`ctvis.evaluation.ytvis_eval`) a mask can be laid on
a canvas of several frames side by side (:meth:`MaskTable.build_canvases`):
an RLE is column-major, so moving a mask a whole frame to the right only
changes its first run length.
"""
import array
import contextlib
import gc
import io
import json
import math
import numbers
import os
import os.path as osp
import zipfile
from collections import Counter
from dataclasses import dataclass
from operator import itemgetter
from typing import (Any, Callable, Dict, Iterable, List, Optional, Tuple, Union)

import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    'YTVISFormatError', 'load_json_file', 'load_source', 'load_long_video_ids', 'gc_paused',
    'parse_ground_truth', 'parse_results', 'GroundTruth', 'Tracks', 'MaskTable', 'Videos',
    'PathOrDict', 'PathOrList'
]

_RLE_FIRST_CHAR, _RLE_LAST_CHAR = 48, 111  # pycocotools: 6 bits per char
_RLE_MORE_BIT = 0x20  # "another 5-bit chunk follows"
_RLE_SIGN_BIT = 0x10  # set in the last chunk of a negative number
_RLE_MAX_CHUNKS = 7  # a run length < 2**32 needs at most 7 chunks
# pycocotools 2.0.x area() fails on longer lists with numpy 2 (it builds a
# uint8 array from the list length).
_AREA_CALL_LIMIT = 255
_MAX_CANVAS_PIXELS = 2**32  # pycocotools run lengths and areas are uint32
_UINT32_CODE = next(code for code in 'IL' if array.array(code).itemsize == 4)

PathOrDict = Union[str, 'os.PathLike[str]', dict]
PathOrList = Union[str, 'os.PathLike[str]', list]


class YTVISFormatError(ValueError):
    """Malformed ground truth or results; the message names the source (file),
    the entry and the problem."""


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------
def load_json_file(path: Union[str, 'os.PathLike[str]']) -> Any:
    """Load a JSON file, or the JSON inside a ``.zip`` (the CodaLab layout: a
    zip holding ``results.json``).

    Raises:
        FileNotFoundError: the file does not exist.
        YTVISFormatError: the content is not JSON, or the zip holds no (or
            several) JSON files.
    """
    path = os.fspath(path)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{path}: no such file')
    try:
        if path.endswith('.zip'):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith('.json')]
                if 'results.json' in names:
                    names = ['results.json']
                if len(names) != 1:
                    raise YTVISFormatError(f'{path}: expected one JSON file (results.json) in '
                                           f'the zip, found {names or "none"}')
                return json.load(io.TextIOWrapper(archive.open(names[0]), encoding='utf-8'))
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise YTVISFormatError(f'{path}: not valid JSON ({error})') from None
    except zipfile.BadZipFile as error:
        raise YTVISFormatError(f'{path}: not a valid zip ({error})') from None


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
        if not _is_int(item):
            raise YTVISFormatError(f'{name}: entry {index} is not a video id: {item!r}')
        ids.append(int(item))
    return ids


def _is_int(value: Any) -> bool:
    # (type() first: the ABC check costs more, and runs per entry)
    return type(value) is int or (isinstance(value, numbers.Integral)
                                  and not isinstance(value, bool))


def _is_real(value: Any) -> bool:
    return type(value) in (float, int) or (isinstance(value, numbers.Real)
                                           and not isinstance(value, bool))


# --------------------------------------------------------------------------
# RLE strings
# --------------------------------------------------------------------------
def _decode_leading_counts(chars: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                           num: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Decode the first ``num`` run lengths of many compressed RLE strings.

    pycocotools stores each run length as 5-bit chunks (one char each); the
    first three are absolute and every later one is a difference to the run
    length two places before, so rewriting the first run (shift) or the first
    three (complement) never touches the rest of the string.

    Args:
        chars (np.ndarray): uint8 (total_chars, ) the strings back to back.
        starts, lengths (np.ndarray): int64 (n, ) where each string lies.
        num (int): how many leading run lengths to decode.

    Returns:
        tuple: ``values`` int64 (n, num), ``ends`` int64 (n, num) (offset in
        the string after each value), ``present`` bool (n, num) (False where
        the string has fewer runs) and ``overlong`` bool (n, ) (a number with
        more chunks than any uint32 run length needs).
    """
    n = len(starts)
    values = np.zeros((n, num), np.int64)
    ends = np.zeros((n, num), np.int64)
    present = np.zeros((n, num), bool)
    overlong = np.zeros(n, bool)
    # The strings still being decoded (most are done after a few chars), the
    # run length each is at, its chunk in that number and its value so far.
    rows = np.arange(n)
    number = np.zeros(n, np.int64)
    chunk = np.zeros(n, np.int64)
    value = np.zeros(n, np.int64)
    for offset in range(_RLE_MAX_CHUNKS * num):
        live = offset < lengths[rows]
        if not live.all():
            rows, number, chunk, value = (rows[live], number[live], chunk[live], value[live])
        if not len(rows):
            break
        code = chars[starts[rows] + offset].astype(np.int64) - _RLE_FIRST_CHAR
        value |= (code & 0x1f) << (5 * chunk)
        chunk += 1
        done = np.flatnonzero((code & _RLE_MORE_BIT) == 0)
        negative = done[(code[done] & _RLE_SIGN_BIT) != 0]
        value[negative] -= np.left_shift(1, 5 * chunk[negative])
        done_rows, done_number = rows[done], number[done]
        values[done_rows, done_number] = value[done]
        ends[done_rows, done_number] = offset + 1
        present[done_rows, done_number] = True
        number[done] += 1
        chunk[done] = 0
        value[done] = 0
        too_long = chunk >= _RLE_MAX_CHUNKS
        overlong[rows[too_long]] = True
        keep = (number < num) & ~too_long
        rows, number, chunk, value = (rows[keep], number[keep], chunk[keep], value[keep])
    return values, ends, present, overlong


def _encode_counts(values: np.ndarray) -> Tuple[bytes, int, np.ndarray]:
    """Encode run lengths the way pycocotools does (``rleToString``).

    Args:
        values (np.ndarray): int64 (n, q), encoded back to back per row
            (absolute values; the caller does any differencing).

    Returns:
        tuple: the rows as one bytes object of fixed stride, the stride and
        int64 (n, ) the used length of each row.
    """
    n, q = values.shape
    stride = q * _RLE_MAX_CHUNKS
    out = np.zeros((n, stride), np.uint8)
    lengths = np.zeros(n, np.int64)
    for column in range(q):
        value = values[:, column].copy()
        more = np.ones(n, bool)
        for _ in range(_RLE_MAX_CHUNKS):
            code = value & 0x1f
            value >>= 5
            follows = np.where(code & _RLE_SIGN_BIT, value != -1, value != 0)
            rows = np.flatnonzero(more)
            out[rows,
                lengths[rows]] = (code[rows]
                                  | np.where(follows[rows], _RLE_MORE_BIT, 0)) + _RLE_FIRST_CHAR
            lengths[rows] += 1
            more &= follows
    return out.tobytes(), stride, lengths


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


def _area_of(rles: List[dict]) -> np.ndarray:
    """int64 (n, ) ``pycocotools.mask.area`` of many RLEs."""
    areas = np.empty(len(rles), np.int64)
    for start in range(0, len(rles), _AREA_CALL_LIMIT):
        stop = start + _AREA_CALL_LIMIT
        areas[start:stop] = mask_utils.area(rles[start:stop])
    return areas


def _polygons_to_string(polygons: list, height: int, width: int, where: str) -> bytes:
    """Rasterise a polygon segmentation as ytvoseval does (YTVIS.annToRLE)."""
    if not all(
            isinstance(p, list) and len(p) >= 4 and len(p) % 2 == 0 and all(_is_real(x) for x in p)
            for p in polygons):
        raise YTVISFormatError(f'{where}: a polygon segmentation must be a list of '
                               '[x1, y1, x2, y2, ...] lists of numbers')
    try:
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    except Exception as error:
        raise YTVISFormatError(f'{where}: cannot rasterise the polygons ({error})') from None
    return rle['counts']


def _uncompressed_to_string(counts: list, height: int, width: int) -> Optional[Tuple[bytes, int]]:
    """Check an uncompressed RLE (list counts). Returns its compressed counts
    string and its area, or None if it is malformed."""
    try:  # rejects negative, fractional and non-numeric run lengths
        runs = array.array(_UINT32_CODE, counts)
    except (TypeError, OverflowError, ValueError):
        return None
    values = np.frombuffer(runs, np.uint32)
    if not len(values) or int(values.sum(dtype=np.int64)) != height * width:
        return None
    if len(values) > 1 and not values[1:].min():
        values = _merge_empty_runs(values)
    rle = mask_utils.frPyObjects({'counts': values, 'size': [height, width]}, height, width)
    return rle['counts'], int(values[1::2].sum(dtype=np.int64))


# --------------------------------------------------------------------------
# Ground truth and results
# --------------------------------------------------------------------------
@dataclass
class Videos:
    """The ground-truth videos, sorted by id."""
    ids: np.ndarray  # int64 (V, ) sorted
    index: Dict[int, int]  # video id -> position in ids
    height: np.ndarray  # int64 (V, )
    width: np.ndarray  # int64 (V, )
    length: np.ndarray  # int64 (V, ) frames

    @property
    def slots(self) -> np.ndarray:
        """int64 (V, ) frames that fit side by side on one IoU canvas (its
        run lengths are uint32 in pycocotools)."""
        return (_MAX_CANVAS_PIXELS - 1) // (self.height * self.width)


@dataclass
class _StringSource:
    """Checked compressed counts strings, back to back (for canvases)."""
    joined: bytes
    starts: np.ndarray  # int64 (n, ) where each string begins in joined
    ends: np.ndarray  # int64 (n, )
    first: np.ndarray  # int64 (n, ) first run length
    first_end: np.ndarray  # int64 (n, ) offset after it in the string


@dataclass
class _RunSource:
    """Checked uncompressed run lengths (no empty run inside), back to back.
    """
    runs: np.ndarray  # uint32 (total, )
    starts: np.ndarray  # int64 (n, )
    ends: np.ndarray  # int64 (n, )


class MaskTable:
    """The present (non-None) frame masks of a set of tracks (ground-truth
    annotations or predictions), track after track, frames in order.

    Attributes:
        track (np.ndarray): int64 (N, ) the track of each mask.
        frame (np.ndarray): int64 (N, ) its frame index.
        area (np.ndarray): int64 (N, ) its number of foreground pixels.
        track_start (np.ndarray): int64 (num_tracks + 1, ) masks of track
            ``t`` are rows ``track_start[t]:track_start[t + 1]``.
        canvas (list): per row, the mask as a pycocotools RLE moved right by
            ``slot`` frame widths on a canvas of ``slot + 1`` frames (module
            docstring), or None until :meth:`build_canvases` made it.
    """

    def __init__(self, track: np.ndarray, frame: np.ndarray, area: np.ndarray, num_tracks: int,
                 height: np.ndarray, width: np.ndarray, slots: np.ndarray, from_string: np.ndarray,
                 source_index: np.ndarray, strings: Optional[_StringSource],
                 runs: Optional[_RunSource]) -> None:
        self.track, self.frame, self.area = track, frame, area
        self.track_start = np.searchsorted(track, np.arange(num_tracks + 1))
        self._height, self._width = height, width  # int64 (N, ) frame size
        self._slot = frame % slots
        self._from_string, self._source_index = from_string, source_index
        self._strings, self._runs = strings, runs
        self.canvas: List[Optional[dict]] = [None] * len(track)
        self._has_canvas = np.zeros(len(track), bool)

    def track_areas(self) -> np.ndarray:
        """int64 (num_tracks, ) areas summed over frames."""
        cumulative = np.concatenate([[0], np.cumsum(self.area)])
        return (cumulative[self.track_start[1:]] - cumulative[self.track_start[:-1]])

    def build_canvases(self, rows: np.ndarray) -> None:
        """Make the canvas RLEs of ``rows`` (int64, distinct) that are not
        made yet."""
        rows = rows[~self._has_canvas[rows]]
        if not len(rows):
            return
        self._has_canvas[rows] = True
        shift = self._slot[rows] * self._height[rows] * self._width[rows]
        # [height, canvas width] of each row (one list per distinct size).
        height, width = self._height[rows], self._width[rows] * (self._slot[rows] + 1)
        distinct, which = np.unique(height * _MAX_CANVAS_PIXELS + width, return_inverse=True)
        sizes = [[h, w]
                 for h, w in zip((distinct //
                                  _MAX_CANVAS_PIXELS).tolist(), (distinct %
                                                                 _MAX_CANVAS_PIXELS).tolist())]
        canvas_sizes = [sizes[k] for k in which.tolist()]
        from_string = self._from_string[rows]
        index = self._source_index[rows]
        canvas = self.canvas
        if from_string.any():
            # Rewrite the first run length (always stored absolute), keep the
            # rest of the string.
            source, picked = self._strings, np.flatnonzero(from_string)
            i = index[picked]
            first, stride, first_len = _encode_counts((source.first[i] + shift[picked])[:, None])
            text = memoryview(source.joined)  # slices without copies
            for row, size, head, n, tail, end in zip(
                    rows[picked].tolist(), [canvas_sizes[k] for k in picked.tolist()],
                    range(0,
                          len(picked) * stride, stride), first_len.tolist(),
                (source.starts[i] + source.first_end[i]).tolist(), source.ends[i].tolist()):
                canvas[row] = {'size': size, 'counts': first[head:head + n] + text[tail:end]}
        if not from_string.all():
            # One pycocotools call encodes them all (sizes are per dict).
            source, picked = self._runs, np.flatnonzero(~from_string)
            i = index[picked]
            shifted = source.runs.copy()
            shifted[source.starts[i]] += shift[picked].astype(np.uint32)
            encoded = mask_utils.frPyObjects([{
                'size': canvas_sizes[k],
                'counts': shifted[start:end]
            } for k, start, end in zip(picked.tolist(), source.starts[i].tolist(),
                                       source.ends[i].tolist())], 1, 1)
            for row, rle in zip(rows[picked].tolist(), encoded):
                canvas[row] = rle


@dataclass
class Tracks:
    """Tracks (annotations or predictions) with their masks.

    Attributes:
        video (np.ndarray): int64 (n, ) video position (in ``Videos.ids``).
        category (np.ndarray): int64 (n, ) category position (sorted ids).
        value (np.ndarray): float64 (n, ) score of a prediction; for ground
            truth, the average of its non-zero ``areas``.
        masks (MaskTable): their frame masks.
    """
    video: np.ndarray
    category: np.ndarray
    value: np.ndarray
    masks: MaskTable


_get_size, _get_counts = itemgetter('size'), itemgetter('counts')


class _MaskCollector:
    """Checks the ``segmentations`` of tracks and gathers their frame masks.

    A mask is kept as a compressed counts string (str or bytes; with the
    caller's RLE dict when it has one, so no copy is made) or, for
    uncompressed RLEs, as its list of run lengths; both are checked in bulk
    by :meth:`build`.
    """

    def __init__(self, videos: Videos) -> None:
        self.videos = videos
        self.sizes = [[int(h), int(w)] for h, w in zip(videos.height, videos.width)]
        self.lengths = videos.length.tolist()
        self.strings: List[Union[str, bytes]] = []
        self.rles: List[Optional[dict]] = []
        # Areas of the strings we encoded (string index -> area); the others
        # are measured and checked.
        self.known_area: Dict[int, int] = {}
        self.run_lists: List[list] = []
        self.frame: List[int] = []  # per mask
        # Per run of masks added at once (consecutive in strings or in
        # run_lists): track, video, number of masks, first index, kind.
        self.segments: List[Tuple[int, int, int, int, bool]] = []

    def add_track(self, track_index: int, video: int, segmentations: Any, accept_polygons: bool,
                  describe: Callable[[int, int], str]) -> None:
        """Check one track's ``segmentations`` (one entry per frame) and
        collect its masks."""
        length = self.lengths[video]
        if type(segmentations) is not list:
            raise YTVISFormatError(f'{describe(track_index, -1)}: segmentations must be a list '
                                   f'with one entry per frame, got {type(segmentations).__name__}')
        if len(segmentations) != length:
            raise YTVISFormatError(f'{describe(track_index, -1)}: {len(segmentations)} '
                                   f'segmentations for a video of {length} frames')
        size = self.sizes[video]
        if None in segmentations:
            frames = [f for f, s in enumerate(segmentations) if s is not None]
            present = [segmentations[f] for f in frames]
        else:
            frames, present = list(range(length)), segmentations
        # Fast paths, checked with C-level list operations: RLE dicts of the
        # right size with compressed (model outputs) or uncompressed
        # (YouTube-VIS ground truth) counts.
        num = len(frames)
        if set(map(type, present)) <= {dict}:
            try:
                sizes = list(map(_get_size, present))
                counts = list(map(_get_counts, present))
            except KeyError:
                counts, sizes = [], []
            counts_types = set(map(type, counts))
            if sizes.count(size) == num and counts_types <= {str, bytes}:
                self.segments.append((track_index, video, num, len(self.strings), True))
                self.strings += counts
                self.rles += present
                self.frame += frames
                return
            if sizes.count(size) == num and counts_types == {list}:
                self.segments.append((track_index, video, num, len(self.run_lists), False))
                self.run_lists += counts
                self.frame += frames
                return
        for frame_index in frames:
            segmentation = segmentations[frame_index]
            string, area = self._frame_string(segmentation, size, accept_polygons,
                                              lambda: describe(track_index, frame_index))
            if string is None:  # an empty polygon list: no mask
                continue
            if area >= 0:
                self.known_area[len(self.strings)] = area
            self.segments.append((track_index, video, 1, len(self.strings), True))
            self.strings.append(string)
            self.rles.append(segmentation if area < 0 else None)
            self.frame.append(frame_index)

    @staticmethod
    def _frame_string(segmentation: Any, size: List[int], accept_polygons: bool,
                      describe: Callable[[], str]) -> Tuple[Optional[Union[str, bytes]], int]:
        """Check one frame's segmentation. Returns its compressed counts and
        its area when known (-1: a compressed RLE from the caller, to be
        measured and checked), or (None, -1) for an empty polygon list.
        ``describe()`` names the frame in error messages."""
        height, width = size
        if type(segmentation) is dict:
            given = segmentation.get('size')
            counts = segmentation.get('counts')
            if given is None or 'counts' not in segmentation:
                raise YTVISFormatError(f"{describe()}: malformed RLE: needs 'size' and 'counts', "
                                       f'has {sorted(segmentation)}')
            if not (isinstance(given, (list, tuple)) and len(given) == 2 and list(given) == size):
                raise YTVISFormatError(f'{describe()}: RLE size {given!r} does not match the '
                                       f'video size [height, width] = {size}')
            if type(counts) is str or type(counts) is bytes:
                return counts, -1
            if type(counts) is list:
                converted = _uncompressed_to_string(counts, height, width)
                if converted is None:
                    raise YTVISFormatError(f'{describe()}: '
                                           f'{_uncompressed_problem(height * width)}')
                return converted
            raise YTVISFormatError(f"{describe()}: malformed RLE: 'counts' must be a string or a "
                                   f'list of run lengths, got {type(counts).__name__}')
        if accept_polygons and type(segmentation) is list:
            if not segmentation:  # ytvoseval treats [] as "no mask"
                return None, -1
            string = _polygons_to_string(segmentation, height, width, describe())
            return string, int(mask_utils.area({'size': size, 'counts': string}))
        raise YTVISFormatError(f'{describe()}: a segmentation must be an RLE dict with size and '
                               'counts' + (', a polygon list' if accept_polygons else '') +
                               f' or null, got {type(segmentation).__name__}')

    def build(self, num_tracks: int, describe: Callable[[int, int], str]) -> MaskTable:
        """Check the collected masks in bulk and measure their areas.

        Args:
            num_tracks: number of tracks added.
            describe: ``(track, frame) -> str`` names a mask in errors.
        """
        segments = np.array(self.segments, np.int64).reshape(-1, 5)
        counts = segments[:, 2]
        track = np.repeat(segments[:, 0], counts)
        video = np.repeat(segments[:, 1], counts)
        from_string = np.repeat(segments[:, 4].astype(bool), counts)
        source_index = np.arange(len(track)) - np.repeat(
            np.cumsum(counts) - counts - segments[:, 3], counts)
        frame = np.asarray(self.frame, np.int64)
        height, width = self.videos.height[video], self.videos.width[video]
        frame_hw = height * width
        area = np.zeros(len(track), np.int64)

        def fail_at(rows: np.ndarray) -> Callable[[int, str], None]:

            def fail(index: int, problem: str) -> None:
                row = rows[index]
                raise YTVISFormatError(f'{describe(track[row], frame[row])}: {problem}')

            return fail

        strings = runs = None
        if self.strings:
            rows = np.flatnonzero(from_string)
            area[rows], strings = _check_strings(self.strings, self.rles, self.known_area,
                                                 frame_hw[rows], fail_at(rows))
        if self.run_lists:
            rows = np.flatnonzero(~from_string)
            area[rows], runs = _check_runs(self.run_lists, frame_hw[rows], fail_at(rows))
        return MaskTable(track, frame, area, num_tracks, height, width, self.videos.slots[video],
                         from_string, source_index, strings, runs)


def _uncompressed_problem(num_pixels: int) -> str:
    return ('malformed RLE: uncompressed counts must be non-negative '
            f'integers summing to height*width = {num_pixels}')


def _check_strings(strings: List[Union[str, bytes]], rles: List[Optional[dict]],
                   known_area: Dict[int, int], frame_hw: np.ndarray,
                   fail: Callable[[int, str], None]) -> Tuple[np.ndarray, _StringSource]:
    """Check compressed RLE counts strings and measure their areas.

    Every string is checked for its characters and its termination (numpy,
    all at once). The caller's RLEs (those not in ``known_area``) must also
    cover the frame exactly: their runs are summed as the area of the mask
    plus the area of its complement. Strings of at most three run lengths are summed
    from the leading values decoded here (numpy), the others by two
    ``pycocotools.mask.area`` passes (C).

    Args:
        strings: the compressed ``counts`` of each mask (str or bytes).
        rles: an RLE dict of each mask with those counts, None for masks we
            encoded ourselves (from run lengths or polygons).
        known_area: the area of the masks we encoded (string index -> area).
        frame_hw (np.ndarray): int64 (n, ) pixels of each mask's frame.
        fail: ``(index, problem)`` raises the error of a string.

    Returns:
        tuple: int64 (n, ) areas and the strings for canvases.
    """
    try:
        try:
            joined = ''.join(strings).encode('ascii')
        except TypeError:  # some are bytes
            joined = b''.join(s if type(s) is bytes else s.encode('ascii') for s in strings)
    except UnicodeEncodeError:
        for index, s in enumerate(strings):
            if type(s) is str and not s.isascii():
                fail(index, 'malformed RLE: non-ASCII characters in counts')
        raise
    chars = np.frombuffer(joined, np.uint8)
    lengths = np.fromiter(map(len, strings), np.int64, len(strings))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    if (lengths == 0).any():
        fail(int(np.argmax(lengths == 0)), 'malformed RLE: empty counts '
             'string')
    if chars.min() < _RLE_FIRST_CHAR or chars.max() > _RLE_LAST_CHAR:
        bad = np.flatnonzero((chars < _RLE_FIRST_CHAR) | (chars > _RLE_LAST_CHAR))[0]
        fail(
            int(np.searchsorted(ends, bad, side='right')),
            f'malformed RLE: invalid character {chr(chars[bad])!r} in counts')
    truncated = ((chars[ends - 1] - _RLE_FIRST_CHAR) & _RLE_MORE_BIT) != 0
    if truncated.any():
        fail(int(np.argmax(truncated)), 'malformed RLE: counts string ends '
             'inside a number')

    values, value_ends, present, overlong = _decode_leading_counts(chars, starts, lengths, 3)
    out_of_range = present & ((values < 0) | (values > frame_hw[:, None]))
    bad = np.flatnonzero(overlong | out_of_range.any(1))
    if len(bad):
        fail(
            int(bad[0]), 'malformed RLE: a run length is negative, longer '
            'than the frame or has too many chunks')

    area = np.full(len(strings), -1, np.int64)
    area[list(known_area)] = list(known_area.values())
    check = np.flatnonzero(area < 0)
    complete = ~present[check, 2] | (value_ends[check, 2] == lengths[check])
    short, long = check[complete], check[~complete]
    area[short] = values[short, 1]
    covered = np.zeros(len(strings), np.int64)
    covered[short] = values[short].sum(1)
    # Background of the long ones: the area of the complement, runs
    # [0, c0, c1, c2, ...]: the old third run becomes the fourth and is now
    # stored as a difference to c0; the rest of the string is unchanged.
    complement_values = np.zeros((len(long), 4), np.int64)
    complement_values[:, 1:] = values[long]
    complement_values[:, 3] -= complement_values[:, 1]
    lead, lead_stride, lead_len = _encode_counts(complement_values)
    any_size = [1, 1]  # area() ignores the size
    text = memoryview(joined)  # slices without copies
    heads = range(0, len(long) * lead_stride, lead_stride)
    tails = (starts[long] + value_ends[long, 2]).tolist()
    complement = [{
        'size': any_size,
        'counts': lead[head:head + n] + text[tail:end]
    } for head, n, tail, end in zip(heads, lead_len.tolist(), tails, ends[long].tolist())]
    area[long] = _area_of([rles[i] for i in long.tolist()])
    covered[long] = area[long] + _area_of(complement)
    wrong = np.flatnonzero(covered[check] != frame_hw[check])
    if len(wrong):
        index = int(check[wrong[0]])
        fail(
            index, 'malformed RLE: run lengths cover '
            f'{covered[index] % _MAX_CANVAS_PIXELS} pixels, expected '
            f'height*width = {frame_hw[index]}')
    return area, _StringSource(joined, starts, ends, values[:, 0], value_ends[:, 0])


def _check_runs(run_lists: List[list], frame_hw: np.ndarray,
                fail: Callable[[int, str], None]) -> Tuple[np.ndarray, _RunSource]:
    """Check uncompressed RLE counts (lists of run lengths) and measure their
    areas, all at once.

    Empty runs inside an RLE are merged with their neighbours first:
    pycocotools' iou loop stops early at one.

    Args:
        run_lists: the ``counts`` list of each mask.
        frame_hw (np.ndarray): int64 (n, ) pixels of each mask's frame.
        fail: ``(index, problem)`` raises the error of a mask.

    Returns:
        tuple: int64 (n, ) areas and the checked run lengths.
    """

    def problem(index: int) -> str:
        return _uncompressed_problem(int(frame_hw[index]))

    try:  # rejects negative, fractional and non-numeric run lengths
        arrays = [array.array(_UINT32_CODE, c) for c in run_lists]
    except (TypeError, OverflowError, ValueError):
        for index, counts in enumerate(run_lists):
            try:
                array.array(_UINT32_CODE, counts)
            except (TypeError, OverflowError, ValueError):
                fail(index, problem(index))
        raise
    lengths = np.fromiter(map(len, arrays), np.int64, len(arrays))
    if not lengths.all():
        index = int(np.argmin(lengths))
        fail(index, problem(index))
    runs = np.frombuffer(b''.join(arrays), np.uint32)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    total = np.add.reduceat(runs, starts, dtype=np.int64)
    wrong = np.flatnonzero(total != frame_hw)
    if len(wrong):
        fail(int(wrong[0]), problem(int(wrong[0])))
    # Foreground runs sit at odd positions of each RLE; sum the runs at odd
    # positions of the whole array, and take the rest where an RLE starts at
    # an odd position.
    odd_runs = runs.copy()
    odd_runs[::2] = 0
    odd_total = np.add.reduceat(odd_runs, starts, dtype=np.int64)
    area = np.where(starts % 2 == 0, odd_total, total - odd_total)
    empty = np.flatnonzero(runs == 0)
    owner = np.searchsorted(ends, empty, side='right')
    to_merge = np.unique(owner[empty != starts[owner]])
    if len(to_merge):
        pieces, previous = [], 0
        lengths = lengths.copy()
        for index in to_merge.tolist():
            merged = _merge_empty_runs(runs[starts[index]:ends[index]])
            pieces += [runs[previous:starts[index]], merged]
            previous = ends[index]
            lengths[index] = len(merged)
        runs = np.concatenate(pieces + [runs[previous:]])
        ends = np.cumsum(lengths)
        starts = ends - lengths
    return area, _RunSource(runs, starts, ends)


def _merge_empty_runs(values: np.ndarray) -> np.ndarray:
    """Run lengths (uint32) with every empty run after the first merged into
    its neighbours (the same mask)."""
    parity = np.arange(len(values)) % 2
    keep = values > 0
    keep[0] = True
    values, parity = values[keep], parity[keep]
    first_of_group = np.concatenate([[True], parity[1:] != parity[:-1]])
    values = np.add.reduceat(values, np.flatnonzero(first_of_group), dtype=np.int64)
    return values.astype(np.uint32)


def _parse_videos(gt: dict, name: str) -> Videos:
    videos = gt.get('videos')
    if not isinstance(videos, list):
        raise YTVISFormatError(f"{name}: ground truth needs a 'videos' list")
    ids, heights, widths, lengths = [], [], [], []
    for index, video in enumerate(videos):
        where = f'{name}: videos[{index}]'
        if not isinstance(video, dict):
            raise YTVISFormatError(f'{where}: must be a dict')
        video_id, height, width = (video.get('id'), video.get('height'), video.get('width'))
        if not _is_int(video_id):
            raise YTVISFormatError(f"{where}: 'id' must be an integer")
        for key, value in (('height', height), ('width', width)):
            if not _is_int(value) or value <= 0:
                raise YTVISFormatError(f"{where} (id {video_id}): '{key}' must be a positive "
                                       f'integer, got {value!r}')
        if height * width >= _MAX_CANVAS_PIXELS:
            raise YTVISFormatError(f'{where} (id {video_id}): frames of {height}x{width} are too '
                                   'large for this evaluator')
        length = video.get('length')
        file_names = video.get('file_names')
        if length is None and isinstance(file_names, list):
            length = len(file_names)
        if not _is_int(length) or length <= 0:
            raise YTVISFormatError(f"{where} (id {video_id}): needs a positive 'length' or a "
                                   "'file_names' list")
        if isinstance(file_names, list) and len(file_names) != length:
            raise YTVISFormatError(f"{where} (id {video_id}): 'length' {length} but "
                                   f'{len(file_names)} file_names')
        ids.append(int(video_id))
        heights.append(height)
        widths.append(width)
        lengths.append(length)
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise YTVISFormatError(f'{name}: duplicate video ids {sorted(duplicates)[:10]}')
    order = np.argsort(ids, kind='stable')
    sorted_ids = np.asarray(ids, np.int64)[order]
    return Videos(
        ids=sorted_ids,
        index={
            int(i): k
            for k, i in enumerate(sorted_ids)
        },
        height=np.asarray(heights, np.int64)[order],
        width=np.asarray(widths, np.int64)[order],
        length=np.asarray(lengths, np.int64)[order])


def _parse_categories(gt: dict, name: str) -> np.ndarray:
    categories = gt.get('categories')
    if not isinstance(categories, list) or not categories:
        raise YTVISFormatError(f"{name}: ground truth needs a non-empty 'categories' list")
    ids = []
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or not _is_int(category.get('id')):
            raise YTVISFormatError(f"{name}: categories[{index}] needs an integer 'id'")
        ids.append(int(category['id']))
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise YTVISFormatError(f'{name}: duplicate category ids {sorted(duplicates)}')
    return np.asarray(sorted(ids), np.int64)


@dataclass
class GroundTruth:
    """Parsed ground truth; ``tracks.value`` is each annotation's average
    area (the mean of its non-zero ``areas``, as ytvoseval)."""
    videos: Videos
    category_ids: np.ndarray  # int64 (K, ) sorted
    tracks: Optional[Tracks]  # None when the file has no annotations
    annotation_ids: np.ndarray  # int64 (n, )
    crowd: np.ndarray  # bool (n, )


def parse_ground_truth(gt: dict, name: str) -> GroundTruth:
    """Check a YouTube-VIS ground-truth dict (``name`` names it in errors)
    and collect its masks, with their canvases built."""
    if not isinstance(gt, dict):
        raise YTVISFormatError(f'{name}: ground truth must be a dict with videos, annotations '
                               f'and categories, got {type(gt).__name__}')
    videos = _parse_videos(gt, name)
    category_ids = _parse_categories(gt, name)
    category_index = {int(c): k for k, c in enumerate(category_ids)}
    annotations = gt.get('annotations')
    if annotations is None:
        return GroundTruth(videos, category_ids, None, np.zeros(0, np.int64), np.zeros(0, bool))
    if not isinstance(annotations, list):
        raise YTVISFormatError(f"{name}: 'annotations' must be a list")

    def describe(index: int, frame: int) -> str:
        where = f'{name}: annotations[{index}]'
        annotation = annotations[index]
        where += f" (id {annotation.get('id')})"
        return where if frame < 0 else f'{where}, frame {frame}'

    collector = _MaskCollector(videos)
    num = len(annotations)
    video = np.zeros(num, np.int64)
    category = np.zeros(num, np.int64)
    average_area = np.zeros(num, np.float64)
    annotation_ids = np.zeros(num, np.int64)
    crowd = np.zeros(num, bool)
    for index, annotation in enumerate(annotations):
        if not isinstance(annotation, dict):
            raise YTVISFormatError(f'{name}: annotations[{index}] must be a '
                                   'dict')
        for key in ('id', 'video_id', 'category_id'):
            if not _is_int(annotation.get(key)):
                raise YTVISFormatError(f"{describe(index, -1)}: '{key}' must be an integer")
        video_position = videos.index.get(annotation['video_id'])
        if video_position is None:
            raise YTVISFormatError(f"{describe(index, -1)}: unknown video_id "
                                   f"{annotation['video_id']}")
        category_position = category_index.get(annotation['category_id'])
        if category_position is None:
            raise YTVISFormatError(f"{describe(index, -1)}: category_id "
                                   f"{annotation['category_id']} is not in 'categories'")
        areas = annotation.get('areas')
        length = int(videos.length[video_position])
        if (not isinstance(areas, list) or len(areas) != length or not all(
                a is None or (type(a) in (int, float) or _is_real(a)) and a >= 0 for a in areas)):
            raise YTVISFormatError(f"{describe(index, -1)}: 'areas' must list one non-negative "
                                   f'number or null per frame ({length} frames)')
        iscrowd = annotation.get('iscrowd', 0)
        if iscrowd not in (0, 1):
            raise YTVISFormatError(f"{describe(index, -1)}: 'iscrowd' must be 0 or 1, got "
                                   f'{iscrowd!r}')
        collector.add_track(index, video_position, annotation.get('segmentations'), True, describe)
        # ytvoseval: the mean of the truthy per-frame areas, else 0.
        nonzero_areas = [a for a in areas if a]
        average_area[index] = (np.array(nonzero_areas).mean() if nonzero_areas else 0)
        video[index], category[index] = video_position, category_position
        annotation_ids[index] = annotation['id']
        crowd[index] = bool(iscrowd)
    duplicates = [i for i, n in Counter(annotation_ids.tolist()).items() if n > 1]
    if duplicates:
        raise YTVISFormatError(f'{name}: duplicate annotation ids {sorted(duplicates)[:10]}')
    masks = collector.build(num, describe)
    # Converted once: every evaluation against this ground truth uses them.
    masks.build_canvases(np.flatnonzero(masks.area > 0))
    return GroundTruth(videos, category_ids, Tracks(video, category, average_area, masks),
                       annotation_ids, crowd)


def parse_results(results: Any, name: str, gt: GroundTruth) -> Tracks:
    """Check a results list against the ground truth and collect its masks.
    """
    if not isinstance(results, list):
        raise YTVISFormatError(f'{name}: results must be a list of {{video_id, category_id, '
                               f'score, segmentations}} entries, got {type(results).__name__}')
    videos, category_ids = gt.videos, gt.category_ids
    category_index = {int(c): k for k, c in enumerate(category_ids)}

    def describe(index: int, frame: int) -> str:
        where = f"{name}: results[{index}] (video_id " \
                f"{results[index].get('video_id')})"
        return where if frame < 0 else f'{where}, frame {frame}'

    collector = _MaskCollector(videos)
    num = len(results)
    video = np.zeros(num, np.int64)
    category = np.zeros(num, np.int64)
    score = np.zeros(num, np.float64)
    required = ('video_id', 'category_id', 'score', 'segmentations')
    for index, entry in enumerate(results):
        if type(entry) is not dict:
            raise YTVISFormatError(f'{name}: results[{index}] must be a dict, got '
                                   f'{type(entry).__name__}')
        missing = [key for key in required if key not in entry]
        if missing:
            raise YTVISFormatError(f'{name}: results[{index}] misses {", ".join(missing)}')
        video_id, category_id, entry_score = (entry['video_id'], entry['category_id'],
                                              entry['score'])
        video_position = (videos.index.get(int(video_id)) if _is_int(video_id) else None)
        if video_position is None:
            raise YTVISFormatError(f'{describe(index, -1)}: video_id {video_id!r} is not a '
                                   'video of the ground truth')
        category_position = (category_index.get(int(category_id)) if _is_int(category_id) else None)
        if category_position is None:
            raise YTVISFormatError(f'{describe(index, -1)}: category_id {category_id!r} is not '
                                   'one of the ground-truth categories '
                                   f'{category_ids.tolist()}')
        if not _is_real(entry_score) or not math.isfinite(entry_score):
            raise YTVISFormatError(f'{describe(index, -1)}: score must be a finite number, got '
                                   f'{entry_score!r}')
        collector.add_track(index, video_position, entry['segmentations'], False, describe)
        video[index], category[index] = video_position, category_position
        score[index] = entry_score
    return Tracks(video, category, score, collector.build(num, describe))
