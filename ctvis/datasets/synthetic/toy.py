"""The built-in toy VIS dataset: textured shapes that move, cross, occlude and leave the frame.

A real VIS dataset is far too large to train on a CPU in minutes, and a trivially easy one does not
exercise tracking. This generator renders short videos in the YouTube-VIS layout with four classes
of textured shapes (``disc``, ``square``, ``triangle``, ``ring``). Each class has its own colour
family and texture; instances of one class look alike. The videos are built so that tracking
matters:

* in most videos two instances cross paths (often of the same class), so one occludes the other
  for a few frames;
* instances may make an *excursion*: leave the frame over an edge and come back, so the tracker has
  to re-identify them after they were absent (their annotation is ``null`` meanwhile; the
  harder association set of :mod:`.association` builds on these pieces);
* shapes change scale and rotate smoothly; backgrounds are random low-saturation gradients with
  smooth noise, and every frame gets sensor noise.

Masks are exact: they are the pixels each shape owns after painting in depth order (far to near),
so an occluded part is not in the mask, the ring's hole shows what is behind it, and a fully
occluded or off-frame instance is ``null`` in that frame.

The output is deterministic for a seed: the JSON bytes are identical for the same arguments, and the
JPEG frames are identical for the same libjpeg. Each video draws from its own random stream
(``SeedSequence([seed, video_index])``), so changing the number of validation videos does not change
the training videos.

Layout written by :func:`make_toy_vis` (the YouTube-VIS layout)::

    OUT_DIR/train.json           # or annotations.json when there are no validation videos
    OUT_DIR/valid.json           # with annotations, for local evaluation
    OUT_DIR/JPEGImages/<video_name>/00000.jpg ...
"""
import json
import os
import os.path as osp
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import cv2
import numpy as np

from .annotations import rle_of

#: Class names in category-id order (category ids are 1..4).
TOY_CLASSES: Tuple[str, ...] = ('disc', 'square', 'triangle', 'ring')

# Base colour of each class family, RGB; the texture is drawn with a darker shade of it.
_CLASS_RGB = np.array([
    (220, 45, 40),  # disc: red
    (45, 185, 60),  # square: green
    (50, 85, 230),  # triangle: blue
    (240, 200, 35),  # ring: yellow
], dtype=np.float32)
_TEXTURE_SHADE = 0.55  # the texture's darker colour, as a fraction of the base colour
_SENSOR_NOISE_STD = 3.0  # per-frame pixel noise, in grey levels
_JPEG_QUALITY = 95


@dataclass
class ToyVideo:
    """One rendered toy video (in memory).

    Attributes:
        frames (np.ndarray): (T, H, W, 3) uint8 frames in BGR order (as written to JPEG).
        visible_masks (np.ndarray): (N, T, H, W) bool, the pixels each instance owns after
            occlusion; these are the annotated masks.
        full_masks (np.ndarray): (N, T, H, W) bool, each shape as drawn without occluders
            (clipped to the frame); ``visible_masks`` is a subset of it.
        labels (np.ndarray): (N,) int64 class index into :data:`TOY_CLASSES`.
        depth_order (np.ndarray): (N,) int64 instance indices from far to near.
    """
    frames: np.ndarray
    visible_masks: np.ndarray
    full_masks: np.ndarray
    labels: np.ndarray
    depth_order: np.ndarray


@dataclass
class ShapeTrack:
    """A shape's appearance and its per-frame pose (centre, size, rotation)."""
    label: int
    rgb: np.ndarray  # (3,) float32 base colour
    centres: np.ndarray  # (T, 2) float64 (x, y) in pixels
    radii: np.ndarray  # (T,) float64 shape radius in pixels
    angles: np.ndarray  # (T,) float64 rotation in radians


def _random_background(rng: np.random.Generator, height: int,
                       width: int) -> np.ndarray:
    """A low-saturation linear gradient plus smooth noise, (H, W, 3) float32 RGB.

    Low saturation keeps the saturated class colours the only strongly coloured things in a frame.
    """
    grey = rng.uniform(50, 200, size=2)
    tint = rng.uniform(-15, 15, size=(2, 3))
    colour_a, colour_b = grey[:, None] + tint  # (2, 3)
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    proj = np.cos(angle) * xs / width + np.sin(angle) * ys / height
    proj = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    background = colour_a + proj[..., None] * (colour_b - colour_a)
    # Smooth blotches: a coarse random grid upsampled to the frame.
    grid = rng.normal(0.0, 1.0, size=(int(rng.integers(3, 7)),
                                      int(rng.integers(3, 7)), 1))
    blotches = cv2.resize(grid.astype(np.float32), (width, height),
                          interpolation=cv2.INTER_CUBIC)
    background += rng.uniform(5, 25) * blotches.reshape(height, width, 1)
    return background.astype(np.float32)


