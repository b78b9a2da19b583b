"""The built-in toy VIS dataset: determinism, YouTube-VIS layout, exact masks, tracking events."""
import json
import os
import os.path as osp
import runpy
import sys
from collections import Counter

import cv2
import numpy as np
import pycocotools.mask as mask_util
import pytest

from ctvis.datasets.synthetic.toy import TOY_CLASSES, make_toy_vis, render_toy_video
from conftest import REPO

# pycocotools 2.0.11 on numpy 2 warns about the copy keyword on every decode.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

SIZE = (96, 128)
NUM_TRAIN, NUM_VAL, NUM_FRAMES = 12, 3, 16


@pytest.fixture(scope='module')
def toy_dir(tmp_path_factory) -> str:
    out_dir = str(tmp_path_factory.mktemp('toy'))
    make_toy_vis(out_dir, NUM_TRAIN, NUM_FRAMES, seed=7, size=SIZE, num_val_videos=NUM_VAL)
    return out_dir


def _load(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _touches_border(bbox, height: int, width: int) -> bool:
    x, y, w, h = bbox
    return x <= 0 or y <= 0 or x + w >= width or y + h >= height


def test_same_arguments_give_identical_bytes(toy_dir, tmp_path):
    again = str(tmp_path / 'again')
    make_toy_vis(again, NUM_TRAIN, NUM_FRAMES, seed=7, size=SIZE, num_val_videos=NUM_VAL)
    for name in ('train.json', 'valid.json'):
        with open(osp.join(toy_dir, name), 'rb') as a, open(osp.join(again, name), 'rb') as b:
            assert a.read() == b.read(), name
    for frame in ('train_00003/00007.jpg', 'valid_00001/00000.jpg'):
        with open(osp.join(toy_dir, 'JPEGImages', frame), 'rb') as a, \
                open(osp.join(again, 'JPEGImages', frame), 'rb') as b:
            assert a.read() == b.read(), frame

    other_seed = str(tmp_path / 'other')
    make_toy_vis(other_seed, 2, 4, seed=8, size=SIZE)
    first_two = make_toy_vis(str(tmp_path / 'same_seed'), 2, 4, seed=7, size=SIZE)
    assert _load(osp.join(other_seed, 'annotations.json'))['annotations'] != \
        _load(first_two['train'])['annotations']


def test_validation_videos_do_not_change_training_videos(toy_dir, tmp_path):
    paths = make_toy_vis(str(tmp_path / 'no_val'), NUM_TRAIN, NUM_FRAMES, seed=7, size=SIZE)
    assert osp.basename(paths['train']) == 'annotations.json'
    assert _load(paths['train'])['annotations'] == \
        _load(osp.join(toy_dir, 'train.json'))['annotations']


def test_regenerating_in_the_other_layout_removes_the_old_split_files(tmp_path):
    """With no validation videos the training videos go to annotations.json: an earlier run's
    train.json and valid.json stayed beside it, and the quickstart kept reading them."""
    root = str(tmp_path / 'toy')
    make_toy_vis(root, 2, 3, num_val_videos=1, seed=0, size=SIZE)
    assert {'train.json', 'valid.json'} <= set(os.listdir(root))
    make_toy_vis(root, 2, 3, num_val_videos=0, seed=0, size=SIZE)
    assert {f for f in os.listdir(root) if f.endswith('.json')} == {'annotations.json'}
    make_toy_vis(root, 2, 3, num_val_videos=1, seed=0, size=SIZE)
    assert {f for f in os.listdir(root) if f.endswith('.json')} == {'train.json', 'valid.json'}


def test_json_is_standard_ytvis_and_decodes(toy_dir):
    height, width = SIZE
    for split, num_videos in (('train', NUM_TRAIN), ('valid', NUM_VAL)):
        data = _load(osp.join(toy_dir, f'{split}.json'))
        assert {'videos', 'annotations', 'categories'} <= set(data)
        assert [(c['id'], c['name']) for c in data['categories']] == \
            list(enumerate(TOY_CLASSES, 1))
        assert [v['id'] for v in data['videos']] == list(range(1, num_videos + 1))
        lengths = {}
        for video in data['videos']:
            assert (video['height'], video['width'], video['length']) == (height, width,
                                                                          NUM_FRAMES)
            assert len(video['file_names']) == NUM_FRAMES
            for file_name in video['file_names']:
                assert osp.isfile(osp.join(toy_dir, 'JPEGImages', file_name))
            lengths[video['id']] = video['length']
        assert len({a['id'] for a in data['annotations']}) == len(data['annotations'])
        for ann in data['annotations']:
            assert 1 <= ann['category_id'] <= len(TOY_CLASSES) and ann['iscrowd'] == 0
            length = lengths[ann['video_id']]
            assert len(ann['segmentations']) == len(ann['bboxes']) == len(ann['areas']) == length
            assert any(seg is not None for seg in ann['segmentations'])
            for seg, bbox, area in zip(ann['segmentations'], ann['bboxes'], ann['areas']):
                if seg is None:
                    assert bbox is None and area is None
                    continue
                mask = mask_util.decode(seg)
                assert mask.shape == SIZE and mask.sum() == area > 0
                assert mask_util.toBbox(seg).tolist() == bbox
                assert mask_util.area(seg) == area


def test_readable_by_the_ytvis_api(toy_dir):
    """mmdet's port of the official YouTube-VIS API loads the file and rebuilds the masks."""
    from mmdet.evaluation.functional.ytvis import YTVIS

    api = YTVIS(osp.join(toy_dir, 'valid.json'))
    ann_ids = api.getAnnIds(vidIds=[1])
    assert ann_ids
    ann = api.loadAnns(ann_ids[:1])[0]
    frame = next(i for i, seg in enumerate(ann['segmentations']) if seg is not None)
    assert api.annToMask(ann, frame).sum() == ann['areas'][frame]


def test_official_evaluation_scores_the_ground_truth_as_perfect(toy_dir, monkeypatch):
    from mmdet.evaluation.functional.ytvis import YTVIS
    from mmdet.evaluation.functional.ytviseval import YTVISeval

    # mmdet's port of the official evaluation still uses np.float (removed in numpy 1.24);
    # ctvis no longer patches numpy on import, so the test provides it for the port alone
    monkeypatch.setattr(np, 'float', float, raising=False)

    ann_file = osp.join(toy_dir, 'valid.json')
    api = YTVIS(ann_file)
    results = [dict(video_id=a['video_id'], category_id=a['category_id'],
                    segmentations=a['segmentations'], score=1.0)
               for a in _load(ann_file)['annotations']]
    evaluator = YTVISeval(api, api.loadRes(results), 'segm')
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)  # AP


