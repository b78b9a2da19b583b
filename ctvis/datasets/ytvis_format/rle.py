"""The one check of YouTube-VIS masks given as RLEs (pycocotools' run-length encoding).

pycocotools trusts the run lengths: a malformed RLE hangs it or makes it read or write out of
bounds. Every RLE is therefore checked here before pycocotools sees it, without decoding a mask to
pixels:

* uncompressed RLEs (``counts`` a list, the YouTube-VIS ground truth) are read into one uint32
  array and summed with numpy, all at once;
* compressed strings: their characters and termination (numpy, on all strings at once), then
  whether their runs cover the frame exactly, as the area of the mask plus the area of its
  complement (two ``pycocotools.mask.area`` passes, which also give the areas; strings of at most
  three run lengths, e.g. empty masks, are summed with numpy). The first three run lengths are
  decoded and range-checked; later ones are checked through those sums.

A failing mask is reported through a ``fail(index, problem)`` callback, so that the caller names
the file, the entry and the frame.
"""
import array
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

from .loading import YTVISFormatError, is_int, is_real

_RLE_FIRST_CHAR, _RLE_LAST_CHAR = 48, 111  # pycocotools: 6 bits per char
_RLE_MORE_BIT = 0x20  # "another 5-bit chunk follows"
_RLE_SIGN_BIT = 0x10  # set in the last chunk of a negative number
_RLE_MAX_CHUNKS = 7  # a run length < 2**32 needs at most 7 chunks
# pycocotools 2.0.x area() fails on longer lists with numpy 2 (it builds a
# uint8 array from the list length).
_AREA_CALL_LIMIT = 255
MAX_CANVAS_PIXELS = 2**32  # pycocotools run lengths and areas are uint32
_UINT32_CODE = next(code for code in 'IL' if array.array(code).itemsize == 4)


def decode_leading_counts(chars: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
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




def area_of(rles: List[dict]) -> np.ndarray:
    """int64 (n, ) ``pycocotools.mask.area`` of many RLEs."""
    areas = np.empty(len(rles), np.int64)
    for start in range(0, len(rles), _AREA_CALL_LIMIT):
        stop = start + _AREA_CALL_LIMIT
        areas[start:stop] = mask_utils.area(rles[start:stop])
    return areas


def polygons_to_string(polygons: list, height: int, width: int, where: str) -> bytes:
    """Rasterise a polygon segmentation as ytvoseval does (YTVIS.annToRLE)."""
    if not all(
            isinstance(p, list) and len(p) >= 4 and len(p) % 2 == 0 and all(is_real(x) for x in p)
            for p in polygons):
        raise YTVISFormatError(f'{where}: a polygon segmentation must be a list of '
                               '[x1, y1, x2, y2, ...] lists of numbers')
    try:
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    except Exception as error:
        raise YTVISFormatError(f'{where}: cannot rasterise the polygons ({error})') from None
    return rle['counts']


def uncompressed_to_string(counts: list, height: int, width: int) -> Optional[Tuple[bytes, int]]:
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
        values = merge_empty_runs(values)
    rle = mask_utils.frPyObjects({'counts': values, 'size': [height, width]}, height, width)
    return rle['counts'], int(values[1::2].sum(dtype=np.int64))




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


def check_compressed_counts(strings: List[Union[str, bytes]], rles: List[Optional[dict]],
                            known_area: Dict[int, int], frame_hw: np.ndarray,
                            fail: Callable[[int, str], None]) -> Tuple[np.ndarray, StringSource]:
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

    values, value_ends, present, overlong = decode_leading_counts(chars, starts, lengths, 3)
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
    lead, lead_stride, lead_len = encode_counts(complement_values)
    any_size = [1, 1]  # area() ignores the size
    text = memoryview(joined)  # slices without copies
    heads = range(0, len(long) * lead_stride, lead_stride)
    tails = (starts[long] + value_ends[long, 2]).tolist()
    complement = [{
        'size': any_size,
        'counts': lead[head:head + n] + text[tail:end]
    } for head, n, tail, end in zip(heads, lead_len.tolist(), tails, ends[long].tolist())]
    area[long] = area_of([rles[i] for i in long.tolist()])
    covered[long] = area[long] + area_of(complement)
    wrong = np.flatnonzero(covered[check] != frame_hw[check])
    if len(wrong):
        index = int(check[wrong[0]])
        fail(
            index, 'malformed RLE: run lengths cover '
            f'{covered[index] % MAX_CANVAS_PIXELS} pixels, expected '
            f'height*width = {frame_hw[index]}')
    return area, StringSource(joined, starts, ends, values[:, 0], value_ends[:, 0])


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


