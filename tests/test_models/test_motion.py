"""The tracker's motion cue: mask geometry, the centroid line, its support, and look-alikes that
cross, where the embeddings follow the query and only the motion keeps the identities."""
import math

import pytest
import torch

from ctvis.models import (CTVISTracker, MotionHistory, mask_centroids, mask_geometry,
                          tracker_binary_masks)


def box_logits(boxes, size=(16, 32)):
    """Mask logits (N, h, w): +10 inside each (row0, col0, row1, col1) box, -10 elsewhere; None
    gives an empty mask."""
    logits = torch.full((len(boxes), *size), -10.0)
    for i, box in enumerate(boxes):
        if box is not None:
            r0, c0, r1, c1 = box
            logits[i, r0:r1, c0:c1] = 10.0
    return logits


def test_mask_centroids_are_in_cells_with_centres_at_half():
    weights = torch.zeros(2, 4, 6)
    weights[0, 2, 3] = 1.0
    weights[1, 1, 0] = 1.0
    weights[1, 1, 4] = 3.0  # weighted: 3/4 of the way from column 0 to column 4
    centres = mask_centroids(weights)
    torch.testing.assert_close(centres, torch.tensor([[3.5, 2.5], [3.5, 1.5]]))
    assert torch.isnan(mask_centroids(torch.zeros(1, 4, 6))).all()


def test_mask_geometry_binarises_as_the_mask_nms():
    logits = box_logits([(2, 4, 6, 12), None])
    logits[0, 0, 0] = 0.0  # a logit of exactly 0 (probability 0.5) is outside the mask
    logits[0, 0, 1] = 1e-8  # positive, but its float32 sigmoid is 0.5: outside, as in the NMS
    geometry = mask_geometry(tracker_binary_masks(logits))
    torch.testing.assert_close(geometry[0], torch.tensor([8.0, 4.0, 32.0]))
    assert torch.isnan(geometry[1, :2]).all() and geometry[1, 2] == 0


def geometry_at(*points, area=math.pi * 4):
    """(N, 3) geometry rows of masks centred at ``points`` with radius-2 area (0 for None)."""
    return torch.tensor([[x, y, area] if (x, y) != (None, None) else [float('nan')] * 2 + [0.0]
                         for x, y in points])


def test_prediction_is_the_least_squares_line_over_the_last_observations():
    motion = MotionHistory(history=3)
    for frame, (x, y) in enumerate([(50.0, 0.0), (1.0, 0.0), (2.0, 1.0), (3.0, 2.0)]):
        motion.update([7], geometry_at((x, y)), frame)
    # frame 0's far-off point is beyond the history of 3: the line is x = t, y = t - 1
    x, y, radius = motion.predict(7, 6)
    assert (x, y) == pytest.approx((6.0, 5.0))
    assert radius == pytest.approx(2.0)
    assert motion.predict(8, 6) is None


def test_one_observation_predicts_its_position_and_empty_masks_say_nothing():
    motion = MotionHistory(history=5)
    motion.update([1, 2], geometry_at((4.0, 5.0), (None, None)), 0)
    motion.update([1], geometry_at((None, None)), 1)
    assert motion.predict(1, 9)[:2] == pytest.approx((4.0, 5.0))
    assert motion.predict(2, 9) is None
    motion.forget([1])
    assert motion.predict(1, 9) is None


def test_support_is_a_gaussian_in_units_of_the_track_radius():
    motion = MotionHistory(history=2)
    motion.update([3], geometry_at((10.0, 10.0)), 0)  # radius 2
    dets = geometry_at((10.0, 10.0), (13.0, 10.0), (None, None))
    support = motion.support([3, 4], dets, 1, sigma=1.5)  # track 4 was never seen
    # a centroid one sigma (1.5 radii = 3 cells) away scores exp(-1/2)
    torch.testing.assert_close(support[:, 0], torch.tensor([1.0, math.exp(-0.5), 0.0]))
    assert torch.isnan(support[:, 1]).all()


def crossing_frames(num_frames=8, swap_at=4):
    """Two look-alikes crossing on a 16x32 grid, A moving right, B left, 3 cells a frame.

    Their embeddings follow the query, not the object: query 0 covers A and query 1 B until
    ``swap_at``, then the other way round; the two embeddings differ only slightly, as
    look-alikes' do, so the embedding alone keeps each track on its query.
    """
    logits = torch.full((2, 5), -5.0)
    logits[:, 0] = 5.0  # both class 0
    embeds = torch.tensor([[3.0, 0.3], [3.0, -0.3]])
    frames = []
    for t in range(num_frames):
        a, b = 2 + 3 * t, 26 - 3 * t
        boxes = [(2, a, 6, a + 4), (9, b, 13, b + 4)]  # they pass each other, not overlapping
        if t >= swap_at:
            boxes = boxes[::-1]
        frames.append((logits, box_logits(boxes), embeds))
    return frames


