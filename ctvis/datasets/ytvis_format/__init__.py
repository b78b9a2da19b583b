"""The YouTube-VIS / OVIS format: the one home of its loader, schema, checks and error type.

Used by the datasets (:mod:`ctvis.datasets.ytvis`, :mod:`ctvis.datasets.pseudo_video`), the
evaluator (:mod:`ctvis.evaluation.ytvis_eval`, :mod:`ctvis.evaluation.tracking_metrics`) and the
tools. Modules:

* :mod:`.loading`: :class:`YTVISFormatError` (every malformed input raises it, naming the file,
  the entry and the problem), :class:`MissingFrameError`, the JSON loader, long-video ids;
* :mod:`.rle`: the one check of RLE masks (run before pycocotools, which trusts them);
* :mod:`.schema`: the ``videos`` and ``categories`` entries;
* :mod:`.masks`: the frame masks of a set of tracks, checked in bulk (:class:`MaskCollector`);
* :mod:`.ground_truth`, :mod:`.results`: the evaluator's inputs as arrays.
"""
from .ground_truth import GroundTruth, parse_ground_truth
from .loading import (MissingFrameError, PathOrDict, PathOrList, YTVISFormatError, gc_paused,
                      load_json_file, load_long_video_ids, load_source)
from .masks import MaskCollector, MaskTable, Tracks, entry_namer
from .results import parse_results
from .schema import Videos

__all__ = [
    'YTVISFormatError', 'MissingFrameError', 'load_json_file', 'load_source',
    'load_long_video_ids', 'gc_paused', 'parse_ground_truth', 'parse_results', 'GroundTruth',
    'Tracks', 'MaskTable', 'MaskCollector', 'Videos', 'entry_namer', 'PathOrDict', 'PathOrList'
]
