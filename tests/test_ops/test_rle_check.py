"""ctvis.ops.check_rle_strings, the exact check of compressed RLE strings (C++ and numpy), against a
plain Python decoder written from pycocotools' rleFrString, against pycocotools itself, and the
evaluator on the numpy fallback."""
import copy
import warnings
from typing import List, Sequence, Tuple

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from ctvis.datasets.synthetic.annotations import random_ytvis_set
from ctvis.datasets.ytvis_format import YTVISFormatError
from ctvis.evaluation.ytvis_eval import evaluate_ytvis
from ctvis.ops import rle_check
from ctvis.ops.rle_check import (BAD_CHARACTER, BEYOND_FRAME, EMPTY, NEGATIVE_RUN, OK, SHORT,
                                 TOO_MANY_CHUNKS, TRUNCATED, WIDE_NEGATIVE, check_rle_strings,
                                 check_rle_strings_numpy)

Result = Tuple[int, int, int, int, int, int]  # problem, where, value, area, first, first_end
EMPTY_RUNS = 6  # the field after them: runs of length 0 after the first


def encode_runs(runs: Sequence[int]) -> str:
    """A counts string of any run lengths, negative ones too, as pycocotools' rleToString writes
    them (run i > 2 as the difference to run i - 2)."""
    chars = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        while True:
            chunk = x & 0x1f
            x >>= 5
            more = x != -1 if chunk & 0x10 else x != 0
            chars.append(chr(48 + (chunk | (0x20 if more else 0))))
            if not more:
                break
    return ''.join(chars)


def decode_python(s: bytes, pixels: int) -> Tuple[int, ...]:
    """The specification, one character at a time: pycocotools' rleFrString and the checks."""
    if not s:
        return EMPTY, 0, 0, 0, 0, 0, 0
    runs: List[int] = []
    total = area = first = first_end = offset = 0
    while offset < len(s):
        number = chunks = 0
        while True:
            character = s[offset]
            if not 48 <= character <= 111:
                return BAD_CHARACTER, offset, character, 0, 0, 0, 0
            if chunks == 7:
                return TOO_MANY_CHUNKS, len(runs), 0, 0, 0, 0, 0
            code = character - 48
            number |= (code & 0x1f) << (5 * chunks)
            offset += 1
            chunks += 1
            if not code & 0x20:
                break
            if offset == len(s):
                return TRUNCATED, len(runs), 0, 0, 0, 0, 0
        if code & 0x10:
            if chunks == 7:
                return WIDE_NEGATIVE, len(runs), 0, 0, 0, 0, 0
            number -= 1 << (5 * chunks)
        index = len(runs)
        run = number + runs[index - 2] if index > 2 else number
        if run < 0:
            return NEGATIVE_RUN, index, run, 0, 0, 0, 0
        total += run
        if total > pixels:
            return BEYOND_FRAME, index, total, 0, 0, 0, 0
        area += run if index % 2 else 0
        if index == 0:
            first, first_end = run, offset
        runs.append(run)
    if total != pixels:
        return SHORT, len(runs), total, 0, 0, 0, 0
    return OK, 0, 0, area, first, first_end, sum(run == 0 for run in runs[1:])


def check_all(strings: Sequence[bytes], pixels: Sequence[int]) -> List[np.ndarray]:
    """int64 (n, 7) results of the C++ check, the numpy check and the Python decoder."""
    assert rle_check.rle_check_compiled(), 'ctvis.ops._C is not built (pip install -e .)'
    strings = [s.encode() if isinstance(s, str) else s for s in strings]
    chars, ends = b''.join(strings), np.cumsum([len(s) for s in strings], dtype=np.int64)
    pixels = np.asarray(pixels, np.int64)
    return [np.array(check_rle_strings(chars, ends, pixels)).T,
            np.array(check_rle_strings_numpy(chars, ends, pixels)).T,
            np.array([decode_python(s, p) for s, p in zip(strings, pixels.tolist())],
                     np.int64).reshape(-1, 7)]


def check_one(s, pixels: int, empty_runs: int = 0) -> Result:
    """The first six fields of one string's result, the same in all three implementations, whose
    count of empty runs after the first is ``empty_runs``."""
    compiled, numpy_path, python = check_all([s], [pixels])
    np.testing.assert_array_equal(compiled, python)
    np.testing.assert_array_equal(numpy_path, python)
    assert python[0, EMPTY_RUNS] == empty_runs
    return tuple(python[0, :EMPTY_RUNS].tolist())


