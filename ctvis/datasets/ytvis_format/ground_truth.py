"""YouTube-VIS / OVIS ground truth, parsed and checked for the evaluator.

The raw JSON (``videos``, ``annotations`` with per-frame ``segmentations`` and ``areas``,
``categories``) becomes arrays (:class:`GroundTruth`); every malformed entry raises
:class:`~.loading.YTVISFormatError` naming the file, the annotation (and frame) and the problem.
"""
import logging
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from mmengine.logging import print_log

from .loading import YTVISFormatError, is_real
from .masks import MaskCollector, Tracks, entry_namer
from .schema import Videos, check_annotation, check_unique_ids, parse_categories, parse_videos

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
    videos = parse_videos(gt, name)
    category_ids = parse_categories(gt, name)
    category_index = {int(c): k for k, c in enumerate(category_ids)}
    annotations = gt.get('annotations')
    if annotations is None:
        return GroundTruth(videos, category_ids, None, np.zeros(0, np.int64), np.zeros(0, bool))
    if not isinstance(annotations, list):
        raise YTVISFormatError(f"{name}: 'annotations' must be a list")

    describe = entry_namer(name, 'annotations', annotations, 'id')
    collector = MaskCollector(videos)
    num = len(annotations)
    video = np.zeros(num, np.int64)
    category = np.zeros(num, np.int64)
    average_area = np.zeros(num, np.float64)
    annotation_ids = np.zeros(num, np.int64)
    crowd = np.zeros(num, bool)
    for index, annotation in enumerate(annotations):
        video_position, category_position, crowd[index] = check_annotation(
            annotation, index, name, videos, category_index)
        areas = annotation.get('areas')
        length = int(videos.length[video_position])
        if (not isinstance(areas, list) or len(areas) != length or not all(
                a is None or (type(a) in (int, float) or is_real(a)) and 0 <= a < math.inf
                for a in areas)):
            raise YTVISFormatError(f"{describe(index, -1)}: 'areas' must list one finite "
                                   f'non-negative number or null per frame ({length} frames)')
        collector.add_track(index, video_position, annotation.get('segmentations'), True, describe)
        # ytvoseval: the mean of the truthy per-frame areas, else 0.
        nonzero_areas = [a for a in areas if a]
        average_area[index] = (np.array(nonzero_areas).mean() if nonzero_areas else 0)
        video[index], category[index] = video_position, category_position
        annotation_ids[index] = annotation['id']
    check_unique_ids(annotation_ids.tolist(), name, 'annotation')
    if (annotation_ids == 0).any():
        print_log(f'{describe(int(np.argmax(annotation_ids == 0)), -1)}: ytvoseval, and so '
                  'this evaluator, which reproduces it, never counts a match with annotation '
                  'id 0 as a true positive, so AP is lower than the predictions '
                  'deserve; number the annotations from 1', logger='current',
                  level=logging.WARNING)
    masks = collector.build(num, describe)
    # Converted once: every evaluation against this ground truth uses them.
    masks.build_canvases(np.flatnonzero(masks.area > 0))
    return GroundTruth(videos, category_ids, Tracks(video, category, average_area, masks),
                       annotation_ids, crowd)


