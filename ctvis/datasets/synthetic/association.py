"""The association VIS dataset: look-alike shapes that cross, hide behind each other and come back.

The toy set (:mod:`.toy`) makes tracking matter in most videos; this set makes it matter in
every video, concentrating the events where the quickstart's error breakdown found most identity
switches. Same shapes, classes, textures, backgrounds, rendering and layout as the toy set (it
reuses :mod:`.toy`'s pieces); what differs is how each video's instances are chosen and moved:

* **look-alikes**: instances 0, 1 and 2 share one class (the same shape, texture and colour up
  to +-9 % brightness); each further instance copies that class half of the time;
* **a crossing with occlusion**: instances 0 and 1 meet at a point near the frame centre, exactly
  at a frame, instance 0 in front and at least 1/0.7 times larger, so at the meeting frame the
  one behind is hidden or almost (a disc or square behind a disc or square vanishes completely);
  their relative speed is moderate, so the occlusion lasts a few frames;
* **a re-appearance after several frames**: instance 2 moves to a frame edge, is completely
  outside the frame for ``absent_frames`` (a drawn number of) consecutive frames, and comes back
  near where it left;
* further instances wander through the frame, as in the toy set.

Every instance is at least partly visible in every other frame, except for further occlusions,
which may add absences. Deterministic for a seed, like the toy set: each video draws from its own
stream ``SeedSequence([seed, video_index])``, the JSON bytes are identical for the same
arguments.
"""
from typing import Dict, List, Tuple

import numpy as np

from .toy import (TOY_CLASSES, ShapeTrack, ToyVideo, check_dataset_arguments, make_shape_track,
                  render_tracks, wanderer, wobble, write_vis_dataset)

BACK_RADIUS_RATIO = 0.7  # the occluded instance's radius, at most this times the occluder's
# Centre of an absent instance beyond the edge, in multiples of the largest radius: every shape
# lies within 1.3 radii of its centre (the triangle's circumradius is 1.25), so it is off-frame
_OUTSIDE_MARGIN = 1.35


