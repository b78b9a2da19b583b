"""Drawing tracks on frames, shared by ``demo/video_demo.py`` and the test-time
:class:`~ctvis.engine.VideoMaskVisualizationHook`: one colour per track, masks blended in, their
outlines, and ``track class score`` labels placed so that neighbours' labels do not overlap."""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import pycocotools.mask as mask_util
from mmengine.structures import InstanceData

_GOLDEN_RATIO_CONJUGATE = 0.61803398875


def track_color(track_id: int) -> Tuple[int, int, int]:
    """A vivid BGR colour that depends only on the track id, so a track keeps its colour.

    Hues step by the golden ratio, so consecutive ids (the usual neighbours) get far-apart hues;
    saturation 200 and value 255 keep every colour bright enough to read over a frame.
    """
    hue = (int(track_id) * _GOLDEN_RATIO_CONJUGATE) % 1.0
    hsv = np.uint8([[[int(hue * 179), 200, 255]]])  # OpenCV hue range: 0..179
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def place_labels(anchors: Sequence[Tuple[int, int, int, int]], sizes: Sequence[Tuple[int, int]],
                 frame_size: Tuple[int, int]) -> List[Tuple[int, int]]:
    """Top-left corners of label boxes, each near its object and none over another.

    A label goes just above its object's box (at the frame's top edge, over the object, when
    there is no room above); where that spot is taken by an earlier label, the label moves to
    the nearest free row up or down. Only when no row is free (more labels than fit) does it
    overlap another.

    Args:
        anchors: (x0, y0, x1, y1) box of each object, in drawing order.
        sizes: (width, height) of each label box.
        frame_size: (H, W) of the canvas.

    Returns:
        list[tuple[int, int]]: (x, y) of each label box's top-left corner.
    """
    height, width = frame_size
    placed, corners = [], []
    for (x0, y0, _, _), (w, h) in zip(anchors, sizes):
        x = min(max(x0, 0), max(width - w, 0))
        preferred = min(max(y0 - h, 0), max(height - h, 0))
        rows = [preferred] + [preferred + sign * k for k in range(1, height)
                              for sign in (1, -1)]
        free = (y for y in rows if 0 <= y <= height - h and
                not any(x < px + pw and px < x + w and y < py + ph and py < y + h
                        for px, py, pw, ph in placed))
        y = next(free, preferred)
        placed.append((x, y, w, h))
        corners.append((x, y))
    return corners


def label_font(frame_size: Tuple[int, int]) -> Tuple[float, int]:
    """Font scale and stroke thickness for labels on a canvas of ``frame_size`` (H, W)."""
    scale = max(0.35, min(frame_size) / 900)
    return scale, max(1, round(scale * 1.6))


def draw_tracks(frame: np.ndarray, tracks: InstanceData, class_names: Optional[Sequence[str]],
                score_thr: float, scale: int = 1) -> np.ndarray:
    """A copy of the BGR frame (upscaled ``scale`` times) with each track's mask, outline and
    label.

    Args:
        frame (np.ndarray): (H, W, 3) uint8 BGR.
        tracks (InstanceData): ``instances_id``, ``labels``, ``scores`` and ``masks`` (one RLE
            of the frame's size per track, or None where the track is absent).
        class_names (Sequence[str], optional): Label names; the label index without them.
        score_thr (float): Tracks scoring at most this are not drawn (mmdet's convention).
        scale (int): Upscaling of the canvas (small frames get legible labels).
    """
    height, width = frame.shape[:2]
    canvas = frame if scale == 1 else cv2.resize(frame, (width * scale, height * scale),
                                                 interpolation=cv2.INTER_LINEAR)
    canvas = canvas.copy()
    font_scale, thickness = label_font(canvas.shape[:2])
    labels = []
    for track_id, label, score, rle in zip(_as_list(tracks.instances_id),
                                           _as_list(tracks.labels), _as_list(tracks.scores),
                                           tracks.masks):
        if score <= score_thr or rle is None:
            continue
        mask = mask_util.decode(rle)
        if not mask.any():
            continue
        if scale > 1:
            mask = cv2.resize(mask, canvas.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        colour = track_color(track_id)
        region = mask.astype(bool)
        canvas[region] = (0.5 * canvas[region] + 0.5 * np.float32(colour)).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(canvas, contours, -1, colour, thickness, cv2.LINE_AA)
        ys, xs = np.nonzero(region)
        name = class_names[label] if class_names and label < len(class_names) else str(label)
        labels.append((score, f'{track_id} {name} {score:.2f}', colour,
                       (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))))
    labels.sort(key=lambda item: -item[0])  # the best detections get the spots they want
    pad = thickness + 1
    sizes, baselines = [], []
    for _, text, _, _ in labels:
        (w, h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        sizes.append((w + 2 * pad, h + baseline + 2 * pad))
        baselines.append(baseline)
    corners = place_labels([anchor for *_, anchor in labels], sizes, canvas.shape[:2])
    for (_, text, colour, _), (x, y), (w, h), baseline in zip(labels, corners, sizes, baselines):
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, -1)
        ink = (0, 0, 0) if sum(colour) > 3 * 110 else (255, 255, 255)
        cv2.putText(canvas, text, (x + pad, y + h - pad - baseline), cv2.FONT_HERSHEY_SIMPLEX,
                    font_scale, ink, thickness, cv2.LINE_AA)
    return canvas


def _as_list(values) -> list:
    """Python numbers of a tensor, an array or a sequence."""
    return values.tolist() if hasattr(values, 'tolist') else list(values)
