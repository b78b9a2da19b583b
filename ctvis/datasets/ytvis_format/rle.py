"""The one check of YouTube-VIS masks given as RLEs (pycocotools' run-length encoding).

pycocotools trusts the run lengths: a malformed RLE hangs it or makes it read or write out of
bounds. Every RLE is therefore checked here before pycocotools sees it, without decoding a mask to
pixels:

* uncompressed RLEs (``counts`` a list, the YouTube-VIS ground truth) are read into one uint32
  array and summed with numpy, all at once;
* compressed strings are decoded exactly, run by run, by :func:`ctvis.ops.check_rle_strings`
  (ctvis' C++ extension; a numpy path where it is not built): every character, every run >= 0,
  the runs covering the frame exactly; it also gives the areas.

A failing mask is reported through a ``fail(index, problem)`` callback, so that the caller names
the file, the entry and the frame.
"""
import array
import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

from ...ops import rle_check
from .loading import YTVISFormatError, is_int, is_real

MAX_CANVAS_PIXELS = 2**32  # pycocotools run lengths and areas are uint32
_UINT32_CODE = next(code for code in 'IL' if array.array(code).itemsize == 4)


def encode_counts(values: np.ndarray) -> Tuple[bytes, int, np.ndarray]:
    """Encode run lengths the way pycocotools does (``rleToString``).

    Args:
        values (np.ndarray): int64 (n, q), encoded back to back per row
            (absolute values; the caller does any differencing).

    Returns:
        tuple: the rows as one bytes object of fixed stride, the stride and
        int64 (n, ) the used length of each row.
    """
    n, q = values.shape
    stride = q * rle_check.MAX_CHUNKS
    out = np.zeros((n, stride), np.uint8)
    lengths = np.zeros(n, np.int64)
    for column in range(q):
        value = values[:, column].copy()
        more = np.ones(n, bool)
        for _ in range(rle_check.MAX_CHUNKS):
            code = value & 0x1f
            value >>= 5
            follows = np.where(code & rle_check.SIGN_BIT, value != -1, value != 0)
            rows = np.flatnonzero(more)
            out[rows,
                lengths[rows]] = (code[rows]
                                  | np.where(follows[rows], rle_check.MORE_BIT, 0)
                                  ) + rle_check.FIRST_CHAR
            lengths[rows] += 1
            more &= follows
    return out.tobytes(), stride, lengths


def polygons_problem(polygons: list) -> Optional[str]:
    """Why a polygon list is unusable, or None if it is fine (an empty list is handled
    by the caller)."""
    for polygon in polygons:
        if not isinstance(polygon, list):
            return f'polygon is a {type(polygon).__name__}, expected a list of coordinates'
        if len(polygon) < 6 or len(polygon) % 2:
            return f'polygon has {len(polygon)} coordinates, expected an even number >= 6'
        if not all(is_real(x) for x in polygon):
            return 'polygon coordinates contain non-numbers'
        if not math.isfinite(sum(polygon)):
            return 'polygon coordinates are not finite'
    return None


def polygons_to_string(polygons: list, height: int, width: int, where: str) -> bytes:
    """Rasterise a polygon segmentation as ytvoseval does (YTVIS.annToRLE); fewer than 3 points
    are refused (pycocotools would read a 4-number polygon as a box)."""
    problem = polygons_problem(polygons)
    if problem:
        raise YTVISFormatError(f'{where}: {problem}')
    try:
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    except Exception as error:
        raise YTVISFormatError(f'{where}: cannot rasterise the polygons ({error})') from None
    return rle['counts']


def uncompressed_to_string(counts: list, height: int, width: int) -> Optional[bytes]:
    """Check an uncompressed RLE (list counts). Returns its compressed counts
    string, or None if it is malformed."""
    try:  # rejects negative, fractional and non-numeric run lengths
        runs = array.array(_UINT32_CODE, counts)
    except (TypeError, OverflowError, ValueError):
        return None
    values = np.frombuffer(runs, np.uint32)
    if not len(values) or int(values.sum(dtype=np.int64)) != height * width:
        return None
    if len(values) > 1 and not values[1:].min():
        values = merge_empty_runs(values)
    rle = mask_utils.frPyObjects({'counts': values, 'size': [height, width]}, height, width)
    return rle['counts']


@dataclass
class StringSource:
    """Checked compressed counts strings, back to back (for canvases)."""
    joined: bytes
    starts: np.ndarray  # int64 (n, ) where each string begins in joined
    ends: np.ndarray  # int64 (n, )
    first: np.ndarray  # int64 (n, ) first run length
    first_end: np.ndarray  # int64 (n, ) offset after it in the string


@dataclass
class RunSource:
    """Checked uncompressed run lengths (no empty run inside), back to back.
    """
    runs: np.ndarray  # uint32 (total, )
    starts: np.ndarray  # int64 (n, )
    ends: np.ndarray  # int64 (n, )


def uncompressed_problem(counts: Any, num_pixels: int) -> str:
    """The error message of an uncompressed RLE ``counts`` list that failed the check: the rule
    and what breaks it."""
    try:
        total = sum(counts)
    except TypeError:
        detail = 'they contain non-numbers'
    else:
        if not all(map(is_int, counts)):
            detail = 'they are not all integers'
        elif counts and min(counts) < 0:
            detail = 'they contain a negative run'
        else:
            detail = f'they sum to {total} pixels'
    return ('malformed RLE: uncompressed counts must be non-negative integers summing to '
            f'height*width = {num_pixels}; {detail}')