def _crossing_with_occlusion(rng: np.random.Generator, times: np.ndarray, meet_frame: int,
                             height: int, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """Centres (T, 2) of two instances at the same point at frame ``meet_frame``.

    The front instance moves at 0.2-0.5 frame widths per clip, the one behind at a relative
    velocity of 0.5-0.9 frame widths per clip in any direction (head-on, side-on or overtaking).
    """
    meet = np.array([rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height])
    meet_time = times[meet_frame]
    front_dir, rel_dir = rng.uniform(0, 2 * np.pi, size=2)
    front_velocity = rng.uniform(0.2, 0.5) * width * np.array([np.cos(front_dir),
                                                               np.sin(front_dir)])
    rel_velocity = rng.uniform(0.5, 0.9) * width * np.array([np.cos(rel_dir), np.sin(rel_dir)])
    elapsed = (times - meet_time)[:, None]
    front = meet + front_velocity * elapsed + wobble(rng, times, 1.0)
    back = meet + (front_velocity + rel_velocity) * elapsed + wobble(rng, times, 1.0)
    return front, back


def _leave_and_return(rng: np.random.Generator, num_frames: int, first_absent: int,
                      absent: int, height: int, width: int, radius: float) -> np.ndarray:
    """Centres (T, 2) of an instance off-frame exactly in frames ``first_absent`` to
    ``first_absent + absent - 1`` and inside the frame (centre at least 0.1 radii in) otherwise.

    It moves towards an edge, jumps out, waits beyond it, comes back in near where it left and
    moves inwards again. ``radius`` bounds its radius over the whole clip.
    """
    edge = int(rng.integers(4))  # 0 left, 1 right, 2 top, 3 bottom
    along_len, across_len = (height, width) if edge < 2 else (width, height)
    deep = rng.uniform(0.3, 0.5) * across_len  # distance from the edge at the start and end
    near_edge = rng.uniform(0.1, 0.5, size=2) * radius  # just before leaving, just after return
    outside = -(_OUTSIDE_MARGIN * radius + rng.uniform(2, 5))
    last_before, first_after = first_absent - 1, first_absent + absent
    frames = np.arange(num_frames, dtype=np.float64)
    depth = np.full(num_frames, outside)  # signed distance from the edge, > 0 inside
    before, after = frames <= last_before, frames >= first_after
    depth[before] = np.interp(frames[before], [0, max(last_before, 1e-9)], [deep, near_edge[0]])
    depth[after] = np.interp(frames[after], [first_after, max(num_frames - 1, first_after)],
                             [near_edge[1], deep])
    along = (rng.uniform(0.3, 0.7) * along_len + rng.uniform(-0.2, 0.2) * along_len *
             (frames / max(num_frames - 1, 1) - 0.5))
    along = along + wobble(rng, frames / max(num_frames - 1, 1), 1.5)[:, 0]
    across = depth if edge in (0, 2) else across_len - depth
    return np.stack([across, along], 1) if edge < 2 else np.stack([along, across], 1)


def render_association_video(seed: Tuple[int, ...], num_frames: int,
                             size: Tuple[int, int] = (96, 128),
                             instances_per_video: Tuple[int, int] = (3, 5),
                             absent_frames: Tuple[int, int] = (3, 5)) -> ToyVideo:
    """Render one association video (see the module docstring for what happens in it).

    Args:
        seed (tuple[int, ...]): Entropy for ``np.random.SeedSequence``, e.g. ``(seed, index)``.
        num_frames (int): T, at least ``absent_frames[1] + 2`` (frames before and after the gap).
        size (tuple[int, int]): (H, W) of the frames.
        instances_per_video (tuple[int, int]): Inclusive range of N, at least 3.
        absent_frames (tuple[int, int]): Inclusive range of the re-appearing instance's gap.

    Returns:
        ToyVideo: frames (T, H, W, 3) uint8 BGR and masks (N, T, H, W) bool; instance 0 occludes
        instance 1 at their meeting, instance 2 is the one that leaves and comes back.
    """
    height, width = size
    rng = np.random.default_rng(np.random.SeedSequence(list(seed)))
    num_instances = int(rng.integers(instances_per_video[0], instances_per_video[1] + 1))
    times = np.arange(num_frames) / max(num_frames - 1, 1)
    short_side = min(height, width)

    main_class = int(rng.integers(len(TOY_CLASSES)))
    labels = [main_class] * 3 + [
        main_class if rng.random() < 0.5 else int(rng.integers(len(TOY_CLASSES)))
        for _ in range(3, num_instances)]
    front_radius = rng.uniform(0.17, 0.21) * short_side
    base_radii = np.concatenate([
        [front_radius, rng.uniform(0.6, BACK_RADIUS_RATIO) * front_radius],
        rng.uniform(0.11, 0.17, size=num_instances - 2) * short_side])

    meet_frame = int(rng.integers(num_frames // 3, num_frames - num_frames // 3))
    absent = int(rng.integers(absent_frames[0], absent_frames[1] + 1))
    first_absent = int(rng.integers(1, num_frames - absent))
    centres: List[np.ndarray] = list(
        _crossing_with_occlusion(rng, times, meet_frame, height, width))
    centres.append(_leave_and_return(rng, num_frames, first_absent, absent, height, width,
                                     1.2 * base_radii[2]))
    centres.extend(wanderer(rng, times, height, width) for _ in range(3, num_instances))

    tracks = [make_shape_track(rng, labels[i], centres[i], base_radii[i], times)
              for i in range(num_instances)]
    front, back = tracks[0], tracks[1]  # keep the one behind smaller throughout
    tracks[1] = ShapeTrack(back.label, back.rgb, back.centres,
                           np.minimum(back.radii, BACK_RADIUS_RATIO * front.radii), back.angles)
    # Depth, far to near: the others in a random order, then instance 1 behind instance 0 (so the
    # meeting pair is never hidden by a third shape at the meeting)
    depth_order = np.concatenate([2 + rng.permutation(num_instances - 2), [1, 0]])
    return render_tracks(rng, tracks, depth_order, num_frames, size)


def make_association_vis(out_dir: str,
                         num_videos: int,
                         num_frames: int,
                         seed: int = 0,
                         size: Tuple[int, int] = (96, 128),
                         num_val_videos: int = 0,
                         instances_per_video: Tuple[int, int] = (3, 5),
                         absent_frames: Tuple[int, int] = (3, 5)) -> Dict[str, str]:
    """Write an association dataset in the YouTube-VIS layout (the toy set's layout and classes).

    Args:
        out_dir (str): Output directory (created if needed).
        num_videos (int): Number of training videos.
        num_frames (int): Frames per video, at least ``absent_frames[1] + 2``.
        seed (int): Random seed; the same arguments give byte-identical JSON.
        size (tuple[int, int]): (H, W) of the frames.
        num_val_videos (int): Number of validation videos (``valid.json``, with annotations);
            with 0 the training videos go to ``annotations.json``.
        instances_per_video (tuple[int, int]): Inclusive range of instances per video, >= 3.
        absent_frames (tuple[int, int]): Inclusive range of the consecutive frames the
            re-appearing instance spends outside the frame, >= 1.

    Returns:
        dict[str, str]: Paths of the written JSON files by split (``train``, ``valid``) and the
        frame root (``img_root``).
    """
    caller = 'make_association_vis'
    check_dataset_arguments(caller, num_videos, num_frames, size, num_val_videos)
    if not 3 <= instances_per_video[0] <= instances_per_video[1]:
        raise ValueError(f'{caller}: instances_per_video must be a range 3 <= low <= high '
                         f'(a crossing pair and a re-appearing instance), got '
                         f'{instances_per_video}')
    if not 1 <= absent_frames[0] <= absent_frames[1]:
        raise ValueError(f'{caller}: absent_frames must be a range 1 <= low <= high, got '
                         f'{absent_frames}')
    if num_frames < absent_frames[1] + 2:
        raise ValueError(f'{caller}: num_frames={num_frames} leaves no visible frame before and '
                         f'after a gap of {absent_frames[1]} frames (need at least '
                         f'{absent_frames[1] + 2})')
    return write_vis_dataset(
        out_dir, lambda video_index: render_association_video(
            (seed, video_index), num_frames, size, instances_per_video, absent_frames),
        num_videos, num_val_videos, seed, 'ctvis association VIS dataset', caller)