def object_tracks(tracker, frames, swap_at=4):
    """{frame: (track of A, track of B)}."""
    tracks = {}
    for t, (logits, masks, embeds) in enumerate(frames):
        queries, ids = tracker.track(t, logits, masks, embeds)
        by_query = dict(zip(queries.tolist(), ids.tolist()))
        a_query = 0 if t < swap_at else 1
        tracks[t] = (by_query[a_query], by_query[1 - a_query])
    return tracks


def test_the_motion_cue_keeps_look_alikes_apart_where_the_embedding_follows_the_query():
    frames = crossing_frames()
    official = object_tracks(CTVISTracker(num_classes=4), frames)
    assert official[7] == official[0][::-1]  # the tracks swapped objects with the queries

    tracker = CTVISTracker(num_classes=4, motion_weight=0.3)
    with_motion = object_tracks(tracker, frames)
    assert all(with_motion[t] == with_motion[0] for t in with_motion)
    assert set(tracker.motion.tracks) == set(with_motion[0])


def test_motion_from_precomputed_geometry_matches_motion_from_masks():
    frames = crossing_frames()
    from_masks = CTVISTracker(num_classes=4, motion_weight=0.3)
    from_geometry = CTVISTracker(num_classes=4, motion_weight=0.3)
    for t, (logits, masks, embeds) in enumerate(frames):
        expected = from_masks.track(t, logits, masks, embeds)
        got = from_geometry.track(t, logits, None, embeds, mask_ious=torch.eye(2),
                                  geometry=mask_geometry(tracker_binary_masks(masks)))
        for e, g in zip(expected, got):
            assert torch.equal(e, g)


def test_motion_without_masks_or_geometry_is_refused():
    logits, masks, embeds = crossing_frames()[0]
    tracker = CTVISTracker(num_classes=4, motion_weight=0.3)
    with pytest.raises(ValueError, match=r'CTVISTracker: the motion cue \(motion_weight 0.3\) '
                       'needs mask_logits or geometry'):
        tracker.track(0, logits, None, embeds, mask_ious=torch.eye(2))
    CTVISTracker(num_classes=4).track(0, logits, None, embeds, mask_ious=torch.eye(2))


def test_dead_tracks_leave_the_motion_history_and_a_new_video_starts_empty():
    frames = crossing_frames()
    tracker = CTVISTracker(num_classes=4, motion_weight=0.3, num_dead_frames=1)
    logits, masks, embeds = frames[0]
    tracker.track(0, logits, masks, embeds)
    assert len(tracker.motion.tracks) == 2
    tracker.track(1, logits[:1], masks[:1], embeds[:1])
    tracker.track(3, logits[:1], masks[:1], embeds[:1])  # the other track unseen for 2 frames
    assert len(tracker.motion.tracks) == len(tracker.memory) == 1
    tracker.track(0, logits, masks, embeds)
    assert len(tracker.motion.tracks) == 2


def test_two_observations_extrapolate_and_a_one_cell_mask_has_radius_one():
    """The line needs two centroids, not three; a radius is at least one cell (a 1-cell mask's
    disc radius, sqrt(1 / pi), would make the cue's width below a cell)."""
    motion = MotionHistory(history=10)
    for frame, x in ((0, 0.0), (1, 10.0)):
        motion.update([3], torch.tensor([[x, 5.0, math.pi * 4]]), frame)
    assert motion.predict(3, 2) == pytest.approx((20.0, 5.0, 2.0))
    motion.update([1], torch.tensor([[2.0, 2.0, 1.0]]), 0)
    assert motion.predict(1, 1)[2] == 1.0


def test_a_track_seen_only_with_empty_masks_matches_on_its_embedding():
    """The cue has no prediction for it (a NaN column): its embedding score stands alone."""
    tracker = CTVISTracker(num_classes=1, motion_weight=0.5)
    logits, embeds = torch.tensor([[5.0, -5.0]]), torch.ones(1, 4)
    tracker.track(0, logits, torch.full((1, 8, 8), -10.0), embeds)
    assert tracker.motion.support([0], torch.tensor([[1.0, 1.0, 4.0]]), 1, 1.0).isnan().all()
    _, ids = tracker.track(1, logits, torch.full((1, 8, 8), 10.0), embeds)
    assert ids.tolist() == [0]