def test_masks_match_the_rendered_colours(toy_dir):
    """Inside each mask the JPEG shows the class colour family; outside all masks it does not."""
    class_rgb = np.array([(220, 45, 40), (45, 185, 60), (50, 85, 230), (240, 200, 35)], float)
    data = _load(osp.join(toy_dir, 'train.json'))
    names = {v['id']: v['file_names'] for v in data['videos']}
    by_frame = {}
    for ann in data['annotations']:
        for t, seg in enumerate(ann['segmentations']):
            if seg is not None:
                by_frame.setdefault((ann['video_id'], t), []).append(
                    (ann['category_id'] - 1, mask_util.decode(seg).astype(bool)))
    checked = 0
    kernel = np.ones((3, 3), np.uint8)
    for (video_id, t), instances in list(by_frame.items())[::5]:
        bgr = cv2.imread(osp.join(toy_dir, 'JPEGImages', names[video_id][t]))
        rgb = bgr[..., ::-1].astype(float)
        chroma_range = rgb.max(2) - rgb.min(2)  # 0 for grey, large for saturated colours
        union = np.zeros(SIZE, bool)
        for label, mask in instances:
            union |= mask
            core = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
            if core.sum() < 30:
                continue
            # The texture's dark shade is the base colour scaled, so compare chromaticity.
            mean = rgb[core].mean(0)
            chroma = mean / mean.sum()
            nearest = np.argmin(np.abs(class_rgb / class_rgb.sum(1, keepdims=True) -
                                       chroma).sum(1))
            assert nearest == label, (video_id, t, label, mean)
            assert (chroma_range[core] > 55).mean() > 0.9
            checked += 1
        outside = ~cv2.dilate(union.astype(np.uint8), kernel, iterations=2).astype(bool)
        assert (chroma_range[outside] > 55).mean() < 0.01
    assert checked > 20


def test_rendered_masks_are_exact_visible_parts():
    video = render_toy_video((3, 1), 12, SIZE)
    visible, full = video.visible_masks, video.full_masks
    assert video.frames.shape == (12, *SIZE, 3) and visible.shape == full.shape
    assert not (visible & ~full).any()  # visible parts are parts of the drawn shape
    assert (visible.sum(0) <= 1).all()  # every pixel belongs to at most one instance
    # The nearest shape is never occluded; a farther one loses what nearer ones cover.
    nearest = video.depth_order[-1]
    assert (visible[nearest] == full[nearest]).all()
    for rank, index in enumerate(video.depth_order):
        nearer = video.depth_order[rank + 1:]
        covered = full[nearer].any(0) if len(nearer) else np.zeros_like(full[index])
        assert (visible[index] == (full[index] & ~covered)).all()


