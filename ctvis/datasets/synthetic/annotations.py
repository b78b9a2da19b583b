"""Random YouTube-VIS ground truth and results, for the evaluator's tests and benchmark.

* :func:`random_ytvis_set`: a small set built for ytvoseval's corner cases (the tests compare the
  evaluator with ytvoseval on it);
* :func:`make_synthetic_ytvis`: a seeded set of realistic size and shape (100 videos of 1280x720
  by default: moving ellipses, perturbed predictions, false positives), the benchmark's input;
* :func:`rle_of`, :func:`runs_of`, :func:`box_mask`: the mask helpers they share.

Both return ``(gt, results)``: a YouTube-VIS ground-truth dict and a results list.
"""
from typing import List, Tuple

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ['random_ytvis_set', 'make_synthetic_ytvis', 'rle_of', 'runs_of', 'box_mask',
           'ellipse_counts']


def runs_of(mask: np.ndarray) -> List[int]:
    """Uncompressed RLE counts (column-major, background first)."""
    flat = np.asarray(mask, np.uint8).flatten(order='F')
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1,
                             [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0] + runs if flat[0] else runs


def rle_of(mask: np.ndarray, kind: str = 'str') -> dict:
    """pycocotools RLE of a binary mask: 'str' / 'bytes' counts, or 'list'
    (uncompressed)."""
    height, width = mask.shape
    if kind == 'list':
        return {'size': [height, width], 'counts': runs_of(mask)}
    counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))[
        'counts']
    return {
        'size': [height, width],
        'counts': counts.decode() if kind == 'str' else counts
    }


def box_mask(height: int, width: int, box) -> np.ndarray:
    x1, y1, x2, y2 = box
    mask = np.zeros((height, width), bool)
    mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    return mask