def compressed_problem(problem: int, where: int, value: int, num_pixels: int) -> str:
    """The error message of a compressed RLE counts string that failed
    :func:`ctvis.ops.check_rle_strings` (its ``problem``, ``where`` and ``value``)."""
    if problem == rle_check.EMPTY:
        detail = 'empty counts string'
    elif problem == rle_check.BAD_CHARACTER:
        detail = f'invalid character {chr(value)!r} in counts (offset {where})'
    elif problem == rle_check.TOO_MANY_CHUNKS:
        detail = (f'a run length has too many chunks (run {where} has more than '
                  f'{rle_check.MAX_CHUNKS} characters, more than any uint32 needs)')
    elif problem == rle_check.TRUNCATED:
        detail = f'counts string ends inside a number (run {where})'
    elif problem == rle_check.WIDE_NEGATIVE:
        detail = (f'a run length is stored as a negative difference of {rle_check.MAX_CHUNKS} '
                  f'characters (run {where}), which pycocotools decodes wrongly')
    elif problem == rle_check.NEGATIVE_RUN:
        detail = f'a run length is negative (run {where} is {value})'
    elif problem == rle_check.BEYOND_FRAME:
        detail = (f'run lengths cover more than height*width = {num_pixels} pixels (runs 0 to '
                  f'{where} cover {value})')
    else:
        assert problem == rle_check.SHORT, problem
        detail = f'run lengths cover {value} pixels, expected height*width = {num_pixels}'
    return f'malformed RLE: {detail}'


def check_compressed_counts(strings: List[Union[str, bytes]], frame_hw: np.ndarray,
                            fail: Callable[[int, str], None]) -> Tuple[np.ndarray, StringSource]:
    """Check compressed RLE counts strings exactly and measure their areas.

    Every run of every string is decoded (:func:`ctvis.ops.check_rle_strings`): the characters,
    the termination, every run length >= 0 and their sum, which must be the frame's pixels.

    Args:
        strings: the compressed ``counts`` of each mask (str or bytes).
        frame_hw (np.ndarray): int64 (n, ) pixels of each mask's frame.
        fail: ``(index, problem)`` raises the error of a string (the first failing one).

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
    lengths = np.fromiter(map(len, strings), np.int64, len(strings))
    ends = np.cumsum(lengths)
    checked = rle_check.check_rle_strings(joined, ends, frame_hw)
    failing = np.flatnonzero(checked.problem)
    if len(failing):
        index = int(failing[0])
        fail(index, compressed_problem(*(int(field[index]) for field in checked[:3]),
                                       int(frame_hw[index])))
    with_empty_runs = np.flatnonzero(checked.empty_runs)
    if len(with_empty_runs):  # rare (pycocotools never writes them): re-encode, check again
        strings = list(strings)
        for index in with_empty_runs.tolist():
            counts = strings[index]
            strings[index] = canonical_string(
                counts.encode('ascii') if type(counts) is str else counts, int(frame_hw[index]))
        return check_compressed_counts(strings, frame_hw, fail)
    return checked.area, StringSource(joined, ends - lengths, ends, checked.first,
                                      checked.first_end)


def without_empty_runs(counts: bytes, num_pixels: int) -> bytes:
    """``counts`` (a checked compressed string), or :func:`canonical_string` of it where it has
    empty runs after the first."""
    checked = rle_check.check_rle_strings(counts, np.array([len(counts)]), np.array([num_pixels]))
    return canonical_string(counts, num_pixels) if checked.empty_runs[0] else counts


def canonical_string(counts: bytes, num_pixels: int) -> bytes:
    """The string pycocotools' ``encode`` writes for the mask of checked ``counts``: empty runs
    after the first merged into their neighbours. pycocotools' IoU walk over two RLEs stops where
    both reach an empty run, so two identical masks written with one would score IoU 0. RLE runs
    are column-major, so the mask's shape is irrelevant: decoded as one column."""
    column = mask_utils.decode({'size': [num_pixels, 1], 'counts': counts})
    return mask_utils.encode(np.asfortranarray(column))['counts']


def check_uncompressed_counts(run_lists: List[list], frame_hw: np.ndarray,
                              fail: Callable[[int, str], None]) -> Tuple[np.ndarray, RunSource]:
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
        return uncompressed_problem(run_lists[index], int(frame_hw[index]))

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
            merged = merge_empty_runs(runs[starts[index]:ends[index]])
            pieces += [runs[previous:starts[index]], merged]
            previous = ends[index]
            lengths[index] = len(merged)
        runs = np.concatenate(pieces + [runs[previous:]])
        ends = np.cumsum(lengths)
        starts = ends - lengths
    return area, RunSource(runs, starts, ends)


def merge_empty_runs(values: np.ndarray) -> np.ndarray:
    """Run lengths (uint32) with every empty run after the first merged into
    its neighbours (the same mask)."""
    parity = np.arange(len(values)) % 2
    keep = values > 0
    keep[0] = True
    values, parity = values[keep], parity[keep]
    first_of_group = np.concatenate([[True], parity[1:] != parity[:-1]])
    values = np.add.reduceat(values, np.flatnonzero(first_of_group), dtype=np.int64)
    return values.astype(np.uint32)


