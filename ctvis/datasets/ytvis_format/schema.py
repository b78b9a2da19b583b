"""The entries of a YouTube-VIS file that every reader checks the same way: ``videos``,
``categories`` and the keys of each annotation (the masks are checked by :mod:`.masks`)."""
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import numpy as np

from .loading import YTVISFormatError, is_int
from .rle import MAX_CANVAS_PIXELS


@dataclass
class Videos:
    """The videos of a file (their sizes and lengths), sorted by id."""
    ids: np.ndarray  # int64 (V, ) sorted
    index: Dict[int, int]  # video id -> position in ids
    height: np.ndarray  # int64 (V, )
    width: np.ndarray  # int64 (V, )
    length: np.ndarray  # int64 (V, ) frames

    @property
    def slots(self) -> np.ndarray:
        """int64 (V, ) frames that fit side by side on one IoU canvas (its
        run lengths are uint32 in pycocotools)."""
        return (MAX_CANVAS_PIXELS - 1) // (self.height * self.width)

    @classmethod
    def from_lists(cls, ids: List[int], heights: List[int], widths: List[int],
                   lengths: List[int]) -> 'Videos':
        """Videos from checked, distinct ids and their sizes and lengths (any order)."""
        order = np.argsort(ids, kind='stable')
        sorted_ids = np.asarray(ids, np.int64)[order]
        return cls(ids=sorted_ids, index={int(i): k for k, i in enumerate(sorted_ids)},
                   height=np.asarray(heights, np.int64)[order],
                   width=np.asarray(widths, np.int64)[order],
                   length=np.asarray(lengths, np.int64)[order])


def parse_videos(gt: dict, name: str) -> Videos:
    """Check the ``videos`` of a YouTube-VIS dict (``name``, its file, names it in errors): unique
    integer ids, positive sizes, a positive ``length`` or a ``file_names`` list (both: they
    agree)."""
    videos = gt.get('videos')
    if not isinstance(videos, list):
        raise YTVISFormatError(f"{name}: needs a 'videos' list")
    ids, heights, widths, lengths = [], [], [], []
    for index, video in enumerate(videos):
        where = f'{name}: videos[{index}]'
        if not isinstance(video, dict):
            raise YTVISFormatError(f'{where}: must be a dict')
        video_id, height, width = (video.get('id'), video.get('height'), video.get('width'))
        if not is_int(video_id):
            raise YTVISFormatError(f"{where}: 'id' must be an integer (64-bit), got "
                                   f'{video_id!r}')
        for key, value in (('height', height), ('width', width)):
            if not is_int(value) or value <= 0:
                raise YTVISFormatError(f"{where} (id {video_id}): '{key}' must be a positive "
                                       f'integer, got {value!r}')
        if height * width >= MAX_CANVAS_PIXELS:
            raise YTVISFormatError(f'{where} (id {video_id}): frames of {height}x{width} are too '
                                   'large for this evaluator')
        length = video.get('length')
        file_names = video.get('file_names')
        if file_names == []:
            raise YTVISFormatError(f"{where} (id {video_id}): has no frames ('file_names' is "
                                   'empty)')
        if length is None and isinstance(file_names, list):
            length = len(file_names)
        if not is_int(length) or length <= 0:
            raise YTVISFormatError(f"{where} (id {video_id}): needs a positive 'length' or a "
                                   "'file_names' list")
        if isinstance(file_names, list) and len(file_names) != length:
            raise YTVISFormatError(f"{where} (id {video_id}): 'length' {length} but "
                                   f'{len(file_names)} file_names')
        ids.append(int(video_id))
        heights.append(height)
        widths.append(width)
        lengths.append(length)
    check_unique_ids(ids, name, 'video')
    return Videos.from_lists(ids, heights, widths, lengths)


def parse_categories(gt: dict, name: str) -> np.ndarray:
    """int64 (K, ) the sorted ``categories`` ids of a YouTube-VIS dict: a non-empty list with
    unique integer ids."""
    categories = gt.get('categories')
    if not isinstance(categories, list) or not categories:
        raise YTVISFormatError(f"{name}: needs a non-empty 'categories' list")
    ids = []
    for index, category in enumerate(categories):
        if not isinstance(category, dict) or not is_int(category.get('id')):
            raise YTVISFormatError(f"{name}: categories[{index}] needs an integer (64-bit) "
                                   "'id'")
        ids.append(int(category['id']))
    check_unique_ids(ids, name, 'category')
    return np.asarray(sorted(ids), np.int64)




def check_unique_ids(ids: List[int], name: str, what: str) -> None:
    """Raise naming the (first ten) ids that ``ids`` holds more than once."""
    duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
    if duplicates:
        raise YTVISFormatError(f'{name}: duplicate {what} ids {duplicates[:10]}')


def check_annotation(annotation: Any, index: int, name: str, videos: Videos,
                     category_index: Dict[int, int]) -> Tuple[int, int, bool]:
    """Check the keys of ``annotations[index]`` that every reader needs: an integer ``id``, a
    ``video_id`` of ``videos``, a ``category_id`` of ``category_index`` (category id -> its
    position in the sorted ids) and ``iscrowd`` 0 or 1 (default 0).

    Returns:
        tuple: the video's position in ``videos``, the category's position and whether the
        annotation is a crowd.
    """
    if not isinstance(annotation, dict) or not is_int(annotation.get('id')):
        raise YTVISFormatError(f"{name}: annotations[{index}] must be a dict with an integer "
                               f"(64-bit) 'id', got {str(annotation)[:200]}")
    where = f"{name}: annotations[{index}] (id {annotation['id']})"
    video_id, category_id = annotation.get('video_id'), annotation.get('category_id')
    video = videos.index.get(int(video_id)) if is_int(video_id) else None
    if video is None:
        raise YTVISFormatError(f'{where}: unknown video_id {video_id!r}')
    category = category_index.get(int(category_id)) if is_int(category_id) else None
    if category is None:
        raise YTVISFormatError(f'{where}: category_id {category_id!r} is not in '
                               f"'categories' {sorted(category_index)}")
    iscrowd = annotation.get('iscrowd', 0)
    if iscrowd not in (0, 1):
        raise YTVISFormatError(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
    return video, category, bool(iscrowd)