def random_ytvis_set(seed: int = 3) -> Tuple[dict, List[dict]]:
    """Small ground truth + results exercising ytvoseval's corner cases:
    absent frames, crowd, annotation id 0, several categories (one without
    ground truth), a video without annotations, uncompressed / compressed /
    polygon ground truth, size-range bins through ``areas``, empty predicted
    masks, score ties within and across videos, and a (video, category) with
    more than 100 predictions."""
    rng = np.random.default_rng(seed)
    video_shapes = {1: (24, 32, 6), 2: (20, 28, 5), 3: (130, 140, 4),
                    4: (12, 16, 3), 9: (16, 16, 4)}
    categories = [2, 5, 7, 11]  # 7 never has ground truth
    videos, annotations, results = [], [], []
    scores = (0.9, 0.8, 0.5, 0.3)
    for video_id, (height, width, length) in video_shapes.items():
        video = dict(id=video_id, height=height, width=width,
                     file_names=[f'{video_id}/{t}.jpg' for t in range(length)])
        if video_id != 2:  # video 2 gives its length through file_names
            video['length'] = length
        videos.append(video)
        if video_id == 4:  # no annotations: predictions are all false
            for _ in range(3):
                results.append(
                    dict(video_id=4, category_id=int(rng.choice(categories)),
                         score=float(rng.choice(scores)),
                         segmentations=[
                             rle_of(box_mask(height, width, (1, 1, 9, 7)))
                             for _ in range(length)
                         ]))
            continue
        for obj in range(int(rng.integers(2, 5))):
            category = int(rng.choice([2, 5, 11]))
            x1, y1 = int(rng.integers(0, width // 2)), int(
                rng.integers(0, height // 2))
            w, h = int(rng.integers(3, width // 2)), int(
                rng.integers(3, height // 2))
            first, last = int(rng.integers(0, 2)), int(
                rng.integers(length - 1, length + 1))
            kind = ('list', 'str', 'polygon')[(video_id + obj) % 3]
            masks, segmentations, areas = [], [], []
            for t in range(length):
                box = (x1 + t, y1, x1 + t + w, y1 + h)
                mask = box_mask(height, width, box)
                if not first <= t < last:
                    masks.append(None)
                    segmentations.append(None)
                    areas.append(None)
                    continue
                masks.append(mask)
                if kind == 'polygon':
                    bx1, by1 = box[0], box[1]
                    bx2, by2 = min(box[2], width), min(box[3], height)
                    segmentations.append(
                        [[bx1, by1, bx2, by1, bx2, by2, bx1, by2]])
                else:
                    segmentations.append(rle_of(mask, kind))
                areas.append(float(mask.sum()))
            if obj == 1:  # push through the medium / large size bins
                areas = [a * (30 if video_id == 1 else 300) if a else a
                         for a in areas]
            annotation_id = len(annotations) + (0 if video_id == 1 else 1)
            annotations.append(
                dict(id=annotation_id, video_id=video_id,
                     category_id=category, segmentations=segmentations,
                     areas=areas, iscrowd=int(obj == 2 and video_id == 3),
                     height=height, width=width))
            for copy_index in range(int(rng.integers(0, 3))):
                shift = int(rng.integers(-2, 3))
                segmentation = []
                for t, mask in enumerate(masks):
                    if mask is None or rng.random() < 0.15:
                        segmentation.append(None)
                    elif rng.random() < 0.1:  # an empty mask
                        segmentation.append(rle_of(np.zeros_like(mask)))
                    else:
                        segmentation.append(
                            rle_of(np.roll(mask, shift, axis=1 + copy_index %
                                           2 - 1)))
                results.append(
                    dict(video_id=video_id,
                         category_id=(category if rng.random() < 0.8 else
                                      int(rng.choice(categories))),
                         score=float(rng.choice(scores)),
                         segmentations=segmentation))
        for _ in range(int(rng.integers(1, 4))):  # false positives
            box = (int(rng.integers(0, width - 4)),
                   int(rng.integers(0, height - 4)), width, height)
            results.append(
                dict(video_id=video_id,
                     category_id=int(rng.choice(categories)),
                     score=float(rng.choice(scores)),
                     segmentations=[
                         rle_of(box_mask(height, width, box), 'bytes'
                                if t % 2 else 'str') for t in range(length)
                     ]))
    # 105 tiny predictions in one (video, category): exceeds maxDets = 100.
    for index in range(105):
        mask = np.zeros((16, 16), bool)
        mask[index % 16, (index // 16) % 16] = True
        results.append(
            dict(video_id=9, category_id=5, score=float(rng.choice(scores)),
                 segmentations=[rle_of(mask)] * 4))
    gt = dict(videos=videos, annotations=annotations,
              categories=[dict(id=c, name=f'c{c}') for c in categories])
    return gt, results


# Ellipse semi-axes (pixels at 720p) of small / medium / large objects.
_OBJECT_SCALES = (30, 90, 220)


def ellipse_counts(height: int, width: int, center: Tuple[float, float], axes: Tuple[float, float],
                   rng: np.random.Generator) -> np.ndarray:
    """Run lengths (column-major, pycocotools order) of a filled ellipse
    whose top and bottom edges are jittered by up to 2 pixels per column,
    written directly without rasterising the frame.

    Returns:
        np.ndarray: int64 (num_runs, ), alternating background / foreground
        runs starting with background, summing to ``height * width``.
    """
    cx, cy = center
    ax, ay = axes
    x0 = max(int(np.floor(cx - ax)), 0)
    x1 = min(int(np.ceil(cx + ax)), width - 1)
    if x1 < x0:
        return np.array([height * width])
    xs = np.arange(x0, x1 + 1)
    half = ay * np.sqrt(np.clip(1 - ((xs - cx) / ax)**2, 0, None))
    jitter = rng.integers(-2, 3, (2, len(xs)))
    top = np.clip(np.round(cy - half).astype(np.int64) + jitter[0], 0, height)
    bottom = np.clip(np.round(cy + half).astype(np.int64) + jitter[1], 0, height)
    keep = bottom > top
    starts, ends = xs[keep] * height + top[keep], xs[keep] * height + bottom[keep]
    if not len(starts):
        return np.array([height * width])
    touching = starts[1:] == ends[:-1]  # full-height columns side by side
    starts = starts[np.concatenate([[True], ~touching])]
    ends = ends[np.concatenate([~touching, [True]])]
    boundaries = np.empty(2 * len(starts) + 2, np.int64)
    boundaries[0], boundaries[-1] = 0, height * width
    boundaries[1:-1:2], boundaries[2:-1:2] = starts, ends
    return np.diff(boundaries)


def _track(rng: np.random.Generator, height: int, width: int, num_frames: int) -> dict:
    """A random object trajectory: ellipse axes, start point, velocity and
    growth, visible in a random sub-range of the frames."""
    scale = rng.choice(_OBJECT_SCALES) * height / 720
    axes = scale * rng.uniform(0.6, 1.4, 2)
    start = rng.uniform(axes, [width - axes[0], height - axes[1]])
    first = int(rng.integers(0, max(num_frames // 4, 1)))
    last = int(rng.integers(3 * num_frames // 4, num_frames + 1))
    return dict(
        axes=axes,
        start=start,
        velocity=rng.normal(0, 0.004 * width, 2),
        growth=rng.uniform(-0.01, 0.01),
        frames=range(first, max(last, first + 1)))


def _frame_counts(track: dict,
                  frame: int,
                  height: int,
                  width: int,
                  rng: np.random.Generator,
                  offset=(0., 0.),
                  scale=1.) -> np.ndarray:
    center = track['start'] + track['velocity'] * frame + offset
    axes = track['axes'] * scale * (1 + track['growth'] * frame)
    return ellipse_counts(height, width, tuple(center), tuple(axes), rng)


def make_synthetic_ytvis(num_videos: int = 100,
                         height: int = 720,
                         width: int = 1280,
                         frame_range: Tuple[int, int] = (20, 40),
                         object_range: Tuple[int, int] = (1, 5),
                         category_ids: Tuple[int, ...] = (1, 2, 3, 5, 8, 13),
                         min_predictions: int = 10,
                         seed: int = 0) -> Tuple[dict, List[dict]]:
    """A seeded synthetic YouTube-VIS ground truth and results list.

    Ground truth follows the official YouTube-VIS layout (uncompressed RLE
    per frame, None where the object is absent, ``areas``, 5% crowd).
    Predictions look like the output of query-based VIS models (ours
    included): a compressed RLE in every frame, empty where the object is
    not seen; 1-2 perturbed copies of every object (shifted, rescaled, a few
    frames missed, 15% with a wrong category) and false positives (random
    objects and categories, lower scores) up to at least ``min_predictions``
    per video. Scores have two decimals, so ties occur.
    """
    rng = np.random.default_rng(seed)
    videos, annotations, results = [], [], []

    def compressed(counts: np.ndarray) -> dict:
        rle = mask_utils.frPyObjects({'counts': counts, 'size': [height, width]}, height, width)
        return {'size': [height, width], 'counts': rle['counts'].decode()}

    empty = compressed(np.array([height * width]))

    for video_id in range(1, num_videos + 1):
        num_frames = int(rng.integers(frame_range[0], frame_range[1] + 1))
        videos.append(
            dict(
                id=video_id,
                width=width,
                height=height,
                length=num_frames,
                file_names=[f'{video_id:05d}/{t:05d}.jpg' for t in range(num_frames)]))
        objects = []
        for _ in range(int(rng.integers(object_range[0], object_range[1] + 1))):
            track = _track(rng, height, width, num_frames)
            track['category'] = int(rng.choice(category_ids))
            segmentations, areas = [None] * num_frames, [None] * num_frames
            for frame in track['frames']:
                counts = _frame_counts(track, frame, height, width, rng)
                segmentations[frame] = {'counts': counts.tolist(), 'size': [height, width]}
                areas[frame] = float(counts[1::2].sum())
            annotations.append(
                dict(
                    id=len(annotations) + 1,
                    video_id=video_id,
                    category_id=track['category'],
                    segmentations=segmentations,
                    areas=areas,
                    iscrowd=int(rng.random() < 0.05),
                    width=width,
                    height=height))
            objects.append(track)
        predictions = []
        for track in objects:
            for _ in range(int(rng.integers(1, 3))):
                category = (
                    track['category'] if rng.random() < 0.85 else int(rng.choice(category_ids)))
                offset = rng.normal(0, 0.1 * track['axes'].mean(), 2)
                scale = rng.uniform(0.85, 1.15)
                segmentations = [empty] * num_frames
                for frame in track['frames']:
                    if rng.random() < 0.05:
                        continue
                    segmentations[frame] = compressed(
                        _frame_counts(track, frame, height, width, rng, offset, scale))
                predictions.append(
                    dict(
                        video_id=video_id,
                        category_id=category,
                        score=round(float(rng.uniform(0.3, 1.0)), 2),
                        segmentations=segmentations))
        while len(predictions) < min_predictions or rng.random() < 0.3:
            track = _track(rng, height, width, num_frames)
            segmentations = [empty] * num_frames
            for frame in track['frames']:
                segmentations[frame] = compressed(_frame_counts(track, frame, height, width, rng))
            predictions.append(
                dict(
                    video_id=video_id,
                    category_id=int(rng.choice(category_ids)),
                    score=round(float(rng.uniform(0.0, 0.7)), 2),
                    segmentations=segmentations))
        results.extend(predictions)
    categories = [dict(id=c, name=f'class_{c}', supercategory='object') for c in category_ids]
    return dict(videos=videos, annotations=annotations, categories=categories), results
