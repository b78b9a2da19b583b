"""The frame masks of a set of tracks, checked in bulk, and their IoU canvases.

For the video IoU (:mod:`ctvis.evaluation.ytvis_eval`) a mask can be laid on a canvas of several
frames side by side (:meth:`MaskTable.build_canvases`): an RLE is column-major, so moving a mask a
whole frame to the right only changes its first run length.
"""
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, Callable, List, Optional, Tuple, Union

import numpy as np
from pycocotools import mask as mask_utils

from .loading import YTVISFormatError
from .rle import (MAX_CANVAS_PIXELS, RunSource, StringSource, check_compressed_counts,
                  check_uncompressed_counts, encode_counts, polygons_to_string,
                  uncompressed_problem, uncompressed_to_string)
from .schema import Videos

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
                 source_index: np.ndarray, strings: Optional[StringSource],
                 runs: Optional[RunSource]) -> None:
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
        distinct, which = np.unique(height * MAX_CANVAS_PIXELS + width, return_inverse=True)
        sizes = [[h, w]
                 for h, w in zip((distinct //
                                  MAX_CANVAS_PIXELS).tolist(), (distinct %
                                                                 MAX_CANVAS_PIXELS).tolist())]
        canvas_sizes = [sizes[k] for k in which.tolist()]
        from_string = self._from_string[rows]
        index = self._source_index[rows]
        canvas = self.canvas
        if from_string.any():
            # Rewrite the first run length (always stored absolute), keep the
            # rest of the string.
            source, picked = self._strings, np.flatnonzero(from_string)
            i = index[picked]
            first, stride, first_len = encode_counts((source.first[i] + shift[picked])[:, None])
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


def entry_namer(name: str, list_key: str, entries: list,
                id_key: str) -> Callable[[int, int], str]:
    """``describe(index, frame)``: how errors name entry ``index`` of the ``list_key`` list of
    file ``name`` (with its ``id_key``), and its frame unless ``frame`` is -1."""

    def describe(index: int, frame: int) -> str:
        where = f'{name}: {list_key}[{index}] ({id_key} {entries[index].get(id_key)})'
        return where if frame < 0 else f'{where}, frame {frame}'

    return describe


class MaskCollector:
    """Checks the ``segmentations`` of tracks and gathers their frame masks.

    A mask is kept as a compressed counts string (str or bytes: the caller's,
    or one encoded from a polygon or from uncompressed counts) or, for
    uncompressed RLEs, as its list of run lengths; both are checked in bulk
    by :meth:`build`.
    """

    def __init__(self, videos: Videos) -> None:
        self.videos = videos
        self.sizes = [[int(h), int(w)] for h, w in zip(videos.height, videos.width)]
        self.lengths = videos.length.tolist()
        self.strings: List[Union[str, bytes]] = []
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
                                   f'segmentations for a video of {length} frames (video id '
                                   f'{self.videos.ids[video]})')
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
                self.frame += frames
                return
            if sizes.count(size) == num and counts_types == {list}:
                self.segments.append((track_index, video, num, len(self.run_lists), False))
                self.run_lists += counts
                self.frame += frames
                return
        for frame_index in frames:
            segmentation = segmentations[frame_index]
            string = self._frame_string(segmentation, size, accept_polygons,
                                        lambda: describe(track_index, frame_index))
            if string is None:  # an empty polygon list: no mask
                continue
            self.segments.append((track_index, video, 1, len(self.strings), True))
            self.strings.append(string)
            self.frame.append(frame_index)

    @staticmethod
    def _frame_string(segmentation: Any, size: List[int], accept_polygons: bool,
                      describe: Callable[[], str]) -> Optional[Union[str, bytes]]:
        """Check one frame's segmentation. Returns its compressed counts (to be
        checked in bulk by :meth:`build`), or None for an empty polygon list.
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
                return counts
            if type(counts) is list:
                converted = uncompressed_to_string(counts, height, width)
                if converted is None:
                    raise YTVISFormatError(
                        f'{describe()}: {uncompressed_problem(counts, height * width)}')
                return converted
            raise YTVISFormatError(f"{describe()}: malformed RLE: 'counts' must be a string or a "
                                   f'list of run lengths, got {type(counts).__name__}')
        if accept_polygons and type(segmentation) is list:
            if not segmentation:  # ytvoseval treats [] as "no mask"
                return None
            return polygons_to_string(segmentation, height, width, describe())
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
            area[rows], strings = check_compressed_counts(self.strings, frame_hw[rows],
                                                          fail_at(rows))
        if self.run_lists:
            rows = np.flatnonzero(~from_string)
            area[rows], runs = check_uncompressed_counts(self.run_lists, frame_hw[rows],
                                                         fail_at(rows))
        return MaskTable(track, frame, area, num_tracks, height, width, self.videos.slots[video],
                         from_string, source_index, strings, runs)


