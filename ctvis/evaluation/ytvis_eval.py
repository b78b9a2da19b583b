"""Fast YouTube-VIS / OVIS evaluation: video-level mask AP and AR.

:func:`evaluate_ytvis` returns the numbers of the official YouTube-VIS cocoapi
(``ytvoseval.YTVISeval``; mmdet ships a copy as
``mmdet.evaluation.functional.YTVISeval``) on the same inputs, bit for bit,
and faster. We keep our own evaluator because that copy

* crashes on numpy >= 1.24 (``np.float`` in ``accumulate``),
* merges the RLE masks of every (prediction, ground truth, frame) triple one
  pycocotools call at a time from Python, and
* hangs or reads out of bounds on a malformed RLE (pycocotools trusts the run
  lengths), where we want an error that names the entry.

How the work is organised (all mask work runs in pycocotools' C code, on
many masks per call, and never decodes a mask to pixels):

* every RLE is checked first: characters and termination (numpy, on all
  strings at once), then whether its runs cover the frame exactly, as the
  area of the mask plus the area of its complement (two
  ``pycocotools.mask.area`` passes, which also give the areas);
* the video IoU, sum over frames of the intersections / sum over frames of
  the unions, takes one ``pycocotools.mask.iou`` call per (video, category,
  block of :data:`FRAMES_PER_IOU_CALL` frames). The frames of a block are laid
  side by side on a wide canvas (an RLE is column-major, so moving a mask a
  whole frame to the right only changes its first run length), so masks of
  different frames never overlap and their pairs are dropped by the
  bounding-box test in C. Pairs whose IoU cannot reach 0.5 (bounded by the
  per-frame areas) are not computed at all: they can never match;
* the greedy matching is vectorised over the 4 area ranges x 10 IoU
  thresholds, the accumulation over whole categories.

Ground truth is the raw YouTube-VIS / OVIS JSON (``videos``, ``annotations``
with per-frame ``segmentations`` and ``areas``, ``categories``); results are
the standard list ``[{video_id, category_id, score, segmentations}]`` with one
RLE (or None) per frame.
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
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple, Union)

import numpy as np
from pycocotools import mask as mask_utils

__all__ = [
    'YTVISFormatError', 'YTVISEvaluator', 'evaluate_ytvis', 'load_json_file',
    'load_long_video_ids', 'metrics_table', 'METRIC_NAMES',
    'METRIC_NAMES_2022', 'IOU_THRESHOLDS', 'RECALL_THRESHOLDS', 'MAX_DETS',
    'AREA_RANGES', 'FRAMES_PER_IOU_CALL'
]

# Evaluation parameters of ytvoseval (built the same way, so that the 0.5 and
# 0.75 thresholds compare equal to the literals).
IOU_THRESHOLDS = np.linspace(.5, .95, 10)
RECALL_THRESHOLDS = np.linspace(.0, 1., 101)
MAX_DETS = (1, 10, 100)
# (name, low, high) of the average-area ranges; bounds are inclusive.
AREA_RANGES = (('all', 0, 1e5**2), ('small', 0, 128**2),
               ('medium', 128**2, 256**2), ('large', 256**2, 1e5**2))
# Frames per pycocotools.mask.iou call (see the module docstring).
FRAMES_PER_IOU_CALL = 8

# name -> (is AP, IoU threshold or None for .50:.95, area range, max dets),
# in the order of ytvoseval's summary.
_SUMMARY = {
    'AP': (True, None, 'all', 100),
    'AP50': (True, .5, 'all', 100),
    'AP75': (True, .75, 'all', 100),
    'AP_S': (True, None, 'small', 100),
    'AP_M': (True, None, 'medium', 100),
    'AP_L': (True, None, 'large', 100),
    'AR1': (False, None, 'all', 1),
    'AR10': (False, None, 'all', 10),
    'AR100': (False, None, 'all', 100),
    'AR_S': (False, None, 'small', 100),
    'AR_M': (False, None, 'medium', 100),
    'AR_L': (False, None, 'large', 100),
}
METRIC_NAMES = tuple(_SUMMARY)
# YouTube-VIS 2022 reports these on the short and the long videos separately.
_METRICS_PER_SPLIT = ('AP', 'AP50', 'AP75', 'AR1', 'AR10')
METRIC_NAMES_2022 = tuple(f'{name}_{split}' for split in ('short', 'long')
                          for name in _METRICS_PER_SPLIT) + ('AP_2022', )

_RLE_FIRST_CHAR, _RLE_LAST_CHAR = 48, 111  # pycocotools: 6 bits per char
_RLE_MORE_BIT = 0x20  # "another 5-bit chunk follows"
_RLE_SIGN_BIT = 0x10  # set in the last chunk of a negative number
_RLE_MAX_CHUNKS = 7  # a run length < 2**32 needs at most 7 chunks
# pycocotools 2.0.x area() fails on longer lists with numpy 2 (it builds a
# uint8 array from the list length).
_AREA_CALL_LIMIT = 255
_MAX_CANVAS_PIXELS = 2**32  # pycocotools run lengths are uint32

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
                    raise YTVISFormatError(
                        f'{path}: expected one JSON file (results.json) in '
                        f'the zip, found {names or "none"}')
                return json.load(io.TextIOWrapper(
                    archive.open(names[0]), encoding='utf-8'))
        with open(path, encoding='utf-8') as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise YTVISFormatError(f'{path}: not valid JSON ({error})') from None
    except zipfile.BadZipFile as error:
        raise YTVISFormatError(f'{path}: not a valid zip ({error})') from None


def _load(source: Any, default_name: str) -> Tuple[Any, str]:
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
    content, name = _load(source, name or '<long video ids>')
    if isinstance(content, dict):
        content = content.get('long_video_ids', content.get('videos'))
    if isinstance(content, (str, bytes)) or not isinstance(content, Iterable):
        raise YTVISFormatError(
            f'{name}: expected a list of video ids, a list of videos or a '
            f"dict with 'videos' or 'long_video_ids'")
    ids = []
    for index, item in enumerate(content):
        if isinstance(item, dict):
            item = item.get('id')
        if not _is_int(item):
            raise YTVISFormatError(
                f'{name}: entry {index} is not a video id: {item!r}')
        ids.append(int(item))
    return ids


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


# --------------------------------------------------------------------------
# RLE strings
# --------------------------------------------------------------------------
def _decode_leading_counts(
        chars: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
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
    window = _RLE_MAX_CHUNKS * num
    offsets = np.arange(window)
    inside = offsets[None, :] < lengths[:, None]
    positions = np.minimum(starts[:, None] + offsets[None, :], len(chars) - 1)
    codes = chars[positions].astype(np.int64) - _RLE_FIRST_CHAR
    values = np.zeros((n, num), np.int64)
    ends = np.zeros((n, num), np.int64)
    present = np.zeros((n, num), bool)
    overlong = np.zeros(n, bool)
    number = np.zeros(n, np.int64)  # which run length is being decoded
    chunk = np.zeros(n, np.int64)
    value = np.zeros(n, np.int64)
    for offset in range(window):
        code = codes[:, offset]
        active = inside[:, offset] & (number < num)
        overlong |= active & (chunk >= _RLE_MAX_CHUNKS)
        active &= ~overlong
        value = np.where(active, value | ((code & 0x1f) << (5 * chunk)),
                         value)
        done = active & ((code & _RLE_MORE_BIT) == 0)
        negative = done & ((code & _RLE_SIGN_BIT) != 0)
        value = np.where(negative, value - (1 << (5 * (chunk + 1))), value)
        rows = np.flatnonzero(done)
        values[rows, number[rows]] = value[rows]
        ends[rows, number[rows]] = offset + 1
        present[rows, number[rows]] = True
        chunk = np.where(done, 0, np.where(active, chunk + 1, chunk))
        value = np.where(done, 0, value)
        number += done
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
            out[rows, lengths[rows]] = (
                code[rows]
                | np.where(follows[rows], _RLE_MORE_BIT, 0)) + _RLE_FIRST_CHAR
            lengths[rows] += 1
            more &= follows
    return out.tobytes(), stride, lengths


@contextlib.contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector while building many small objects.

    The inputs (a results list of every frame's RLE dict) hold millions of
    objects, and each collection pass the new dicts trigger walks them all:
    that, not the work itself, would dominate the run time.
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


def _polygons_to_string(polygons: list, height: int, width: int,
                        where: str) -> bytes:
    """Rasterise a polygon segmentation as ytvoseval does (YTVIS.annToRLE)."""
    if not all(
            isinstance(p, list) and len(p) >= 4 and len(p) % 2 == 0
            and all(_is_real(x) for x in p) for p in polygons):
        raise YTVISFormatError(
            f'{where}: a polygon segmentation must be a list of '
            '[x1, y1, x2, y2, ...] lists of numbers')
    try:
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    except Exception as error:
        raise YTVISFormatError(
            f'{where}: cannot rasterise the polygons ({error})') from None
    return rle['counts']


def _uncompressed_to_string(counts: list, height: int,
                            width: int) -> Optional[Tuple[bytes, int]]:
    """Check an uncompressed RLE (list counts). Returns its compressed counts
    string and its area, or None if it is malformed."""
    try:  # rejects negative, fractional and non-numeric run lengths
        runs = array.array('I', counts)
    except (TypeError, OverflowError, ValueError):
        return None
    values = np.frombuffer(runs, f'u{runs.itemsize}')
    # (ufunc reductions: much less call overhead than ndarray.sum here)
    if not len(values) or int(np.add.reduce(values,
                                            dtype=np.int64)) != height * width:
        return None
    if len(values) > 1 and not np.minimum.reduce(values[1:]):
        # pycocotools' merge/iou loops stop early at an empty run inside an
        # RLE, so merge the runs around it first.
        parity = np.arange(len(values)) % 2
        keep = values > 0
        keep[0] = True
        values, parity = values[keep], parity[keep]
        first_of_group = np.concatenate([[True], parity[1:] != parity[:-1]])
        values = np.add.reduceat(values, np.flatnonzero(first_of_group))
        if parity[0] == 1:
            values = np.concatenate([[0], values])
    rle = mask_utils.frPyObjects({
        'counts': values,
        'size': [height, width]
    }, height, width)
    return rle['counts'], int(np.add.reduce(values[1::2], dtype=np.int64))


# --------------------------------------------------------------------------
# Ground truth and results
# --------------------------------------------------------------------------
@dataclass
class _MaskTable:
    """The present (non-None) frame masks of a set of tracks (ground-truth
    annotations or predictions), track after track, frames in order.

    Attributes:
        track (np.ndarray): int64 (N, ) the track of each mask.
        frame (np.ndarray): int64 (N, ) its frame index.
        area (np.ndarray): int64 (N, ) its number of foreground pixels.
        canvas (list[dict]): pycocotools RLEs shifted right by
            ``frame % FRAMES_PER_IOU_CALL`` frame widths (module docstring),
            for the masks of the tracks that take part in IoU computations.
        canvas_index (np.ndarray): int64 (N, ) position in ``canvas``, -1 for
            masks without one.
        track_start (np.ndarray): int64 (num_tracks + 1, ) masks of track
            ``t`` are rows ``track_start[t]:track_start[t + 1]``.
    """
    track: np.ndarray
    frame: np.ndarray
    area: np.ndarray
    canvas: List[dict]
    canvas_index: np.ndarray
    track_start: np.ndarray

    def track_areas(self) -> np.ndarray:
        """int64 (num_tracks, ) areas summed over frames."""
        cumulative = np.concatenate([[0], np.cumsum(self.area)])
        return (cumulative[self.track_start[1:]] -
                cumulative[self.track_start[:-1]])

    def rows_of(self, tracks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Mask rows of the given tracks and, per row, the position of its
        track in ``tracks``."""
        starts = self.track_start[tracks]
        counts = self.track_start[tracks + 1] - starts
        owner = np.repeat(np.arange(len(tracks)), counts)
        first_of_owner = np.concatenate([[0], np.cumsum(counts)[:-1]])
        rows = np.arange(counts.sum()) - first_of_owner[owner] + starts[owner]
        return rows, owner


