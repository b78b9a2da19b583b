"""YouTube-VIS results (``[{video_id, category_id, score, segmentations}]``, one RLE or None per
frame), parsed and checked against the ground truth."""
import math
from typing import Any

import numpy as np

from .ground_truth import GroundTruth
from .loading import YTVISFormatError, is_int, is_real
from .masks import MaskCollector, Tracks, entry_namer

def parse_results(results: Any, name: str, gt: GroundTruth) -> Tracks:
    """Check a results list against the ground truth and collect its masks.
    """
    if not isinstance(results, list):
        raise YTVISFormatError(f'{name}: results must be a list of {{video_id, category_id, '
                               f'score, segmentations}} entries, got {type(results).__name__}')
    videos, category_ids = gt.videos, gt.category_ids
    category_index = {int(c): k for k, c in enumerate(category_ids)}

    describe = entry_namer(name, 'results', results, 'video_id')
    collector = MaskCollector(videos)
    # Per entry: video and category positions, score.
    video, category = np.zeros((2, len(results)), np.int64)
    score = np.zeros(len(results), np.float64)
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
        video_position = (videos.index.get(int(video_id)) if is_int(video_id) else None)
        if video_position is None:
            raise YTVISFormatError(f'{describe(index, -1)}: video_id {video_id!r} is not a '
                                   'video of the ground truth')
        category_position = (category_index.get(int(category_id)) if is_int(category_id) else None)
        if category_position is None:
            raise YTVISFormatError(f'{describe(index, -1)}: category_id {category_id!r} is not '
                                   'one of the ground-truth categories '
                                   f'{category_ids.tolist()}')
        if not is_real(entry_score) or not math.isfinite(entry_score):
            raise YTVISFormatError(f'{describe(index, -1)}: score must be a finite number, got '
                                   f'{entry_score!r}')
        collector.add_track(index, video_position, entry['segmentations'], False, describe)
        video[index], category[index] = video_position, category_position
        score[index] = entry_score
    return Tracks(video, category, score, collector.build(len(results), describe))
