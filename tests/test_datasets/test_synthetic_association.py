"""The association VIS dataset: every video has look-alikes, a crossing with occlusion and a
re-appearance after several absent frames, counted from the written annotations; determinism."""
import json
import os.path as osp
from collections import Counter
from typing import Dict, List, Optional

import numpy as np
import pytest

from ctvis.datasets.synthetic.association import (BACK_RADIUS_RATIO, make_association_vis,
                                                  render_association_video)
from ctvis.datasets.synthetic.toy import TOY_CLASSES
from conftest import REPO

SIZE = (48, 64)
NUM_TRAIN, NUM_VAL, NUM_FRAMES = 10, 4, 12
ABSENT = (3, 5)
OCCLUDED_FRACTION = 0.5  # an instance counts as occluded below this fraction of its largest area


@pytest.fixture(scope='module')
def assoc_dir(tmp_path_factory) -> str:
    out_dir = str(tmp_path_factory.mktemp('association'))
    make_association_vis(out_dir, NUM_TRAIN, NUM_FRAMES, seed=3, size=SIZE,
                         num_val_videos=NUM_VAL, absent_frames=ABSENT)
    return out_dir


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _videos(out_dir: str) -> Dict[tuple, List[dict]]:
    """Annotations per (split, video id), in annotation order."""
    videos: Dict[tuple, List[dict]] = {}
    for split in ('train', 'valid'):
        for ann in _load(osp.join(out_dir, f'{split}.json'))['annotations']:
            videos.setdefault((split, ann['video_id']), []).append(ann)
    return videos


def _centre(bbox: Optional[list]) -> Optional[np.ndarray]:
    return None if bbox is None else np.array([bbox[0] + bbox[2] / 2, bbox[1] + bbox[3] / 2])


def _overlap(a: list, b: list) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def longest_gap(ann: dict) -> int:
    """Most consecutive absent (null) frames between two frames where the instance is visible."""
    present = [t for t, seg in enumerate(ann['segmentations']) if seg is not None]
    return max([after - before - 1 for before, after in zip(present, present[1:])], default=0)


def occluded_crossing(front: dict, back: dict) -> bool:
    """Two instances cross (their bbox centres swap sides) and one hides most of the other.

    Crossing: the centre offset between them at the first and at the last frame where both are
    visible point in opposite directions. Occlusion: at some frame ``back`` is absent or under
    half its largest area while its last visible box overlaps ``front``'s box.
    """
    both = [t for t, (a, b) in enumerate(zip(front['bboxes'], back['bboxes']))
            if a is not None and b is not None]
    if len(both) < 2:
        return False
    first, last = both[0], both[-1]
    offset_first = _centre(back['bboxes'][first]) - _centre(front['bboxes'][first])
    offset_last = _centre(back['bboxes'][last]) - _centre(front['bboxes'][last])
    if offset_first @ offset_last >= 0:
        return False
    largest = max(area for area in back['areas'] if area is not None)
    last_box = None
    for t in range(first, last + 1):
        area, box = back['areas'][t], back['bboxes'][t]
        last_box = box if box is not None else last_box
        hidden = area is None or area < OCCLUDED_FRACTION * largest
        if hidden and front['bboxes'][t] is not None and _overlap(last_box, front['bboxes'][t]):
            return True
    return False


def test_every_video_has_look_alikes_a_crossing_with_occlusion_and_a_reappearance(assoc_dir):
    videos = _videos(assoc_dir)
    assert len(videos) == NUM_TRAIN + NUM_VAL
    for key, anns in videos.items():
        counts = Counter(ann['category_id'] for ann in anns)
        assert max(counts.values()) >= 3, (key, counts)  # three look-alikes at least
        # some same-class pair crosses with occlusion (the generator's instances 0 and 1)
        assert any(occluded_crossing(a, b) for a in anns for b in anns
                   if a is not b and a['category_id'] == b['category_id']), key
        assert max(longest_gap(ann) for ann in anns) >= ABSENT[0], key


def test_event_counters_reject_what_is_not_an_event():
    """The counters above are not vacuous: a steady instance has no gap, parallel ones no
    crossing, a crossing without occlusion is no occluded crossing."""
    box = [10.0, 10.0, 8.0, 8.0]
    steady = dict(segmentations=['rle'] * 5, bboxes=[box] * 5, areas=[64] * 5)
    assert longest_gap(steady) == 0
    gap = dict(steady, segmentations=['rle', None, None, 'rle', 'rle'])
    assert longest_gap(gap) == 2
    moving = dict(bboxes=[[10.0 + 5 * t, 10.0, 8.0, 8.0] for t in range(5)], areas=[64] * 5)
    parallel = dict(bboxes=[[10.0 + 5 * t, 30.0, 8.0, 8.0] for t in range(5)], areas=[64] * 5)
    assert not occluded_crossing(moving, parallel)
    crossing = dict(bboxes=[[30.0 - 5 * t, 10.0, 8.0, 8.0] for t in range(5)], areas=[64] * 5)
    assert not occluded_crossing(moving, crossing)  # crosses, never loses area
    hidden = dict(crossing, areas=[64, 64, 20, 64, 64])
    assert occluded_crossing(moving, hidden)


