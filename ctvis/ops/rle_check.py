"""The exact check of pycocotools' compressed RLE counts strings, many strings in one call.

pycocotools trusts the run lengths of an RLE: it writes out of bounds decoding a mask whose runs
cover more than its frame and its IoU walk loops (almost) forever over a negative one. The check
decodes every string as pycocotools' ``rleFrString`` does (5-bit chunks, the continuation bit
0x20, the sign bit 0x10, run i > 2 stored as the difference to run i - 2) and accepts it only when
pycocotools reads the same runs, every run is >= 0 and they cover ``height * width`` pixels
exactly (ctvis/ops/csrc/rle_check.cpp states the rules and why).

It runs in ctvis' C++ extension, ``ctvis.ops._C.check_rle_runs`` (about 4 ns a character, the
speed of pycocotools' own decoding; docs/benchmarks.md). A plain CPython function rather than a
torch op: it reads bytes, not tensors, needs no autograd, tracing or device dispatch, and the
buffer protocol gives it the strings and numpy's arrays without a copy. Where the extension is
not built, or is an older build without the function, :func:`check_rle_strings` warns once and
runs :func:`check_rle_strings_numpy`, the same rules in numpy: the same results, about 20 times
slower.
"""
import warnings
from typing import NamedTuple, Union

import numpy as np

# The problem codes of csrc/rle_check.h; at one character the lower code is found first.
OK = 0
EMPTY = 1  # no character
BAD_CHARACTER = 2  # where: offset in the string, value: the character code
TOO_MANY_CHUNKS = 3  # where: the run; an 8th 5-bit chunk
TRUNCATED = 4  # where: the run; the string ends inside a number
WIDE_NEGATIVE = 5  # where: the run; a negative number of 7 chunks, misread by pycocotools
NEGATIVE_RUN = 6  # where: the run, value: its length
BEYOND_FRAME = 7  # where: the run, value: runs 0..where cover more than the frame
SHORT = 8  # where: the number of runs, value: their total, less than the frame

# The format (pycocotools' rleToString / rleFrString).
FIRST_CHAR, LAST_CHAR = 48, 111  # a character: 48 + (a 5-bit chunk | MORE_BIT)
MORE_BIT = 0x20  # another chunk of the same number follows
SIGN_BIT = 0x10  # in the last chunk: the number is negative
MAX_CHUNKS = 7  # chunks of a number: enough for any uint32 run length or difference
_BATCH_CHARS = 1 << 20  # characters per numpy batch of the fallback (bounds its memory)

try:
    from . import _C
    _check_rle_strings = getattr(_C, 'check_rle_runs', None)  # the binding with 7 fields
    _missing = None if _check_rle_strings else 'an older build without check_rle_runs'
except ImportError as error:  # not built: ``pip install -e .`` builds it
    _check_rle_strings, _missing = None, str(error)
_warned_fallback = False

Bytes = Union[bytes, bytearray, memoryview, np.ndarray]


class RLECheck(NamedTuple):
    """What :func:`check_rle_strings` found, int64 (n, ) each.

    ``problem`` is :data:`OK` or a problem code (see the constants), ``where`` and ``value``
    locate it; for a string that passes, ``area`` is its number of foreground pixels (the sum of
    the odd runs), ``first`` its first run length, ``first_end`` the offset after it and
    ``empty_runs`` how many runs after the first have length 0 (pycocotools' IoU walk over two
    RLEs stops where both reach one: such strings are re-encoded before it sees them).
    """
    problem: np.ndarray
    where: np.ndarray
    value: np.ndarray
    area: np.ndarray
    first: np.ndarray
    first_end: np.ndarray
    empty_runs: np.ndarray


def rle_check_compiled() -> bool:
    """Whether :func:`check_rle_strings` runs the C++ check (else its numpy fallback)."""
    return _check_rle_strings is not None