def random_masks(rng: np.random.RandomState, num: int) -> Tuple[List[bytes], List[np.ndarray]]:
    masks = []
    for i in range(num):
        h, w = rng.randint(1, 40, size=2)
        mask = rng.rand(h, w) < rng.rand()
        if i % 7 == 0:
            mask[:] = i % 2  # all background, all foreground
        if i % 11 == 0:  # long runs: numbers of several characters
            mask = np.zeros((h * 50, w * 50), bool)
            mask[h:h * 40, w:w * 30] = True
        masks.append(np.asfortranarray(mask.astype(np.uint8)))
    return [mask_utils.encode(m)['counts'] for m in masks], masks


def test_crafted_negative_fourth_run():
    """':55HN' on a 4x5 frame is runs 10, 5, 5, -3, 3: it sums to 20 and pycocotools' area is 2
    (uint32 arithmetic), but decoding it writes out of bounds. Only decoding every run sees it."""
    assert encode_runs([10, 5, 5, -3, 3]) == ':55HN'
    assert mask_utils.area({'size': [4, 5], 'counts': b':55HN'}) == 2
    assert check_one(':55HN', 20) == (NEGATIVE_RUN, 3, -3, 0, 0, 0)


@pytest.mark.parametrize('position', [0, 1, 2, 3, 4, 10])
def test_negative_run_anywhere(position):
    runs = [3] * 12
    runs[position] = -1
    runs[-1] += 1 + 3  # still 36 pixels in all
    assert sum(runs) == 36
    assert check_one(encode_runs(runs), 36)[:3] == (NEGATIVE_RUN, position, -1)
    runs[position] = 0  # empty runs are fine anywhere, the first one too (but counted after it)
    runs[-1] -= 1
    problem, _, _, area, first, _ = check_one(encode_runs(runs), 36, empty_runs=position > 0)
    assert (problem, area, first) == (OK, sum(runs[1::2]), runs[0])


@pytest.mark.parametrize('position', [0, 1, 2, 3, 5])
def test_oversized_run(position):
    """A run longer than the frame is found at that run (the running total), before any later
    problem, here a negative run that brings the total back to the frame."""
    runs = [2] * position + [40, -38] + [2] * (7 - position)
    assert sum(runs) == 16
    assert check_one(encode_runs(runs), 16)[:3] == (BEYOND_FRAME, position, 2 * position + 40)


def test_totals_at_the_frame_size():
    """The runs must cover the frame exactly: one pixel more is found at the last run, one less
    at the end; a run of the whole frame is fine."""
    s = encode_runs([7, 5, 8])
    assert check_one(s, 20) == (OK, 0, 0, 5, 7, 1)
    assert check_one(s, 19) == (BEYOND_FRAME, 2, 20, 0, 0, 0)
    assert check_one(s, 21) == (SHORT, 3, 20, 0, 0, 0)
    assert check_one(encode_runs([20]), 20) == (OK, 0, 0, 0, 20, 2)  # 20 takes 2 chunks
    assert check_one(encode_runs([0, 20]), 20) == (OK, 0, 0, 20, 0, 1)
    assert check_one(encode_runs([21]), 20) == (BEYOND_FRAME, 0, 21, 0, 0, 0)
    assert check_one(encode_runs([20, 0, 0]), 20, empty_runs=2) == (OK, 0, 0, 0, 20, 2)
    assert check_one(encode_runs([20, 0, 1]), 20) == (BEYOND_FRAME, 2, 21, 0, 0, 0)


def test_empty_string_is_rejected():
    """As before: an empty counts string is malformed, even for a frame without pixels."""
    assert check_one(b'', 20)[0] == EMPTY
    assert check_one(b'', 0)[0] == EMPTY
    assert check_one(b'0', 0) == (OK, 0, 0, 0, 0, 1)


def test_characters_and_termination():
    # '0' (48) and 'o' (111) are the first and last characters; '/' and 'p' are just outside.
    assert encode_runs([0, 31]) == '0o0'  # 'o' = 31 and the continuation bit, then 0
    assert check_one('0o0', 31) == (OK, 0, 0, 31, 0, 1)
    for bad in (' ', '/', 'p', '\x00', '\xff'):
        s = encode_runs([1, 2]).encode() + bad.encode('latin-1')
        assert check_one(s, 3)[:3] == (BAD_CHARACTER, 2, ord(bad))
    assert check_one('3o', 3)[:2] == (TRUNCATED, 1)  # 'o' has the continuation bit
    assert check_one('o', 3)[:2] == (TRUNCATED, 0)