def test_rendered_events_are_exact():
    """In the rendering: instance 2 is off-frame for exactly the drawn gap (here fixed at 4),
    visible in the frames around it; instance 1 is behind and smaller than instance 0."""
    for video_index in range(6):
        video = render_association_video((11, video_index), NUM_FRAMES, SIZE, (3, 5), (4, 4))
        drawn = video.full_masks[2].any(axis=(1, 2))
        absent = np.flatnonzero(~drawn)
        assert len(absent) == 4 and np.all(np.diff(absent) == 1), drawn
        assert 0 < absent[0] and absent[-1] < NUM_FRAMES - 1
        assert list(video.depth_order[-2:]) == [1, 0]
        assert len(set(video.labels[:3].tolist())) == 1
        area_front, area_back = video.full_masks[0].sum((1, 2)), video.full_masks[1].sum((1, 2))
        inside = (area_front > 0) & (area_back > 0)
        assert inside.any()
        # area ratio of shapes whose radii are at most BACK_RADIUS_RATIO apart (clipping aside)
        assert np.median(area_back[inside] / area_front[inside]) < BACK_RADIUS_RATIO


def test_same_arguments_give_identical_bytes(assoc_dir, tmp_path):
    again = str(tmp_path / 'again')
    make_association_vis(again, NUM_TRAIN, NUM_FRAMES, seed=3, size=SIZE,
                         num_val_videos=NUM_VAL, absent_frames=ABSENT)
    for name in ('train.json', 'valid.json', 'JPEGImages/train_00002/00005.jpg'):
        with open(osp.join(assoc_dir, name), 'rb') as a, open(osp.join(again, name), 'rb') as b:
            assert a.read() == b.read(), name
    other = make_association_vis(str(tmp_path / 'other'), NUM_TRAIN, NUM_FRAMES, seed=4,
                                 size=SIZE, absent_frames=ABSENT)
    assert _load(other['train'])['annotations'] != \
        _load(osp.join(assoc_dir, 'train.json'))['annotations']
    # validation videos do not change the training videos
    no_val = make_association_vis(str(tmp_path / 'no_val'), NUM_TRAIN, NUM_FRAMES, seed=3,
                                  size=SIZE, absent_frames=ABSENT)
    assert _load(no_val['train'])['annotations'] == \
        _load(osp.join(assoc_dir, 'train.json'))['annotations']


def test_layout_is_the_toy_layout(assoc_dir):
    data = _load(osp.join(assoc_dir, 'valid.json'))
    assert [c['name'] for c in data['categories']] == list(TOY_CLASSES)
    assert data['info']['description'] == 'ctvis association VIS dataset (valid)'
    assert len(data['videos']) == NUM_VAL
    assert all(v['length'] == NUM_FRAMES and len(v['file_names']) == NUM_FRAMES
               for v in data['videos'])


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_videos=0), 'num_videos'),
    (dict(instances_per_video=(2, 4)), 'instances_per_video'),
    (dict(absent_frames=(0, 2)), 'absent_frames'),
    (dict(num_frames=6, absent_frames=(3, 5)), 'num_frames=6'),
])
def test_bad_arguments_raise(tmp_path, kwargs, message):
    arguments = dict(num_videos=1, num_frames=12)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        make_association_vis(str(tmp_path), **arguments)


def test_shortest_video_that_fits_the_gap(tmp_path):
    """num_frames = absent_frames max + 2 is accepted (one visible frame on each side)."""
    paths = make_association_vis(str(tmp_path), 2, 7, size=SIZE, absent_frames=(5, 5))
    for ann in _load(paths['train'])['annotations']:
        assert len(ann['segmentations']) == 7


def test_smallest_ranges_are_accepted(tmp_path):
    """Three instances and a one-frame gap are the smallest valid settings."""
    paths = make_association_vis(str(tmp_path), 2, 12, size=SIZE, instances_per_video=(3, 3),
                                 absent_frames=(1, 1))
    anns = _load(paths['train'])['annotations']
    assert Counter(ann['video_id'] for ann in anns) == {1: 3, 2: 3}
    assert all(max(longest_gap(ann) for ann in anns if ann['video_id'] == v) >= 1 for v in (1, 2))


def test_cli_writes_the_association_kind(tmp_path, monkeypatch):
    import runpy
    import sys

    script = osp.join(REPO, 'tools', 'misc', 'make_toy_vis.py')
    out_dir = tmp_path / 'cli'
    monkeypatch.setattr(sys, 'argv', [script, str(out_dir), '--kind', 'association', '--videos',
                                      '2', '--frames', '8', '--size', '32', '48',
                                      '--absent-frames', '2', '2'])
    runpy.run_path(script, run_name='__main__')
    expected = make_association_vis(str(tmp_path / 'api'), 2, 8, size=(32, 48),
                                    absent_frames=(2, 2))
    assert _load(str(out_dir / 'annotations.json')) == _load(expected['train'])
    monkeypatch.setattr(sys, 'argv', [script, str(tmp_path / 'bad'), '--absent-frames', '2', '2'])
    with pytest.raises(SystemExit):
        runpy.run_path(script, run_name='__main__')