def check_rle_strings(chars: Bytes, ends: np.ndarray, pixels: np.ndarray) -> RLECheck:
    """Check compressed RLE counts strings, given back to back, against their frames.

    Args:
        chars: the strings back to back, one byte per character (bytes or uint8 array).
        ends (np.ndarray): int (n, ) where each string ends in ``chars`` (non-decreasing; string
            i starts where string i - 1 ends, the first at 0).
        pixels (np.ndarray): int (n, ) the pixels of each string's frame, ``height * width``.

    Returns:
        RLECheck: the problem of each string (the first met while decoding it) or its area.
    """
    chars = _as_chars(chars)
    ends = np.ascontiguousarray(ends, np.int64)
    pixels = np.ascontiguousarray(pixels, np.int64)
    if _check_rle_strings is None:
        _warn_fallback_once()
        return check_rle_strings_numpy(chars, ends, pixels)
    out = np.empty((len(RLECheck._fields), len(ends)), np.int64)
    _check_rle_strings(chars, ends, pixels, out)
    return RLECheck(*out)


def _as_chars(chars: Bytes) -> Bytes:
    """Bytes as they are; an array as contiguous uint8 (another dtype is refused: the compiled
    check read its raw bytes, the numpy one its values)."""
    if not isinstance(chars, np.ndarray):
        return chars
    if chars.dtype != np.uint8:
        raise TypeError(f'check_rle_strings: chars must be bytes or a uint8 array, got a '
                        f'{chars.dtype} array')
    return np.ascontiguousarray(chars)


def _warn_fallback_once() -> None:
    global _warned_fallback
    if not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f'ctvis.ops._C has no RLE check ({_missing}): compressed RLE strings are checked by '
            'the slower numpy path (same results); rebuild with '
            '`pip install --no-deps --no-build-isolation -e .`', RuntimeWarning, stacklevel=3)


def check_rle_strings_numpy(chars: Bytes, ends: np.ndarray, pixels: np.ndarray) -> RLECheck:
    """:func:`check_rle_strings` in numpy, batch by batch of about 1 M characters."""
    chars = _as_chars(chars)
    chars = np.frombuffer(chars, np.uint8) if not isinstance(chars, np.ndarray) else chars
    ends = np.asarray(ends, np.int64)
    pixels = np.asarray(pixels, np.int64)
    n = len(ends)
    if pixels.shape != ends.shape:
        raise ValueError('check_rle_strings: ends and pixels must have one length')
    if n and (np.any(np.diff(ends) < 0) or ends[0] < 0 or ends[-1] > len(chars)):
        raise ValueError('check_rle_strings: ends must be non-decreasing offsets into chars '
                         f'({len(chars)} characters)')
    if (pixels < 0).any():
        raise ValueError('check_rle_strings: pixels must not be negative')
    out = np.zeros((len(RLECheck._fields), n), np.int64)
    begin = 0
    while begin < n:
        start = int(ends[begin - 1]) if begin else 0
        stop = max(int(np.searchsorted(ends, start + _BATCH_CHARS, side='right')), begin + 1)
        out[:, begin:stop] = _check_batch(chars[start:int(ends[stop - 1])],
                                          ends[begin:stop] - start, pixels[begin:stop])
        begin = stop
    return RLECheck(*out)