def test_chunk_count():
    """A number has at most 7 chunks (35 bits cover any uint32 and any difference of two); an 8th
    is rejected when it is read, before any later problem."""
    seven = 'P' * 6 + '0'  # 0 in 7 chunks (non-canonical, fine)
    assert check_one(seven + '4', 4) == (OK, 0, 0, 4, 0, 7)
    assert check_one('P' * 7 + '0' + '4', 4)[:2] == (TOO_MANY_CHUNKS, 0)
    assert check_one('4' + 'P' * 8 + ' ', 4)[:2] == (TOO_MANY_CHUNKS, 1)  # before the ' '
    # a bad 8th character is a bad character first
    assert check_one('4' + 'P' * 7 + ' ', 4)[:3] == (BAD_CHARACTER, 8, ord(' '))
    assert check_one('4' + 'P' * 8, 4)[:2] == (TOO_MANY_CHUNKS, 1)  # before it is truncated
    assert check_one('4' + 'P' * 7, 4)[:2] == (TRUNCATED, 1)


def test_numbers_of_seven_chunks_against_pycocotools():
    """pycocotools computes a number in C ``int``: a non-negative one of 7 chunks keeps its low 32
    bits (all a uint32 run keeps), a negative one is sign-extended with ``-1 << 35`` (undefined)
    and comes out as another number, so the check rejects it. Frames of 3 * 2**30 pixels: only
    the run lengths are read, no mask is allocated."""
    pixels = 3 * 2**30
    size = [1, pixels]
    big = [2**31 + 5, 2**30 - 5]  # run 0 needs 7 chunks, its last one is 2: bits 31..
    s = encode_runs(big)
    assert check_one(s, pixels) == (OK, 0, 0, 2**30 - 5, 2**31 + 5, 7)
    assert mask_utils.area({'size': size, 'counts': s.encode()}) == 2**30 - 5
    runs = [0, 2**30 + 5, 3, 1, pixels - 2**30 - 9]  # run 3 is stored as -(2**30 + 4)
    s = encode_runs(runs)
    assert s.encode() == mask_utils.frPyObjects({'size': size, 'counts': runs}, *size)['counts']
    assert mask_utils.area({'size': size, 'counts': s.encode()}) != 2**30 + 6
    assert check_one(s, pixels)[:2] == (WIDE_NEGATIVE, 3)
    # 6 chunks hold differences down to -2**29, which pycocotools reads right.
    runs = [0, 2**29, 3, 0, pixels - 2**29 - 3]
    assert check_one(encode_runs(runs), pixels, empty_runs=1)[:4] == (OK, 0, 0, 2**29)
    assert mask_utils.area({'size': size, 'counts': encode_runs(runs).encode()}) == 2**29


def test_valid_masks_are_accepted_with_pycocotools_area():
    strings, masks = random_masks(np.random.RandomState(0), 400)
    compiled, numpy_path, python = check_all(strings, [m.size for m in masks])
    np.testing.assert_array_equal(compiled, python)
    np.testing.assert_array_equal(numpy_path, python)
    assert (python[:, 0] == OK).all()
    areas = [int(mask_utils.area({'size': list(m.shape), 'counts': s}))
             for s, m in zip(strings, masks)]
    assert python[:, 3].tolist() == areas == [int(m.sum()) for m in masks]
    assert not python[:, 6].any()  # pycocotools' encode writes no empty run after the first
    for s, m, (first, first_end) in zip(strings, masks, python[:, 4:6].tolist()):
        column = m.ravel(order='F')  # RLEs are column-major
        assert first == (int(np.argmax(column)) if column.any() else len(column))
        assert first_end == len(encode_runs([first]))


def mutated(rng: np.random.RandomState, s: bytes) -> bytes:
    """``s`` broken (or not) in one random way."""
    s = bytearray(s)
    kind = rng.randint(6)
    if kind == 0 and s:
        s[rng.randint(len(s))] = rng.randint(40, 120)
    elif kind == 1 and s:
        del s[rng.randint(len(s))]
    elif kind == 2:
        s.insert(rng.randint(len(s) + 1), rng.randint(48, 112))
    elif kind == 3:
        s = s[:rng.randint(len(s) + 1)]
    elif kind == 4:  # any characters of the alphabet
        s = bytearray(rng.randint(48, 112, size=rng.randint(0, 16)).astype(np.uint8).tobytes())
    elif kind == 5 and s:  # big numbers
        s[rng.randint(len(s))] = rng.choice([ord('o'), ord('_'), ord('O')])
    return bytes(s)