def wobble(rng: np.random.Generator, times: np.ndarray,
            amplitude: float) -> np.ndarray:
    """Smooth random 2-D wiggle, (T, 2): one sinusoid per axis, 0.5-2 cycles per clip."""
    freq = rng.uniform(0.5, 2.0, size=2)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    amp = rng.uniform(0, amplitude, size=2)
    return amp * np.sin(2 * np.pi * freq * times[:, None] + phase)


def _crossing_pair(rng: np.random.Generator, times: np.ndarray, height: int,
                   width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Centres (T, 2) of two instances that pass one point at about the same time."""
    meet = np.array([rng.uniform(0.3, 0.7) * width,
                     rng.uniform(0.3, 0.7) * height])
    meet_time = rng.uniform(0.3, 0.7)
    first_dir = rng.uniform(0, 2 * np.pi)
    second_dir = first_dir + np.pi + rng.choice([-1, 1]) * rng.uniform(0.3, 1.2)
    paths = []
    for direction, delay in ((first_dir, 0.0), (second_dir,
                                                rng.uniform(-0.06, 0.06))):
        travel = rng.uniform(0.5, 0.9) * width  # distance covered over the clip
        velocity = travel * np.array([np.cos(direction), np.sin(direction)])
        path = meet + velocity * (times[:, None] - meet_time - delay)
        paths.append(path + wobble(rng, times, 3.0))
    return paths[0], paths[1]


def _excursion(rng: np.random.Generator, times: np.ndarray, height: int,
               width: int, max_radius: float) -> np.ndarray:
    """Centres (T, 2) of an instance that leaves the frame over an edge and comes back.

    The distance to the edge follows an inverted Gaussian bump in time: inside at the start and
    the end, fully outside (centre beyond the edge by more than the largest radius) at the apex.
    """
    edge = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
    along_len, across_len = (height, width) if edge < 2 else (width, height)
    apex_time = rng.uniform(0.35, 0.65)
    sigma = rng.uniform(0.12, 0.2)
    inside = max_radius + rng.uniform(4, 0.3 * across_len)
    outside = -(1.15 * max_radius + rng.uniform(3, 8))
    bump = np.exp(-((times - apex_time) / sigma)**2)
    depth = inside - (inside - outside) * bump  # signed distance from the edge, >0 inside
    along = (rng.uniform(0.25, 0.75) * along_len + rng.uniform(-0.3, 0.3) *
             along_len * (times - apex_time))
    across = depth if edge in (0, 2) else across_len - depth
    centres = (np.stack([across, along], 1) if edge < 2 else np.stack(
        [along, across], 1))
    return centres + wobble(rng, times, 2.0)


def wanderer(rng: np.random.Generator, times: np.ndarray, height: int,
              width: int) -> np.ndarray:
    """Centres (T, 2) of an instance drifting roughly towards the frame centre."""
    start = np.array([rng.uniform(0.15, 0.85) * width,
                      rng.uniform(0.15, 0.85) * height])
    to_centre = np.array([width / 2, height / 2]) - start
    direction = np.arctan2(to_centre[1], to_centre[0]) + rng.uniform(-1, 1)
    travel = rng.uniform(0.2, 0.5) * width
    velocity = travel * np.array([np.cos(direction), np.sin(direction)])
    return start + velocity * times[:, None] + wobble(rng, times, 6.0)


def _sample_tracks(rng: np.random.Generator, num_frames: int, height: int,
                   width: int, num_instances: int) -> List[ShapeTrack]:
    """Classes, colours and trajectories of one video's instances."""
    times = (np.arange(num_frames) / max(num_frames - 1, 1)).astype(np.float64)
    short_side = min(height, width)
    base_radii = rng.uniform(0.10, 0.19, size=num_instances) * short_side
    max_radius = 1.2 * base_radii.max()  # radius bound including the scale change

    # Motions: instances 0 and 1 cross (or, in some 2-instance videos, one makes an excursion);
    # the others make an excursion or wander.
    centres: List[np.ndarray] = []
    if num_instances >= 3 or rng.random() < 0.65:
        centres.extend(_crossing_pair(rng, times, height, width))
    else:
        centres.append(wanderer(rng, times, height, width))
        centres.append(_excursion(rng, times, height, width, max_radius))
    for index in range(2, num_instances):
        excursion_prob = 0.7 if index == 2 else 0.5
        if rng.random() < excursion_prob:
            centres.append(_excursion(rng, times, height, width, max_radius))
        else:
            centres.append(wanderer(rng, times, height, width))

    # Classes: the second instance (the first one's crossing partner) copies the first one's
    # class half of the time and later ones an earlier class a quarter of the time, so
    # look-alike instances, crossing ones included, are common.
    labels: List[int] = []
    for index in range(num_instances):
        repeat_prob = 0.0 if index == 0 else 0.5 if index == 1 else 0.25
        if rng.random() < repeat_prob:
            labels.append(int(rng.choice(labels)))
        else:
            labels.append(int(rng.integers(len(TOY_CLASSES))))

    return [make_shape_track(rng, labels[index], centres[index], base_radii[index], times)
            for index in range(num_instances)]


def make_shape_track(rng: np.random.Generator, label: int, centres: np.ndarray,
                     base_radius: float, times: np.ndarray) -> ShapeTrack:
    """A shape of class ``label`` along ``centres``: its colour, scale change and rotation.

    Same-class shapes differ only slightly in brightness (x0.9-1.08), so they look alike.

    Args:
        rng (np.random.Generator): The video's random stream.
        label (int): Class index into :data:`TOY_CLASSES`.
        centres (np.ndarray): (T, 2) centres (x, y) in pixels.
        base_radius (float): Radius in pixels before the smooth scale change (up to +-20 %).
        times (np.ndarray): (T,) frame times in [0, 1].
    """
    rgb = np.clip(_CLASS_RGB[label] * rng.uniform(0.9, 1.08), 0, 255).astype(np.float32)
    scale = 1.0 + rng.uniform(0.05, 0.2) * np.sin(
        2 * np.pi * rng.uniform(0.3, 1.2) * times + rng.uniform(0, 2 * np.pi))
    angles = rng.uniform(0, 2 * np.pi) + rng.uniform(-np.pi, np.pi) * times
    return ShapeTrack(label, rgb, centres, base_radius * scale, angles)


def _shape_and_texture(label: int, u: np.ndarray,
                       v: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Inside-test and dark-texture flag in the shape's own frame (radius 1).

    Args:
        label (int): Class index into :data:`TOY_CLASSES`.
        u (np.ndarray): (h, w) x coordinates in the shape frame.
        v (np.ndarray): (h, w) y coordinates in the shape frame.

    Returns:
        tuple[np.ndarray, np.ndarray]: (h, w) bool inside mask and (h, w) bool texture mask.
    """
    radius_sq = u * u + v * v
    if label == 0:  # disc with five dark spokes
        inside = radius_sq <= 1.0
        texture = np.sin(5 * np.arctan2(v, u)) > 0
    elif label == 1:  # square with a checkerboard
        inside = np.maximum(np.abs(u), np.abs(v)) <= 0.8
        texture = (np.floor(u * 2.5) + np.floor(v * 2.5)) % 2 == 1
    elif label == 2:  # equilateral triangle (circumradius 1.25) with stripes
        inside = np.ones_like(u, dtype=bool)
        for normal_angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3,
                             np.pi / 2 + 4 * np.pi / 3):
            inside &= (np.cos(normal_angle) * u +
                       np.sin(normal_angle) * v) <= 0.625
        texture = np.sin(3 * np.pi * u) > 0
    else:  # ring with dark segments
        inside = (radius_sq >= 0.55**2) & (radius_sq <= 1.05**2)
        texture = np.sin(8 * np.arctan2(v, u)) > 0.3
    return inside, texture


def render_toy_video(seed: Sequence[int],
                     num_frames: int,
                     size: Tuple[int, int] = (96, 128),
                     instances_per_video: Tuple[int, int] = (2, 4)) -> ToyVideo:
    """Render one toy video.

    Args:
        seed (Sequence[int]): Entropy for ``np.random.SeedSequence``, e.g. ``(seed, video_index)``.
        num_frames (int): T, the number of frames.
        size (tuple[int, int]): (H, W) of the frames.
        instances_per_video (tuple[int, int]): Inclusive range of the number of instances N.

    Returns:
        ToyVideo: frames (T, H, W, 3) uint8 BGR and masks (N, T, H, W) bool.
    """
    height, width = size
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    num_instances = int(
        rng.integers(instances_per_video[0], instances_per_video[1] + 1))
    tracks = _sample_tracks(rng, num_frames, height, width, num_instances)
    depth_order = rng.permutation(num_instances)
    return render_tracks(rng, tracks, depth_order, num_frames, size)


def render_tracks(rng: np.random.Generator, tracks: Sequence[ShapeTrack],
                  depth_order: np.ndarray, num_frames: int,
                  size: Tuple[int, int]) -> ToyVideo:
    """Paint shapes over a random background, far to near, and keep the pixels each one owns.

    Args:
        rng (np.random.Generator): The video's random stream (background and sensor noise).
        tracks (Sequence[ShapeTrack]): The N shapes with their poses over ``num_frames`` frames.
        depth_order (np.ndarray): (N,) instance indices from far to near.
        num_frames (int): T.
        size (tuple[int, int]): (H, W) of the frames.

    Returns:
        ToyVideo: the frames and the exact visible and full masks.
    """
    height, width = size
    num_instances = len(tracks)
    background = _random_background(rng, height, width)

    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    visible = np.zeros((num_instances, num_frames, height, width), dtype=bool)
    full = np.zeros_like(visible)
    for t in range(num_frames):
        canvas = background.copy()
        owner = np.full((height, width), -1, dtype=np.int64)
        for index in depth_order:
            track = tracks[index]
            (cx, cy), radius = track.centres[t], track.radii[t]
            reach = 1.3 * radius  # bounds every shape (triangle circumradius is 1.25)
            x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)) + 1, width)
            y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)) + 1, height)
            if x0 >= x1 or y0 >= y1:
                continue  # entirely outside the frame
            ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float64)
            cos, sin = np.cos(track.angles[t]), np.sin(track.angles[t])
            u = (cos * (xs - cx) + sin * (ys - cy)) / radius
            v = (-sin * (xs - cx) + cos * (ys - cy)) / radius
            inside, texture = _shape_and_texture(track.label, u, v)
            colour = np.where(texture[..., None], track.rgb * _TEXTURE_SHADE,
                              track.rgb)
            region = canvas[y0:y1, x0:x1]
            region[inside] = colour[inside]
            owner[y0:y1, x0:x1][inside] = index
            full[index, t, y0:y1, x0:x1] = inside
        for index in range(num_instances):
            visible[index, t] = owner == index
        canvas += rng.normal(0.0, _SENSOR_NOISE_STD, size=canvas.shape)
        frames[t] = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)[..., ::-1]
    labels = np.array([track.label for track in tracks], dtype=np.int64)
    return ToyVideo(frames, visible, full, labels, depth_order.astype(np.int64))


def _mask_bbox(mask: np.ndarray) -> List[float]:
    """[x, y, w, h] of a non-empty (H, W) bool mask (COCO convention, pixel extents)."""
    ys, xs = np.nonzero(mask)
    x0, y0 = int(xs.min()), int(ys.min())
    return [float(x0), float(y0), float(xs.max() - x0 + 1),
            float(ys.max() - y0 + 1)]


def _video_json(video: ToyVideo, video_id: int, name: str,
                first_annotation_id: int) -> Tuple[dict, List[dict]]:
    """The YouTube-VIS ``videos`` entry and ``annotations`` of one rendered video."""
    num_frames, height, width = video.frames.shape[:3]
    video_entry = {
        'id': video_id,
        'width': width,
        'height': height,
        'length': num_frames,
        'file_names': [f'{name}/{t:05d}.jpg' for t in range(num_frames)],
    }
    annotations = []
    for index, masks in enumerate(video.visible_masks):
        if not masks.any():
            continue  # never visible: not an instance of this video
        segmentations, bboxes, areas = [], [], []
        for mask in masks:
            visible = bool(mask.any())
            segmentations.append(rle_of(mask) if visible else None)
            bboxes.append(_mask_bbox(mask) if visible else None)
            areas.append(int(mask.sum()) if visible else None)
        annotations.append({
            'id': first_annotation_id + len(annotations),
            'video_id': video_id,
            'category_id': int(video.labels[index]) + 1,
            'iscrowd': 0,
            'height': height,
            'width': width,
            'length': 1,
            'segmentations': segmentations,
            'bboxes': bboxes,
            'areas': areas,
        })
    return video_entry, annotations


def make_toy_vis(out_dir: str,
                 num_videos: int,
                 num_frames: int,
                 seed: int = 0,
                 size: Tuple[int, int] = (96, 128),
                 num_val_videos: int = 0,
                 instances_per_video: Tuple[int, int] = (2, 4)) -> Dict[str, str]:
    """Write a toy dataset in the YouTube-VIS layout.

    Args:
        out_dir (str): Output directory (created if needed).
        num_videos (int): Number of training videos.
        num_frames (int): Frames per video.
        seed (int): Random seed; the same arguments give byte-identical JSON.
        size (tuple[int, int]): (H, W) of the frames.
        num_val_videos (int): Number of validation videos, written with annotations to
            ``valid.json``. With 0, the training videos go to ``annotations.json`` instead of
            ``train.json``.
        instances_per_video (tuple[int, int]): Inclusive range of instances per video.

    Returns:
        dict[str, str]: Paths of the written JSON files by split (``train``, ``valid``) and the
        frame root (``img_root``).
    """
    check_dataset_arguments('make_toy_vis', num_videos, num_frames, size, num_val_videos)
    low, high = instances_per_video
    if not 1 <= low <= high:
        raise ValueError('make_toy_vis: instances_per_video must be a range '
                         f'1 <= low <= high, got {instances_per_video}')
    return write_vis_dataset(
        out_dir, lambda video_index: render_toy_video((seed, video_index), num_frames, size,
                                                      instances_per_video),
        num_videos, num_val_videos, seed, 'ctvis toy VIS dataset', 'make_toy_vis')


def check_dataset_arguments(caller: str, num_videos: int, num_frames: int,
                            size: Tuple[int, int], num_val_videos: int) -> None:
    """ValueError (prefixed with ``caller``) for unusable video counts, lengths or sizes."""
    height, width = size
    if num_videos < 1 or num_frames < 1 or num_val_videos < 0:
        raise ValueError(f'{caller}: need num_videos >= 1, num_frames >= 1 '
                         f'and num_val_videos >= 0, got {num_videos}, '
                         f'{num_frames}, {num_val_videos}')
    if min(height, width) < 16:
        raise ValueError(f'{caller}: frame size {size} is too small '
                         '(need at least 16x16)')


def write_vis_dataset(out_dir: str, render: Callable[[int], ToyVideo], num_videos: int,
                      num_val_videos: int, seed: int, description: str,
                      caller: str) -> Dict[str, str]:
    """Render videos and write them in the YouTube-VIS layout (JPEG frames + JSON per split).

    Args:
        out_dir (str): Output directory (created if needed).
        render (Callable[[int], ToyVideo]): Renders the video of a global video index; training
            videos are indices ``0..num_videos-1``, validation videos follow.
        num_videos (int): Number of training videos.
        num_val_videos (int): Number of validation videos (``valid.json``); with 0 the training
            videos go to ``annotations.json`` instead of ``train.json``.
        seed (int): Recorded in each JSON's ``info``.
        description (str): ``info.description`` prefix; the split is appended in brackets.
        caller (str): Names the generator in error messages.

    Returns:
        dict[str, str]: Paths of the written JSON files by split and the frame root.
    """
    img_root = osp.join(out_dir, 'JPEGImages')
    splits = [('train', 'train' if num_val_videos else 'annotations', range(num_videos))]
    if num_val_videos > 0:
        splits.append(('valid', 'valid', range(num_videos, num_videos + num_val_videos)))

    # the other layout's files of an earlier run would be read as this one's (the quickstart
    # reads train.json and valid.json)
    written = {json_name for _, json_name, _ in splits}
    for stale in {'train', 'valid', 'annotations'} - written:
        if osp.isfile(osp.join(out_dir, f'{stale}.json')):
            os.remove(osp.join(out_dir, f'{stale}.json'))
    paths = {'img_root': img_root}
    for split, json_name, video_indices in splits:
        video_entries: List[dict] = []
        annotations: List[dict] = []
        for number, video_index in enumerate(video_indices):
            name = toy_video_name(split, number)
            video = render(video_index)
            video_dir = osp.join(img_root, name)
            os.makedirs(video_dir, exist_ok=True)
            for t, frame in enumerate(video.frames):
                frame_path = osp.join(video_dir, f'{t:05d}.jpg')
                if not cv2.imwrite(frame_path, frame, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY]):
                    raise OSError(f'{caller}: could not write {frame_path}')
            video_entry, video_annotations = _video_json(video, number + 1, name,
                                                         len(annotations) + 1)
            video_entries.append(video_entry)
            annotations.extend(video_annotations)
        content = {
            'info': {
                'description': f'{description} ({split})',
                'version': '1.0',
                'seed': seed,
            },
            'licenses': [],
            'videos': video_entries,
            'categories': [{'id': i + 1, 'name': class_name, 'supercategory': 'shape'}
                           for i, class_name in enumerate(TOY_CLASSES)],
            'annotations': annotations,
        }
        json_path = osp.join(out_dir, f'{json_name}.json')
        with open(json_path, 'w') as f:
            json.dump(content, f, separators=(',', ':'))
        paths[split] = json_path
    return paths


def toy_video_name(split: str, number: int) -> str:
    """Name (folder under ``JPEGImages``) of the ``number``-th video of a split."""
    return f'{split}_{number:05d}'