def _check_batch(chars: np.ndarray, ends: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """int64 (7, n) the fields of :class:`RLECheck` for strings back to back in ``chars``.

    Every number of every string is decoded at once. Each problem is an event at the offset of
    the character where the C++ loop finds it, and a string reports its first event (by offset,
    then by problem code: the order of the checks at one character). Whatever follows a string's
    first event (numbers read past a bad character, runs past a negative one) may be garbage and
    is never reported; int64 sums wrap, so differences of cumulative sums stay exact.
    """
    n = len(ends)
    out = np.zeros((len(RLECheck._fields), n), np.int64)
    lengths = np.diff(ends, prepend=0)
    starts = ends - lengths
    out[0, lengths == 0] = EMPTY
    if not len(chars):
        return out
    string_of_char = np.repeat(np.arange(n), lengths)
    offset = np.arange(len(chars)) - starts[string_of_char]  # in its string
    bad = (chars < FIRST_CHAR) | (chars > LAST_CHAR)
    code = (chars - FIRST_CHAR) & 0x3f
    more = (code & MORE_BIT) != 0
    # A number ends without the continuation bit, or at the end of its string (truncated).
    ends_number = ~more
    ends_number[ends[lengths > 0] - 1] = True
    number_end = np.flatnonzero(ends_number)
    number_start = np.concatenate([[0], number_end[:-1] + 1])
    chunks = number_end - number_start + 1
    chunk = np.arange(len(chars)) - np.repeat(number_start, chunks)
    # Chunks past the 7th are a problem found before the number ends: leave them out.
    contribution = np.where(chunk < MAX_CHUNKS,
                            (code & 0x1f).astype(np.int64) << (5 * np.minimum(chunk, 6)), 0)
    number = np.add.reduceat(contribution, number_start)
    negative = (code[number_end] & SIGN_BIT) != 0
    number[negative] -= np.left_shift(1, 5 * np.minimum(chunks[negative], MAX_CHUNKS))

    string = string_of_char[number_end]
    first_number = np.searchsorted(number_end, starts)  # of each string that has characters
    index = np.arange(len(number_end)) - first_number[string]  # run index in its string
    first_run = index == 0
    # Run i > 2 is number i plus run i - 2: a cumulative sum along each chain of one parity.
    # Sums over the even and over the odd positions of all numbers, each string's run 0 zeroed
    # (it is in no chain), minus the sum before the chain: run 2k + p = sum[g] - sum[s - 2], with
    # s the position of the string's run p (p = 0 or 1; run 0 counts as 0 in the even chain).
    chained = np.where(first_run, 0, number)
    prefix = np.empty_like(chained)
    prefix[0::2] = np.cumsum(chained[0::2])
    prefix[1::2] = np.cumsum(chained[1::2])
    before = first_number[string] + (index & 1) - 2
    run = prefix - np.where(before >= 0, prefix[np.maximum(before, 0)], 0)
    run[first_run] = number[first_run]
    total = np.cumsum(run)  # covered by runs 0..i of the string
    first_of_string = np.flatnonzero(first_run)
    total -= np.repeat(total[first_of_string] - run[first_of_string],
                       np.diff(np.append(first_of_string, len(run))))
    last_of_string = np.append(first_of_string[1:] - 1, len(run) - 1)

    # Events: (string, offset, problem, where, value), the lower problem code first at one offset.
    end_offset = offset[number_end]
    too_long = chunks > MAX_CHUNKS  # found at its 8th chunk
    eighth_chunk = np.minimum(number_start + MAX_CHUNKS, len(chars) - 1)
    at_end = (string, end_offset, index)
    short = total[last_of_string] != pixels[string[last_of_string]]
    events = [
        (bad, (string_of_char, offset, offset), BAD_CHARACTER, chars.astype(np.int64)),
        (too_long, (string, offset[eighth_chunk], index), TOO_MANY_CHUNKS, None),
        (more[number_end], at_end, TRUNCATED, None),
        (negative & (chunks == MAX_CHUNKS), at_end, WIDE_NEGATIVE, None),
        (run < 0, at_end, NEGATIVE_RUN, run),
        (total > pixels[string], at_end, BEYOND_FRAME, total),
        (short, (string[last_of_string], lengths[string[last_of_string]],
                 index[last_of_string] + 1), SHORT, total[last_of_string]),
    ]
    strings, keys, where, value = [], [], [], []
    for found, (event_string, event_offset, event_where), problem, event_value in events:
        strings.append(event_string[found])
        keys.append(16 * event_offset[found] + problem)
        where.append(event_where[found])
        value.append(np.zeros(found.sum(), np.int64) if event_value is None else
                     event_value[found])
    strings, keys, where, value = map(np.concatenate, (strings, keys, where, value))
    order = np.lexsort((keys, strings))
    failing, first_event = np.unique(strings[order], return_index=True)
    picked = order[first_event]
    out[:3, failing] = keys[picked] % 16, where[picked], value[picked]
    fine = np.flatnonzero(lengths > 0)[out[0, lengths > 0] == OK]
    first_fine = first_number[fine]
    out[3, fine] = np.add.reduceat(np.where(index & 1, run, 0), first_of_string)[
        np.searchsorted(first_of_string, first_fine)]
    out[4, fine] = run[first_fine]
    out[5, fine] = end_offset[first_fine] + 1
    out[6, fine] = np.bincount(string[(run == 0) & ~first_run], minlength=n)[fine]
    return out