def test_implementations_agree_on_random_strings(monkeypatch):
    """Thousands of valid and mutated strings, some on frames one pixel off: the C++ check, its
    numpy fallback (also in tiny batches) and the Python decoder give the same results."""
    rng = np.random.RandomState(1)
    strings, masks = random_masks(rng, 3000)
    pixels = [m.size + (rng.randint(-1, 2) if rng.rand() < 0.2 else 0) for m in masks]
    strings = [mutated(rng, s) if rng.rand() < 0.7 else s for s in strings]
    compiled, numpy_path, python = check_all(strings, pixels)
    np.testing.assert_array_equal(compiled, python)
    np.testing.assert_array_equal(numpy_path, python)
    found = set(python[:, 0].tolist())
    assert found >= {OK, EMPTY, BAD_CHARACTER, TRUNCATED, NEGATIVE_RUN, BEYOND_FRAME, SHORT}, found
    monkeypatch.setattr(rle_check, '_BATCH_CHARS', 50)
    chars, ends = b''.join(strings), np.cumsum([len(s) for s in strings])
    batched = np.array(check_rle_strings_numpy(chars, ends, pixels)).T
    np.testing.assert_array_equal(batched, python)


def test_fallback_warns_once_and_agrees(monkeypatch):
    strings, masks = random_masks(np.random.RandomState(2), 50)
    strings[3] = b':55HN'
    chars, ends = b''.join(strings), np.cumsum([len(s) for s in strings])
    pixels = [m.size for m in masks]
    compiled = np.array(check_rle_strings(chars, ends, pixels))
    monkeypatch.setattr(rle_check, '_check_rle_strings', None)
    monkeypatch.setattr(rle_check, '_missing', 'not built here')
    monkeypatch.setattr(rle_check, '_warned_fallback', False)
    assert not rle_check.rle_check_compiled()
    with pytest.warns(RuntimeWarning, match='not built here.*numpy path'):
        fallback = np.array(check_rle_strings(chars, ends, pixels))
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        check_rle_strings(chars, ends, pixels)
    np.testing.assert_array_equal(fallback, compiled)
    assert fallback[0, 3] == NEGATIVE_RUN


@pytest.mark.parametrize('check', [check_rle_strings, check_rle_strings_numpy])
def test_bad_arguments(check):
    with pytest.raises(ValueError, match='non-decreasing'):
        check(b'0000', [3, 2], [1, 1])
    with pytest.raises(ValueError, match='non-decreasing'):
        check(b'0000', [5], [1])
    with pytest.raises(ValueError, match='negative'):
        check(b'0000', [4], [-1])
    assert np.array(check(b'', [], [])).shape == (7, 0)


def test_evaluator_on_the_numpy_fallback(monkeypatch):
    """Without the compiled check the evaluator gets the same numbers (uncompressed, compressed
    and polygon masks) and still rejects the crafted string, naming the entry."""
    gt, results = random_ytvis_set()
    compiled = evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(results))
    monkeypatch.setattr(rle_check, '_check_rle_strings', None)
    monkeypatch.setattr(rle_check, '_warned_fallback', True)  # the warning is tested above
    assert evaluate_ytvis(copy.deepcopy(gt), copy.deepcopy(results)) == compiled
    entry = next(i for i, r in enumerate(results) if any(r['segmentations']))
    frame = next(f for f, s in enumerate(results[entry]['segmentations']) if s)
    size = results[entry]['segmentations'][frame]['size']
    first = mask_utils.frPyObjects(dict(size=size, counts=[size[0] * size[1] - 10]), *size)
    results[entry]['segmentations'][frame] = dict(size=size,
                                                  counts=first['counts'].decode() + '55HN')
    with pytest.raises(YTVISFormatError, match=rf'results\[{entry}\].*frame {frame}: malformed '
                       r'RLE: a run length is negative \(run 3 is -3\)'):
        evaluate_ytvis(gt, results)


def test_chars_arrays_of_other_dtypes_are_refused_and_strided_ones_read():
    """The compiled check read an int32 array's raw bytes (bad characters), the numpy one its
    values; a strided uint8 array raised in the compiled one only."""
    from ctvis.ops.rle_check import check_rle_strings_numpy
    codes = np.frombuffer(b'52', np.uint8)  # runs 5 and 2: 7 pixels, area 2
    for check in (check_rle_strings, check_rle_strings_numpy):
        with pytest.raises(TypeError, match='chars must be bytes or a uint8 array, got a int32'):
            check(codes.astype(np.int32), np.array([2]), np.array([7]))
        strided = np.repeat(codes, 2)[::2]
        assert not strided.flags.c_contiguous
        result = check(strided, np.array([2]), np.array([7]))
        assert result.problem.tolist() == [0] and result.area.tolist() == [2]