def test_occlusion_and_reentry_events_occur(toy_dir):
    """The annotations contain occlusions, leave-and-re-enter gaps and look-alike instances."""
    height, width = SIZE
    data = _load(osp.join(toy_dir, 'train.json'))
    reentries = 0
    for ann in data['annotations']:
        present = [t for t, seg in enumerate(ann['segmentations']) if seg is not None]
        for before, after in zip(present, present[1:]):
            if after > before + 1 and _touches_border(ann['bboxes'][before], height, width) \
                    and _touches_border(ann['bboxes'][after], height, width):
                reentries += 1
    assert reentries >= 3

    # Occlusion: in the rendered videos behind the JSON, an instance fully inside the frame
    # loses pixels to a nearer one, and its annotated area is the visible area only.
    occluded = 0
    for video_index in range(NUM_TRAIN):
        video = render_toy_video((7, video_index), NUM_FRAMES, SIZE)
        anns = [a for a in data['annotations'] if a['video_id'] == video_index + 1]
        visible_tracks = [m for m in video.visible_masks if m.any()]
        full_tracks = [f for m, f in zip(video.visible_masks, video.full_masks) if m.any()]
        assert len(anns) == len(visible_tracks)
        for ann, visible, full in zip(anns, visible_tracks, full_tracks):
            for t in range(NUM_FRAMES):
                inside = full[t].any() and not (full[t][0].any() or full[t][-1].any()
                                                or full[t][:, 0].any() or full[t][:, -1].any())
                if inside and 0 < visible[t].sum() < full[t].sum():
                    occluded += 1
                    assert ann['areas'][t] == visible[t].sum()
    assert occluded >= 10

    per_video = Counter()
    for ann in data['annotations']:
        per_video[(ann['video_id'], ann['category_id'])] += 1
    assert sum(count > 1 for count in per_video.values()) >= 3  # look-alike instances


def test_cli_writes_the_layout(tmp_path, monkeypatch):
    out_dir = tmp_path / 'cli'
    script = osp.join(REPO, 'tools', 'misc', 'make_toy_vis.py')
    monkeypatch.setattr(sys, 'argv', [script, str(out_dir), '--videos', '2', '--frames', '3',
                                      '--seed', '1', '--size', '40', '56', '--val-videos', '0'])
    runpy.run_path(script, run_name='__main__')
    assert sorted(os.listdir(out_dir)) == ['JPEGImages', 'annotations.json']
    # what the generator cannot make is a one-line error, not a traceback
    for option, message in ((['--size', '8', '8'], 'error: make_toy_vis: frame size (8, 8) is '
                             'too small'), (['--seed', '-1'], None)):
        monkeypatch.setattr(sys, 'argv', [script, str(tmp_path / 'bad'), *option])
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(script, run_name='__main__')
        assert message is None or str(exit_info.value.code).startswith(message)
    assert sorted(os.listdir(out_dir / 'JPEGImages')) == ['train_00000', 'train_00001']
    frames = sorted(os.listdir(out_dir / 'JPEGImages' / 'train_00001'))
    assert frames == ['00000.jpg', '00001.jpg', '00002.jpg']
    assert cv2.imread(str(out_dir / 'JPEGImages' / 'train_00001' / '00002.jpg')).shape == \
        (40, 56, 3)
    data = _load(str(out_dir / 'annotations.json'))
    assert [v['file_names'][0] for v in data['videos']] == ['train_00000/00000.jpg',
                                                             'train_00001/00000.jpg']


def test_ytvis_dataset_reads_the_toy_data(toy_dir):
    from ctvis.datasets import YTVISDataset

    dataset = YTVISDataset(ann_file=osp.join(toy_dir, 'valid.json'),
                           data_prefix=dict(img_path=osp.join(toy_dir, 'JPEGImages')),
                           pipeline=[])
    assert dataset.metainfo['classes'] == TOY_CLASSES
    assert len(dataset) == NUM_VAL
    video = dataset.get_data_info(0)
    assert video['video_length'] == NUM_FRAMES and len(video['images']) == NUM_FRAMES


def test_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match='num_videos'):
        make_toy_vis(str(tmp_path), 0, 4)
    with pytest.raises(ValueError, match='too small'):
        make_toy_vis(str(tmp_path), 1, 4, size=(8, 8))
    with pytest.raises(ValueError, match='instances_per_video'):
        make_toy_vis(str(tmp_path), 1, 4, instances_per_video=(3, 2))


def test_outputs_are_those_of_the_generator_before_the_refactor(tmp_path):
    """Refactoring toy.py for the association set (render_tracks, make_shape_track,
    write_vis_dataset) changed no output: values recorded with the code before it (commit 494edb9).
    The rendered masks are hashed rather than the JPEGs, whose bytes depend on libjpeg."""
    import hashlib

    video = render_toy_video((3, 1), 12, SIZE)
    digest = hashlib.sha256()
    for array in (video.visible_masks, video.full_masks, video.labels, video.depth_order):
        digest.update(array.tobytes())
    assert digest.hexdigest() == \
        '84d43dda2073715d72c2ffb94d5d85678af729251f5411276742485831345740'
    # The frames by their mean colour (B, G, R): robust to last-bit differences of OpenCV's
    # resize across CPUs, yet a 1 % change of the shapes' brightness range moves it by 0.1
    assert video.frames.reshape(-1, 3).mean(0) == pytest.approx([111.1686, 117.782, 113.0073],
                                                                  abs=0.01)
    paths = make_toy_vis(str(tmp_path), 4, 6, seed=5, size=(40, 56), num_val_videos=2,
                         instances_per_video=(1, 5))
    for split, expected in (
            ('train', '10544696c4312ef92bb96d257cf2ecf6e88538ca7e96c850fc4c77028d320b1e'),
            ('valid', '580716e72faaa008ad53047f03c5d83a905355d8c700795e6cfb312aee9731f5')):
        with open(paths[split], 'rb') as f:
            assert hashlib.sha256(f.read()).hexdigest() == expected, split
