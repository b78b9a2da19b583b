"""ctvis.engine.track_drawing: the demo's and the test-time hook's drawing of tracks."""
import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from mmengine.structures import InstanceData

from ctvis.datasets.synthetic.toy import render_toy_video
from ctvis.engine import draw_tracks, track_color
from ctvis.engine.track_drawing import label_font, place_labels

TOY_SIZE = (96, 128)  # the quickstart's frames


@pytest.fixture(scope='module')
def toy_frames():
    return render_toy_video((5, 0), 6, TOY_SIZE).frames


def test_track_color_is_fixed_per_id_vivid_and_far_apart_for_neighbours():
    colors = [track_color(track_id) for track_id in range(12)]
    assert colors == [track_color(track_id) for track_id in range(12)]  # depends on the id only
    assert len(set(colors)) == 12
    assert all(isinstance(c, int) and 0 <= c <= 255 for color in colors for c in color)
    hsv = cv2.cvtColor(np.uint8([colors]), cv2.COLOR_BGR2HSV)[0].astype(int)
    assert (hsv[:, 1] >= 190).all() and (hsv[:, 2] == 255).all()  # saturated and bright
    hue_steps = np.abs(np.diff(hsv[:, 0]))
    assert (np.minimum(hue_steps, 180 - hue_steps) >= 60).all()  # neighbours differ in hue


def test_label_font_grows_with_the_canvas():
    small, large = label_font((480, 640)), label_font((1080, 1920))
    assert small[0] < large[0] and small[1] <= large[1]
    assert label_font((96, 128))[0] == 0.35  # never below a legible minimum


def overlap(a, b) -> bool:
    (ax, ay, aw, ah), (bx, by, bw, bh) = a, b
    return ax < bx + bw and bx < ax + aw and ay < by + bh and by < ay + ah


def test_labels_of_neighbouring_objects_are_not_drawn_over_each_other():
    anchors = [(100, 200, 160, 260), (110, 205, 170, 270), (90, 198, 150, 250)]
    sizes = [(120, 20)] * 3
    corners = place_labels(anchors, sizes, (480, 640))
    boxes = [(x, y, w, h) for (x, y), (w, h) in zip(corners, sizes)]
    assert corners[0] == (100, 180)  # the first label sits right above its object
    assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert all(abs(y - 190) <= 40 for _, y in corners)  # and the others stay near theirs
    # An object at the top edge gets its label over its top; every label stays inside the frame
    corners = place_labels([(620, 5, 639, 30)], [(120, 20)], (480, 640))
    assert corners == [(520, 0)]


def test_draw_tracks_upscales_and_labels_each_track_in_its_colour(toy_frames):
    frame = toy_frames[0]
    masks = np.zeros((2, *TOY_SIZE), np.uint8)
    masks[0, 40:60, 30:50] = 1
    masks[1, 42:62, 50:70] = 1  # a touching neighbour
    tracks = InstanceData(
        instances_id=torch.tensor([3, 8]), labels=torch.tensor([0, 1]),
        scores=torch.tensor([0.9, 0.8]),
        masks=[mask_util.encode(np.asfortranarray(m)) for m in masks])
    canvas = draw_tracks(frame, tracks, ('disc', 'square'), 0.3, scale=5)
    assert canvas.shape == (480, 640, 3)
    for track_id in (3, 8):  # each label box is filled with its track's colour
        assert (np.abs(canvas.astype(int) - track_color(track_id)).sum(-1) == 0).sum() > 500
    hidden = draw_tracks(frame, tracks, ('disc', 'square'), 0.85, scale=1)
    assert (np.abs(hidden.astype(int) - track_color(8)).sum(-1) == 0).sum() == 0


def test_draw_tracks_skips_absent_tracks_and_scores_at_the_threshold():
    """mmdet's convention: a track scoring exactly ``score_thr`` is not drawn; a track without
    a mask in this frame (None) neither; the input frame is never drawn on."""
    frame = np.full((40, 48, 3), 100, np.uint8)
    mask = np.zeros((40, 48), np.uint8)
    mask[10:30, 10:30] = 1
    rle = mask_util.encode(np.asfortranarray(mask))
    tracks = InstanceData(instances_id=torch.tensor([1, 2]), labels=torch.tensor([0, 0]),
                          scores=torch.tensor([0.5, 0.9]), masks=[rle, None])
    assert (draw_tracks(frame, tracks, None, 0.5) == 100).all()
    drawn = draw_tracks(frame, tracks, None, 0.49)
    assert (drawn[20, 20] == (0.5 * 100 + 0.5 * np.array(track_color(1))).astype(np.uint8)).all()
    assert (frame == 100).all()