@dataclass
class _Videos:
    ids: np.ndarray  # int64 (V, ) sorted
    index: Dict[int, int]  # video id -> position in ids
    height: np.ndarray  # int64 (V, )
    width: np.ndarray  # int64 (V, )
    length: np.ndarray  # int64 (V, ) frames


@dataclass
class _Tracks:
    """Tracks (annotations or predictions) with their masks.

    Attributes:
        video (np.ndarray): int64 (n, ) video position (in ``_Videos.ids``).
        category (np.ndarray): int64 (n, ) category position (sorted ids).
        value (np.ndarray): float64 (n, ) score of a prediction; for ground
            truth, the average of its non-zero ``areas``.
        masks (_MaskTable): their frame masks.
    """
    video: np.ndarray
    category: np.ndarray
    value: np.ndarray
    masks: _MaskTable


_get_size, _get_counts = itemgetter('size'), itemgetter('counts')


class _MaskCollector:
    """Checks the ``segmentations`` of tracks and gathers their frame masks.

    Per present mask it keeps the compressed counts string (str or bytes)
    and an RLE dict that pycocotools can read (the caller's own dict when it
    already is a compressed RLE, so no copy is made).
    """

    def __init__(self, videos: _Videos) -> None:
        self.videos = videos
        self.sizes = [[int(h), int(w)]
                      for h, w in zip(videos.height, videos.width)]
        self.strings: List[Union[str, bytes]] = []
        self.rles: List[Optional[dict]] = []
        self.known_area: List[int] = []  # -1: to be measured and checked
        self.track: List[int] = []
        self.frame: List[int] = []
        self.video: List[int] = []

    def add_track(self, track_index: int, video: int, segmentations: Any,
                  accept_polygons: bool,
                  describe: Callable[[int, int], str]) -> None:
        """Check one track's ``segmentations`` (one entry per frame) and
        collect its masks."""
        length = int(self.videos.length[video])
        if type(segmentations) is not list:
            raise YTVISFormatError(
                f'{describe(track_index, -1)}: segmentations must be a list '
                f'with one entry per frame, got {type(segmentations).__name__}'
            )
        if len(segmentations) != length:
            raise YTVISFormatError(
                f'{describe(track_index, -1)}: {len(segmentations)} '
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
                strings = list(map(_get_counts, present))
            except KeyError:
                strings, sizes = [], []
            counts_types = set(map(type, strings))
            if sizes.count(size) == num and counts_types <= {str, bytes}:
                self.strings += strings
                self.rles += present
                self.known_area += [-1] * num
                self.track += [track_index] * num
                self.frame += frames
                self.video += [video] * num
                return
            if sizes.count(size) == num and counts_types == {list}:
                height, width = size
                converted = [
                    _uncompressed_to_string(c, height, width) for c in strings
                ]
                if None not in converted:
                    self.strings += [string for string, _ in converted]
                    self.rles += [None] * num
                    self.known_area += [area for _, area in converted]
                    self.track += [track_index] * num
                    self.frame += frames
                    self.video += [video] * num
                    return
        for frame_index in frames:
            segmentation = segmentations[frame_index]
            string, area = self._frame_string(
                segmentation, size, accept_polygons,
                lambda: describe(track_index, frame_index))
            if string is None:  # an empty polygon list: no mask
                continue
            self.strings.append(string)
            self.rles.append(segmentation if area < 0 else None)
            self.known_area.append(area)
            self.track.append(track_index)
            self.frame.append(frame_index)
            self.video.append(video)

    @staticmethod
    def _frame_string(segmentation: Any, size: List[int],
                      accept_polygons: bool, describe: Callable[[], str]
                      ) -> Tuple[Optional[Union[str, bytes]], int]:
        """Check one frame's segmentation. Returns its compressed counts and
        its area when known (-1: a compressed RLE from the caller, to be
        measured and checked), or (None, -1) for an empty polygon list.
        ``describe()`` names the frame in error messages."""
        height, width = size
        if type(segmentation) is dict:
            given = segmentation.get('size')
            counts = segmentation.get('counts')
            if given is None or 'counts' not in segmentation:
                raise YTVISFormatError(
                    f"{describe()}: malformed RLE: needs 'size' and 'counts', "
                    f'has {sorted(segmentation)}')
            if not (isinstance(given, (list, tuple)) and len(given) == 2
                    and list(given) == size):
                raise YTVISFormatError(
                    f'{describe()}: RLE size {given!r} does not match the '
                    f'video size [height, width] = {size}')
            if type(counts) is str or type(counts) is bytes:
                return counts, -1
            if type(counts) is list:
                converted = _uncompressed_to_string(counts, height, width)
                if converted is None:
                    raise YTVISFormatError(
                        f'{describe()}: malformed RLE: uncompressed counts '
                        'must be non-negative integers summing to '
                        f'height*width = {height * width}')
                return converted
            raise YTVISFormatError(
                f"{describe()}: malformed RLE: 'counts' must be a string or a "
                f'list of run lengths, got {type(counts).__name__}')
        if accept_polygons and type(segmentation) is list:
            if not segmentation:  # ytvoseval treats [] as "no mask"
                return None, -1
            string = _polygons_to_string(segmentation, height, width,
                                         describe())
            return string, int(
                mask_utils.area({
                    'size': size,
                    'counts': string
                }))
        raise YTVISFormatError(
            f'{describe()}: a segmentation must be an RLE dict with size and '
            'counts' + (', a polygon list' if accept_polygons else '') +
            f' or null, got {type(segmentation).__name__}')

    def build(self, num_tracks: int, with_canvas: np.ndarray,
              describe: Callable[[int, int], str]) -> _MaskTable:
        """Check the collected RLEs (:func:`_build_mask_table`).

        Args:
            num_tracks: number of tracks added.
            with_canvas (np.ndarray): bool (num_tracks, ) tracks that take
                part in IoU computations.
            describe: ``(track, frame) -> str`` names a mask in errors.
        """
        video = np.asarray(self.video, np.int64)
        with _gc_paused():
            return _build_mask_table(self.strings, self.rles,
                                     self.known_area, self.track, self.frame,
                                     num_tracks, with_canvas,
                                     self.videos.height[video],
                                     self.videos.width[video], describe)


def _build_mask_table(strings: List[Union[str, bytes]],
                      rles: List[Optional[dict]], known_area: List[int],
                      track: List[int], frame: List[int], num_tracks: int,
                      with_canvas: np.ndarray, frame_height: np.ndarray,
                      frame_width: np.ndarray,
                      describe: Callable[[int, int], str]) -> _MaskTable:
    """Check compressed RLEs; compute their areas and IoU canvases.

    Args:
        strings: the compressed ``counts`` of each mask (str or bytes).
        rles: an RLE dict of each mask with those counts, None for masks we
            encoded ourselves (from run lengths or polygons).
        known_area: the area of the masks we encoded, -1 for the others
            (which are measured and checked here).
        track, frame: the track and the frame of each mask; tracks ascending.
        num_tracks: number of tracks (some may have no mask).
        with_canvas (np.ndarray): bool (num_tracks, ) tracks needing canvases.
        frame_height, frame_width (np.ndarray): int64 (N, ) the frame size of
            each mask's video.
        describe: ``(track, frame) -> str`` names a mask in error messages.
    """
    track = np.asarray(track, np.int64)
    frame = np.asarray(frame, np.int64)
    track_start = np.searchsorted(track, np.arange(num_tracks + 1))
    if not strings:
        return _MaskTable(track, frame, np.zeros(0, np.int64), [],
                          np.zeros(0, np.int64), track_start)
    frame_hw = frame_height * frame_width

    def fail(row: int, problem: str) -> None:
        raise YTVISFormatError(f'{describe(track[row], frame[row])}: '
                               f'malformed RLE: {problem}')

    try:
        try:
            joined = ''.join(strings).encode('ascii')
        except TypeError:  # some are bytes
            joined = b''.join(s if type(s) is bytes else s.encode('ascii')
                              for s in strings)
    except UnicodeEncodeError:
        for row, s in enumerate(strings):
            if type(s) is str and not s.isascii():
                fail(row, 'non-ASCII characters in counts')
        raise
    chars = np.frombuffer(joined, np.uint8)
    lengths = np.fromiter(map(len, strings), np.int64, len(strings))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    if (lengths == 0).any():
        fail(int(np.argmax(lengths == 0)), 'empty counts string')
    if chars.min() < _RLE_FIRST_CHAR or chars.max() > _RLE_LAST_CHAR:
        bad = np.flatnonzero((chars < _RLE_FIRST_CHAR)
                             | (chars > _RLE_LAST_CHAR))[0]
        row = int(np.searchsorted(ends, bad, side='right'))
        fail(row, f'invalid character {chr(chars[bad])!r} in counts')
    truncated = ((chars[ends - 1] - _RLE_FIRST_CHAR) & _RLE_MORE_BIT) != 0
    if truncated.any():
        fail(int(np.argmax(truncated)), 'counts string ends inside a number')

    values, value_ends, present, overlong = _decode_leading_counts(
        chars, starts, lengths, 3)
    num_leading = present.sum(1)
    out_of_range = present & ((values < 0) | (values > frame_hw[:, None]))
    bad = np.flatnonzero(overlong | out_of_range.any(1))
    if len(bad):
        fail(int(bad[0]), 'a run length is negative, longer than the frame '
             'or has too many chunks')

    # Masks from the caller's compressed RLEs: area, and whether foreground +
    # background cover the frame exactly (otherwise the RLE belongs to another
    # frame size or is corrupted, and pycocotools would loop forever comparing
    # it with a valid mask). The background is the area of the complement,
    # runs [0, c0, c1, c2, ...]: the old third run becomes the fourth and is
    # now stored as a difference to c0.
    area = np.asarray(known_area, np.int64)
    check = np.flatnonzero(area < 0)
    complement_values = values[check].copy()
    complement_values[:, 2] -= complement_values[:, 0]
    lead, lead_stride, _ = _encode_counts(complement_values)
    lead_len = np.zeros(len(check), np.int64)
    for column in range(3):
        column_len = _encode_counts(complement_values[:, column:column + 1])[2]
        lead_len += np.where(num_leading[check] > column, column_len, 0)
    tail = starts[check] + np.where(num_leading[check] == 3,
                                    value_ends[check, 2], lengths[check])
    any_size = [1, 1]  # area() ignores the size
    complement = [{
        'size': any_size,
        'counts': b'0' + lead[i * lead_stride:i * lead_stride + n] +
        joined[t:e]
    } for i, (n, t, e) in enumerate(
        zip(lead_len.tolist(), tail.tolist(), ends[check].tolist()))]
    area[check] = _area_of([rles[row] for row in check.tolist()])
    covered = area[check] + _area_of(complement)
    wrong = np.flatnonzero(covered != frame_hw[check])
    if len(wrong):
        row = int(check[wrong[0]])
        fail(row, f'run lengths cover {covered[wrong[0]] % _MAX_CANVAS_PIXELS}'
             f' pixels, expected height*width = {frame_hw[row]}')

    # Canvas: shift right by (frame % FRAMES_PER_IOU_CALL) frame widths.
    rows = np.flatnonzero(with_canvas[track])
    canvas_index = np.full(len(strings), -1, np.int64)
    canvas_index[rows] = np.arange(len(rows))
    shift = frame[rows] % FRAMES_PER_IOU_CALL
    first, stride, first_len = _encode_counts(
        values[rows, :1] + (shift * frame_hw[rows])[:, None])
    sizes: Dict[Tuple[int, int], List[int]] = {}  # one list per canvas size
    canvas_sizes = [
        sizes.setdefault((h, w), [h, w]) for h, w in zip(
            frame_height[rows].tolist(), (frame_width[rows] *
                                          (shift + 1)).tolist())
    ]
    canvas = [{
        'size': size,
        'counts': first[i * stride:i * stride + n] + joined[t:e]
    } for i, (size, n, t, e) in enumerate(
        zip(canvas_sizes, first_len.tolist(),
            (starts[rows] + value_ends[rows, 0]).tolist(),
            ends[rows].tolist()))]
    return _MaskTable(track, frame, area, canvas, canvas_index, track_start)


def _parse_videos(gt: dict, name: str) -> _Videos:
    videos = gt.get('videos')
    if not isinstance(videos, list):
        raise YTVISFormatError(f"{name}: ground truth needs a 'videos' list")
    ids, heights, widths, lengths = [], [], [], []
    for index, video in enumerate(videos):
        where = f'{name}: videos[{index}]'
        if not isinstance(video, dict):
            raise YTVISFormatError(f'{where}: must be a dict')
        video_id, height, width = (video.get('id'), video.get('height'),
                                   video.get('width'))
        if not _is_int(video_id):
            raise YTVISFormatError(f"{where}: 'id' must be an integer")
        for key, value in (('height', height), ('width', width)):
            if not _is_int(value) or value <= 0:
                raise YTVISFormatError(
                    f"{where} (id {video_id}): '{key}' must be a positive "
                    f'integer, got {value!r}')
        if height * width * FRAMES_PER_IOU_CALL >= _MAX_CANVAS_PIXELS:
            raise YTVISFormatError(
                f'{where} (id {video_id}): frames of {height}x{width} are too '
                'large for this evaluator')
        length = video.get('length')
        file_names = video.get('file_names')
        if length is None and isinstance(file_names, list):
            length = len(file_names)
        if not _is_int(length) or length <= 0:
            raise YTVISFormatError(
                f"{where} (id {video_id}): needs a positive 'length' or a "
                "'file_names' list")
        if isinstance(file_names, list) and len(file_names) != length:
            raise YTVISFormatError(
                f"{where} (id {video_id}): 'length' {length} but "
                f'{len(file_names)} file_names')
        ids.append(int(video_id))
        heights.append(height)
        widths.append(width)
        lengths.append(length)
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise YTVISFormatError(
            f'{name}: duplicate video ids {sorted(duplicates)[:10]}')
    order = np.argsort(ids, kind='stable')
    sorted_ids = np.asarray(ids, np.int64)[order]
    return _Videos(
        ids=sorted_ids,
        index={int(i): k
               for k, i in enumerate(sorted_ids)},
        height=np.asarray(heights, np.int64)[order],
        width=np.asarray(widths, np.int64)[order],
        length=np.asarray(lengths, np.int64)[order])


def _parse_categories(gt: dict, name: str) -> np.ndarray:
    categories = gt.get('categories')
    if not isinstance(categories, list) or not categories:
        raise YTVISFormatError(
            f"{name}: ground truth needs a non-empty 'categories' list")
    ids = []
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or not _is_int(category.get('id')):
            raise YTVISFormatError(
                f"{name}: categories[{index}] needs an integer 'id'")
        ids.append(int(category['id']))
    duplicates = [i for i, n in Counter(ids).items() if n > 1]
    if duplicates:
        raise YTVISFormatError(
            f'{name}: duplicate category ids {sorted(duplicates)}')
    return np.asarray(sorted(ids), np.int64)


@dataclass
class _GroundTruth:
    videos: _Videos
    category_ids: np.ndarray  # int64 (K, ) sorted
    tracks: Optional[_Tracks]  # None when the file has no annotations
    annotation_ids: np.ndarray  # int64 (n, )
    crowd: np.ndarray  # bool (n, )


def _parse_ground_truth(gt: dict, name: str) -> _GroundTruth:
    if not isinstance(gt, dict):
        raise YTVISFormatError(
            f'{name}: ground truth must be a dict with videos, annotations '
            f'and categories, got {type(gt).__name__}')
    videos = _parse_videos(gt, name)
    category_ids = _parse_categories(gt, name)
    category_index = {int(c): k for k, c in enumerate(category_ids)}
    annotations = gt.get('annotations')
    if annotations is None:
        return _GroundTruth(videos, category_ids, None,
                            np.zeros(0, np.int64), np.zeros(0, bool))
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
                raise YTVISFormatError(
                    f"{describe(index, -1)}: '{key}' must be an integer")
        video_position = videos.index.get(annotation['video_id'])
        if video_position is None:
            raise YTVISFormatError(
                f"{describe(index, -1)}: unknown video_id "
                f"{annotation['video_id']}")
        category_position = category_index.get(annotation['category_id'])
        if category_position is None:
            raise YTVISFormatError(
                f"{describe(index, -1)}: category_id "
                f"{annotation['category_id']} is not in 'categories'")
        areas = annotation.get('areas')
        length = int(videos.length[video_position])
        if (not isinstance(areas, list) or len(areas) != length
                or not all(a is None or (type(a) in (int, float)
                                         or _is_real(a)) and a >= 0
                           for a in areas)):
            raise YTVISFormatError(
                f"{describe(index, -1)}: 'areas' must list one non-negative "
                f'number or null per frame ({length} frames)')
        iscrowd = annotation.get('iscrowd', 0)
        if iscrowd not in (0, 1):
            raise YTVISFormatError(
                f"{describe(index, -1)}: 'iscrowd' must be 0 or 1, got "
                f'{iscrowd!r}')
        collector.add_track(index, video_position,
                            annotation.get('segmentations'), True, describe)
        # ytvoseval: the mean of the truthy per-frame areas, else 0.
        nonzero_areas = [a for a in areas if a]
        average_area[index] = (
            np.array(nonzero_areas).mean() if nonzero_areas else 0)
        video[index], category[index] = video_position, category_position
        annotation_ids[index] = annotation['id']
        crowd[index] = bool(iscrowd)
    duplicates = [i for i, n in Counter(annotation_ids.tolist()).items()
                  if n > 1]
    if duplicates:
        raise YTVISFormatError(
            f'{name}: duplicate annotation ids {sorted(duplicates)[:10]}')
    masks = collector.build(num, np.ones(num, bool), describe)
    return _GroundTruth(videos, category_ids,
                        _Tracks(video, category, average_area, masks),
                        annotation_ids, crowd)


def _parse_results(results: Any, name: str, gt: _GroundTruth) -> _Tracks:
    """Check a results list against the ground truth and collect its masks.
    """
    if not isinstance(results, list):
        raise YTVISFormatError(
            f'{name}: results must be a list of {{video_id, category_id, '
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
            raise YTVISFormatError(
                f'{name}: results[{index}] must be a dict, got '
                f'{type(entry).__name__}')
        missing = [key for key in required if key not in entry]
        if missing:
            raise YTVISFormatError(
                f'{name}: results[{index}] misses {", ".join(missing)}')
        video_id, category_id, entry_score = (entry['video_id'],
                                              entry['category_id'],
                                              entry['score'])
        video_position = (
            videos.index.get(int(video_id)) if _is_int(video_id) else None)
        if video_position is None:
            raise YTVISFormatError(
                f'{describe(index, -1)}: video_id {video_id!r} is not a '
                'video of the ground truth')
        category_position = (
            category_index.get(int(category_id))
            if _is_int(category_id) else None)
        if category_position is None:
            raise YTVISFormatError(
                f'{describe(index, -1)}: category_id {category_id!r} is not '
                'one of the ground-truth categories '
                f'{category_ids.tolist()}')
        if not _is_real(entry_score) or not math.isfinite(entry_score):
            raise YTVISFormatError(
                f'{describe(index, -1)}: score must be a finite number, got '
                f'{entry_score!r}')
        collector.add_track(index, video_position, entry['segmentations'],
                            False, describe)
        video[index], category[index] = video_position, category_position
        score[index] = entry_score
    # Only predictions of a (video, category) with ground truth need IoUs.
    with_canvas = np.zeros(num, bool)
    if gt.tracks is not None:
        num_categories = len(category_ids)
        gt_keys = gt.tracks.video * num_categories + gt.tracks.category
        with_canvas = np.isin(video * num_categories + category, gt_keys)
    return _Tracks(video, category, score,
                   collector.build(num, with_canvas, describe))


# --------------------------------------------------------------------------
# Matching and accumulation
# --------------------------------------------------------------------------
def _video_ious(dt_masks: _MaskTable, dt_tracks: np.ndarray,
                dt_area: np.ndarray, gt_masks: _MaskTable,
                gt_tracks: np.ndarray, gt_area: np.ndarray) -> np.ndarray:
    """Video IoU of predictions x ground truths of one (video, category).

    IoU = sum over frames of |P & G| / sum over frames of |P | G|, frames
    where both are absent skipped (as ytvoseval).

    Args:
        dt_tracks, gt_tracks (np.ndarray): int64 (D, ), (G, ) track indices.
        dt_area, gt_area (np.ndarray): int64 (D, ), (G, ) areas summed over
            frames.

    Returns:
        np.ndarray: float64 (D, G).
    """
    num_dt, num_gt = len(dt_tracks), len(gt_tracks)
    d_rows, d_owner = dt_masks.rows_of(dt_tracks)
    g_rows, g_owner = gt_masks.rows_of(gt_tracks)
    # Only IoUs >= min(IOU_THRESHOLDS) = 0.5 can change a match. Skip the
    # pairs that cannot get there even if every frame's smaller mask lay
    # inside the other: |P & G| <= M = sum_f min(|P_f|, |G_f|), and
    # M / (|P| + |G| - M) < 1/2  <=>  3 M < |P| + |G|.
    num_frames = int(max(dt_masks.frame[d_rows].max(initial=-1),
                         gt_masks.frame[g_rows].max(initial=-1))) + 1
    d_frame_area = np.zeros((num_dt, num_frames), np.int64)
    d_frame_area[d_owner, dt_masks.frame[d_rows]] = dt_masks.area[d_rows]
    g_frame_area = np.zeros((num_gt, num_frames), np.int64)
    g_frame_area[g_owner, gt_masks.frame[g_rows]] = gt_masks.area[g_rows]
    most = np.minimum(d_frame_area[:, None, :], g_frame_area[None]).sum(-1)
    hopeful = 3 * most >= dt_area[:, None] + gt_area[None, :]
    d_keep, g_keep = hopeful.any(1)[d_owner], hopeful.any(0)[g_owner]
    d_rows, d_owner = d_rows[d_keep], d_owner[d_keep]
    g_rows, g_owner = g_rows[g_keep], g_owner[g_keep]
    d_block = dt_masks.frame[d_rows] // FRAMES_PER_IOU_CALL
    g_block = gt_masks.frame[g_rows] // FRAMES_PER_IOU_CALL
    pair_pixels = []
    for block in np.intersect1d(d_block, g_block):
        d_in, g_in = d_block == block, g_block == block
        d_sel = d_rows[d_in]
        # With iscrowd=1 pycocotools returns |P & G| / |P| (exactly, in
        # double), so the integer intersection is recovered by rounding.
        # Masks of different frames never overlap on the canvas: 0.
        ratio = mask_utils.iou(
            [dt_masks.canvas[i] for i in dt_masks.canvas_index[d_sel]],
            [gt_masks.canvas[i] for i in gt_masks.canvas_index[g_rows[g_in]]],
            [1] * int(g_in.sum()))
        d_pos, g_pos = np.nonzero(ratio)
        pixels = np.rint(ratio[d_pos, g_pos] * dt_masks.area[d_sel[d_pos]])
        pair_pixels.append((d_owner[d_in][d_pos] * num_gt +
                            g_owner[g_in][g_pos], pixels))
    if pair_pixels:
        pairs, pixels = map(np.concatenate, zip(*pair_pixels))
        intersection = np.bincount(
            pairs, pixels, minlength=num_dt * num_gt).reshape(num_dt, num_gt)
    else:
        intersection = np.zeros((num_dt, num_gt))
    intersection = intersection.astype(np.int64)
    union = dt_area[:, None] + gt_area[None, :] - intersection
    ious = np.zeros(intersection.shape)
    np.divide(intersection, union, out=ious, where=hopeful & (union > 0))
    return ious


def _match(ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray,
           gt_ids: np.ndarray,
           dt_outside: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Greedy matching of one (video, category), as ytvoseval.evaluateVid.

    For each prediction in score order and each (area range, IoU threshold),
    take the best-IoU ground truth (the last one among equals) that is still
    free (crowd ones always are) with IoU >= threshold, preferring
    non-ignored ground truth; ignored ones only if no other qualifies.

    Args:
        ious (np.ndarray): float64 (D, G), predictions in score order.
        gt_ignore (np.ndarray): bool (A, G) crowd or outside the area range.
        gt_crowd (np.ndarray): bool (G, ).
        gt_ids (np.ndarray): int64 (G, ) annotation ids.
        dt_outside (np.ndarray): bool (A, D) prediction outside the range.

    Returns:
        tuple: ``matched`` bool (A, T, D) and ``ignored`` bool (A, T, D). As in
        ytvoseval a match is recorded as the annotation id and tested for
        truth, so a match with an annotation of id 0 does not count.
    """
    num_dt, num_gt = ious.shape
    num_areas, num_thr = len(gt_ignore), len(IOU_THRESHOLDS)
    matched_id = np.zeros((num_areas, num_thr, num_dt), np.int64)
    ignored = np.zeros((num_areas, num_thr, num_dt), bool)
    if num_gt:
        thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, :, None]
        taken = np.zeros((num_areas, num_thr, num_gt), bool)
        ignore = gt_ignore[:, None, :]
        last_first = np.arange(num_gt)[::-1]
        for d in np.flatnonzero(ious.max(1) >= thresholds.min()):
            iou = ious[d]
            candidate = (~taken | gt_crowd) & (iou >= thresholds)
            regular = candidate & ~ignore
            pool = np.where(regular.any(-1, keepdims=True), regular,
                            candidate & ignore)
            best = np.where(pool, iou, -np.inf).max(-1, keepdims=True)
            winners = pool & (iou == best)
            area_idx, thr_idx = np.nonzero(winners.any(-1))
            if not len(area_idx):
                continue
            gt_idx = last_first[np.argmax(
                winners[area_idx, thr_idx][:, ::-1], axis=-1)]
            taken[area_idx, thr_idx, gt_idx] = True
            matched_id[area_idx, thr_idx, d] = gt_ids[gt_idx]
            ignored[area_idx, thr_idx, d] = gt_ignore[area_idx, gt_idx]
    matched = matched_id != 0
    ignored |= ~matched & dt_outside[:, None, :]
    return matched, ignored


@dataclass
class _Matches:
    """Matching results of all (video, category) pairs that have ground truth
    or predictions, sorted by (category, video); predictions concatenated in
    that pair order, each pair's in score order (top ``max(MAX_DETS)``)."""
    pair_category: np.ndarray  # int64 (P, )
    pair_video: np.ndarray  # int64 (P, )
    pair_regular_gt: np.ndarray  # int64 (P, A) non-ignored ground truths
    dt_pair: np.ndarray  # int64 (N, )
    dt_rank: np.ndarray  # int64 (N, ) position in its pair
    dt_score: np.ndarray  # float64 (N, )
    dt_matched: np.ndarray  # bool (A, T, N)
    dt_ignored: np.ndarray  # bool (A, T, N)


def _match_all(gt: _GroundTruth, dt: _Tracks) -> _Matches:
    gt_tracks = gt.tracks
    num_categories = len(gt.category_ids)
    area_low = np.array([r[1] for r in AREA_RANGES], np.float64)
    area_high = np.array([r[2] for r in AREA_RANGES], np.float64)
    max_dets = max(MAX_DETS)

    gt_key = gt_tracks.video * num_categories + gt_tracks.category
    dt_key = dt.video * num_categories + dt.category
    gt_order = np.argsort(gt_key, kind='stable')  # annotation order in pair
    # Score order within a pair, ties in results order (stable, as ytvoseval).
    dt_order = np.lexsort((np.arange(len(dt_key)), -dt.value, dt_key))
    keys = np.union1d(gt_key, dt_key)
    gt_bounds = np.searchsorted(gt_key[gt_order], [keys, keys + 1])
    dt_bounds = np.searchsorted(dt_key[dt_order], [keys, keys + 1])

    gt_area = gt_tracks.masks.track_areas()
    dt_area = dt.masks.track_areas()
    dt_nonzero = np.bincount(
        dt.masks.track[dt.masks.area > 0], minlength=len(dt_key))
    dt_average_area = np.zeros(len(dt_key))
    np.divide(dt_area, dt_nonzero, out=dt_average_area, where=dt_nonzero > 0)
    gt_outside = ((gt_tracks.value[None, :] < area_low[:, None])
                  | (gt_tracks.value[None, :] > area_high[:, None]))
    gt_ignore_all = gt_outside | gt.crowd[None, :]  # (A, n_gt)
    dt_outside_all = ((dt_average_area[None, :] < area_low[:, None])
                      | (dt_average_area[None, :] > area_high[:, None]))

    # (category, video) order for the accumulation.
    keys_order = np.lexsort((keys // num_categories, keys % num_categories))
    pair_regular_gt = np.zeros((len(keys), len(AREA_RANGES)), np.int64)
    dt_pair, dt_rank, dt_index, matched, ignored = [], [], [], [], []
    for pair, k in enumerate(keys_order):
        gts = gt_order[gt_bounds[0, k]:gt_bounds[1, k]]
        dts = dt_order[dt_bounds[0, k]:dt_bounds[1, k]][:max_dets]
        gt_ignore = gt_ignore_all[:, gts]
        pair_regular_gt[pair] = (~gt_ignore).sum(1)
        if not len(dts):
            continue
        if len(gts):
            ious = _video_ious(dt.masks, dts, dt_area[dts], gt_tracks.masks,
                               gts, gt_area[gts])
        else:
            ious = np.zeros((len(dts), 0))
        pair_matched, pair_ignored = _match(ious, gt_ignore, gt.crowd[gts],
                                            gt.annotation_ids[gts],
                                            dt_outside_all[:, dts])
        dt_pair.append(np.full(len(dts), pair))
        dt_rank.append(np.arange(len(dts)))
        dt_index.append(dts)
        matched.append(pair_matched)
        ignored.append(pair_ignored)
    shape = (len(AREA_RANGES), len(IOU_THRESHOLDS), 0)
    dt_index = np.concatenate(dt_index) if dt_index else np.zeros(0, int)
    return _Matches(
        pair_category=keys[keys_order] % num_categories,
        pair_video=keys[keys_order] // num_categories,
        pair_regular_gt=pair_regular_gt,
        dt_pair=np.concatenate(dt_pair) if dt_pair else np.zeros(0, int),
        dt_rank=np.concatenate(dt_rank) if dt_rank else np.zeros(0, int),
        dt_score=dt.value[dt_index],
        dt_matched=(np.concatenate(matched, -1)
                    if matched else np.zeros(shape, bool)),
        dt_ignored=(np.concatenate(ignored, -1)
                    if ignored else np.zeros(shape, bool)))


def _accumulate(matches: _Matches, num_categories: int,
                video_mask: Optional[np.ndarray] = None
                ) -> Tuple[np.ndarray, np.ndarray]:
    """Precision / recall curves, as ytvoseval.accumulate.

    Args:
        matches: output of :func:`_match_all`.
        num_categories: K.
        video_mask (np.ndarray, optional): bool (V, ) videos to include.

    Returns:
        tuple: ``precision`` float64 (T, R, K, A, M) and ``recall`` float64
        (T, K, A, M); -1 where a category has no (non-ignored) ground truth.
    """
    num_thr, num_rec = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    num_areas, num_dets = len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((num_thr, num_rec, num_categories, num_areas,
                          num_dets))
    recall = -np.ones((num_thr, num_categories, num_areas, num_dets))
    pair_in = (np.ones(len(matches.pair_video), bool) if video_mask is None
               else video_mask[matches.pair_video])
    dt_in = pair_in[matches.dt_pair]
    pair_bounds = np.searchsorted(matches.pair_category,
                                  np.arange(num_categories + 1))
    dt_bounds = np.searchsorted(matches.dt_pair, pair_bounds)
    for k in range(num_categories):
        pairs = slice(pair_bounds[k], pair_bounds[k + 1])
        if not pair_in[pairs].any():
            continue
        regular_gt = matches.pair_regular_gt[pairs][pair_in[pairs]].sum(0)
        dts = np.arange(dt_bounds[k], dt_bounds[k + 1])
        dts = dts[dt_in[dts]]
        # Pairs are in video order and each pair's predictions in score
        # order, so a stable sort reproduces ytvoseval's tie order.
        dts = dts[np.argsort(-matches.dt_score[dts], kind='stable')]
        for m, max_det in enumerate(MAX_DETS):
            selected = dts[matches.dt_rank[dts] < max_det]
            for a in range(num_areas):
                if regular_gt[a] == 0:
                    continue
                matched = matches.dt_matched[a][:, selected]
                counted = ~matches.dt_ignored[a][:, selected]
                tp = np.cumsum(matched & counted, axis=1).astype(np.float64)
                fp = np.cumsum(~matched & counted, axis=1).astype(np.float64)
                num = len(selected)
                rc = tp / regular_gt[a]
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1] if num else 0
                # Interpolate: precision at recall r = max precision at >= r.
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(num_thr):
                    at = np.searchsorted(rc[t], RECALL_THRESHOLDS, 'left')
                    valid = at < num
                    row = np.zeros(num_rec)
                    row[valid] = pr[t, at[valid]]
                    precision[t, :, k, a, m] = row
    return precision, recall


def _summarize(precision: np.ndarray, recall: np.ndarray,
               names: Sequence[str] = METRIC_NAMES) -> Dict[str, float]:
    """ytvoseval.summarize: means over the valid (> -1) entries, -1 if none.
    """
    area_names = [r[0] for r in AREA_RANGES]
    summary = {}
    for name in names:
        is_ap, iou_threshold, area, max_det = _SUMMARY[name]
        a, m = area_names.index(area), MAX_DETS.index(max_det)
        values = precision[..., a, m] if is_ap else recall[..., a, m]
        if iou_threshold is not None:
            values = values[np.flatnonzero(IOU_THRESHOLDS == iou_threshold)]
        valid = values[values > -1]
        summary[name] = float(np.mean(valid)) if len(valid) else -1.0
    return summary


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------
class YTVISEvaluator:
    """YouTube-VIS / OVIS evaluator with the ground truth parsed once.

    Args:
        gt (str | dict): path of the YouTube-VIS style JSON or its content.
        gt_name (str, optional): how to name ``gt`` in error messages when it
            is not a path.

    Example:
        >>> evaluator = YTVISEvaluator('data/ovis/annotations_valid_sub.json')
        >>> metrics = evaluator.evaluate('work_dirs/results.json')
        >>> metrics['AP'], metrics['AR10']  # fractions, -1 where undefined
    """

    def __init__(self, gt: PathOrDict, gt_name: Optional[str] = None) -> None:
        content, self.gt_name = _load(gt, gt_name or '<ground truth>')
        self._gt = _parse_ground_truth(content, self.gt_name)

    @property
    def category_ids(self) -> List[int]:
        """Sorted ground-truth category ids (label ``i`` is the ``i``-th)."""
        return self._gt.category_ids.tolist()

    @property
    def video_ids(self) -> List[int]:
        """Sorted ground-truth video ids."""
        return self._gt.videos.ids.tolist()

    @property
    def has_annotations(self) -> bool:
        """False for a file without annotations (a test split)."""
        return self._gt.tracks is not None

    def check_results(self, results: PathOrList,
                      results_name: Optional[str] = None) -> None:
        """Raise :class:`YTVISFormatError` if ``results`` is malformed (also
        for a ground truth without annotations, e.g. before a submission)."""
        content, name = _load(results, results_name or '<results>')
        _parse_results(content, name, self._gt)

    def evaluate(self,
                 results: PathOrList,
                 long_video_ids: Optional[Iterable[int]] = None,
                 results_name: Optional[str] = None) -> Dict[str, float]:
        """Video mask AP / AR of ``results`` (fractions in [0, 1]; -1 where
        no category has ground truth, as ytvoseval).

        Args:
            results (str | list): results file (JSON, or a zip holding
                ``results.json``) or the list itself.
            long_video_ids (Iterable[int], optional): YouTube-VIS 2022 long
                videos; then also ``AP_short``, ``AP_long``, ...,
                ``AP_2022 = (AP_short + AP_long) / 2``.
            results_name (str, optional): how to name ``results`` in errors.

        Returns:
            dict: :data:`METRIC_NAMES` (+ :data:`METRIC_NAMES_2022`).
        """
        precision, recall, splits = self.accumulate(results, long_video_ids,
                                                    results_name)
        metrics = _summarize(precision, recall)
        if splits:
            for split, (split_precision, split_recall) in splits.items():
                split_metrics = _summarize(split_precision, split_recall,
                                           _METRICS_PER_SPLIT)
                metrics.update((f'{name}_{split}', value)
                               for name, value in split_metrics.items())
            short, long = metrics['AP_short'], metrics['AP_long']
            defined = short >= 0 and long >= 0
            metrics['AP_2022'] = (short + long) / 2 if defined else -1.0
        return metrics

    def accumulate(
        self,
        results: PathOrList,
        long_video_ids: Optional[Iterable[int]] = None,
        results_name: Optional[str] = None
    ) -> Tuple[np.ndarray, np.ndarray, Dict[str, Tuple[np.ndarray,
                                                       np.ndarray]]]:
        """The precision (T, R, K, A, M) and recall (T, K, A, M) arrays of
        ytvoseval (``eval['precision']`` / ``eval['recall']``), and with
        ``long_video_ids`` the same for the ``'short'`` and ``'long'``
        videos."""
        if self._gt.tracks is None:
            raise YTVISFormatError(
                f'{self.gt_name}: has no annotations (a test split?); it can '
                'only be used to format results (format_only)')
        content, name = _load(results, results_name or '<results>')
        dt = _parse_results(content, name, self._gt)
        long_mask = None
        if long_video_ids is not None:
            long_mask = np.zeros(len(self._gt.videos.ids), bool)
            for video_id in long_video_ids:
                position = self._gt.videos.index.get(int(video_id))
                if position is None:
                    raise YTVISFormatError(
                        f'long video id {video_id} is not a video of '
                        f'{self.gt_name}')
                long_mask[position] = True
        matches = _match_all(self._gt, dt)
        num_categories = len(self._gt.category_ids)
        precision, recall = _accumulate(matches, num_categories)
        splits = {}
        if long_mask is not None:
            splits = {
                'short': _accumulate(matches, num_categories, ~long_mask),
                'long': _accumulate(matches, num_categories, long_mask)
            }
        return precision, recall, splits


def evaluate_ytvis(gt: PathOrDict,
                   results: PathOrList,
                   long_video_ids: Optional[Union[str, Iterable[int]]] = None
                   ) -> Dict[str, float]:
    """Evaluate YouTube-VIS / OVIS results (see :class:`YTVISEvaluator`).

    Args:
        gt (str | dict): ground-truth JSON path or content.
        results (str | list): results JSON path (or zip) or the list.
        long_video_ids (str | Iterable[int], optional): YouTube-VIS 2022 long
            videos, or a JSON file listing them.

    Returns:
        dict: metric name -> fraction (-1 where undefined).
    """
    if isinstance(long_video_ids, (str, os.PathLike)):
        long_video_ids = load_long_video_ids(long_video_ids)
    return YTVISEvaluator(gt).evaluate(results, long_video_ids)


def metrics_table(metrics: Dict[str, float], percent: bool = True) -> str:
    """A two-column text table of metrics (percent by default; undefined
    values, -1, print as "n/a")."""
    lines = ['metric      value', '----------  -------']
    for name, value in metrics.items():
        shown = ('n/a' if value < 0 else
                 f'{value * 100:.2f}' if percent else f'{value:.4f}')
        lines.append(f'{name:<10}  {shown:>7}')
    return '\n'.join(lines)
