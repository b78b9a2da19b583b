"""Real-video data: YTVIS/OVIS/custom JSON parsing and validation, clip sampling, clip-consistent
augmentation, and the train/test pipelines of docs/dataset_prepare.md on tiny synthetic videos."""
import contextlib
import copy
import json
import logging
import os
import os.path as osp
import re
import shutil
import time
from typing import Callable, Dict, List

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from mmengine.dataset import Compose
from mmengine.logging import MMLogger
from mmengine.registry import init_default_scope
from mmengine.runner import Runner

from ctvis.datasets import (DropEmptyMaskInstances, MissingFrameError, VideoClipSample,
                            YTVISDataset, YTVISFormatError)
from conftest import REPO
from ctvis.datasets.synthetic.annotations import rle_of
from ctvis.datasets.ytvis import OVIS_CLASSES, YTVIS_2019_CLASSES, YTVIS_2021_CLASSES
from ctvis.datasets.ytvis_format import loading as ytvis_format_loading
from ctvis.datasets.ytvis_format.rle import check_compressed_counts
from ctvis.utils.config_tools import update_step
from mmdet.datasets.samplers import TrackImgSampler
from mmdet.registry import DATASETS, MODELS
from mmdet.structures import TrackDataSample
from mmdet.structures.mask import BitmapMasks

DOC = osp.join(REPO, 'docs', 'dataset_prepare.md')


@pytest.fixture(autouse=True)
def mmdet_scope():
    init_default_scope('mmdet')


# ----------------------------------------------------------------------------- tiny data
def rect_mask(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def categories(names) -> List[dict]:
    return [dict(id=i + 1, name=name) for i, name in enumerate(names)]


def write_frames(folder: str, images: List[np.ndarray]) -> List[str]:
    os.makedirs(folder, exist_ok=True)
    names = []
    for t, image in enumerate(images):
        cv2.imwrite(osp.join(folder, f'{t:05d}.jpg'), image)
        names.append(f'{osp.basename(folder)}/{t:05d}.jpg')
    return names


def noise_frames(num: int, h: int, w: int, seed: int) -> List[np.ndarray]:
    rng = np.random.RandomState(seed)
    return [rng.randint(0, 255, (h, w, 3), np.uint8) for _ in range(num)]


def tiny_vis(root: str, cats: List[dict]) -> dict:
    """Three videos that use every mask flavour; category ids are the first and third of
    ``cats``. Video 1 (4 frames, 24x32): track 11 uncompressed RLE with a null frame and given
    boxes, track 12 compressed RLE without boxes. Video 2 (3 frames, 20x28): track 13 polygons,
    track 14 a crowd. Video 3 (2 frames): no annotations."""
    cat_a, cat_b = cats[0]['id'], cats[2]['id']
    v1 = write_frames(osp.join(root, 'JPEGImages', 'vid_a'), noise_frames(4, 24, 32, 1))
    v2 = write_frames(osp.join(root, 'JPEGImages', 'vid_b'), noise_frames(3, 20, 28, 2))
    v3 = write_frames(osp.join(root, 'JPEGImages', 'vid_c'), noise_frames(2, 16, 16, 3))
    m11 = [rect_mask(24, 32, 2, 10, 3 + t, 12 + t) for t in range(4)]
    m12 = [rect_mask(24, 32, 12, 20, 20 - t, 30 - t) for t in range(4)]
    return dict(
        info={}, licenses=[], categories=cats,
        videos=[
            dict(id=1, file_names=v1, length=4, height=24, width=32),
            dict(id=2, file_names=v2, length=3, height=20, width=28),
            dict(id=3, file_names=v3, length=2, height=16, width=16),
        ],
        annotations=[
            dict(id=11, video_id=1, category_id=cat_a, iscrowd=0,
                 segmentations=[rle_of(m11[0], 'list'), rle_of(m11[1], 'list'), None,
                                rle_of(m11[3], 'list')],
                 bboxes=[[3, 2, 9, 8], [4, 2, 9, 8], None, [6, 2, 9, 8]],
                 areas=[72, 72, None, 72]),
            dict(id=12, video_id=1, category_id=cat_b, iscrowd=0,
                 segmentations=[rle_of(m) for m in m12]),
            dict(id=13, video_id=2, category_id=cat_a, iscrowd=0,
                 segmentations=[[[2.0, 3.0, 12.0, 3.0, 12.0, 9.0, 2.0, 9.0]]] * 3,
                 bboxes=[None, None, None]),
            dict(id=14, video_id=2, category_id=cat_b, iscrowd=1,
                 segmentations=[rle_of(rect_mask(20, 28, 0, 5, 0, 5)), None, None]),
        ])


def dump(root: str, raw: dict, name: str = 'train.json') -> str:
    path = osp.join(root, name)
    with open(path, 'w') as f:
        json.dump(raw, f)
    return path


def build(root: str, ann_file: str = 'train.json', dataset_type: str = 'YTVISDataset',
          **kwargs) -> YTVISDataset:
    return DATASETS.build(dict(type=dataset_type, data_root=root, ann_file=ann_file,
                               data_prefix=dict(img_path='JPEGImages'), **kwargs))


def videos(dataset: YTVISDataset) -> List[dict]:
    return [dataset.get_data_info(i) for i in range(len(dataset))]


class LogRecords(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: List[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def log_records():
    logger = MMLogger.get_current_instance()
    handler = LogRecords()
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)


# ----------------------------------------------------------------------------- parsing
CUSTOM_CATEGORIES = [dict(id=7, name='dog'), dict(id=3, name='cat'), dict(id=5, name='emu')]
FLAVOURS = {
    # dataset type, dataset kwargs, JSON categories, expected classes, labels of tracks 11..14
    '2019': ('YTVISDataset', dict(dataset_version='2019'), categories(YTVIS_2019_CLASSES),
             YTVIS_2019_CLASSES, [0, 2, 0, 2]),
    '2021': ('YTVISDataset', dict(dataset_version='2021'), categories(YTVIS_2021_CLASSES),
             YTVIS_2021_CLASSES, [0, 2, 0, 2]),
    '2022': ('YTVISDataset', dict(dataset_version='2022'), categories(YTVIS_2021_CLASSES),
             YTVIS_2021_CLASSES, [0, 2, 0, 2]),
    'ovis': ('OVISDataset', dict(), categories(OVIS_CLASSES), OVIS_CLASSES, [0, 2, 0, 2]),
    # classes from the JSON, in sorted id order (cat=3, emu=5, dog=7)
    'custom': ('YTVISDataset', dict(), CUSTOM_CATEGORIES, ('cat', 'emu', 'dog'), [2, 1, 2, 1]),
}


@pytest.mark.parametrize('flavour', sorted(FLAVOURS))
def test_every_flavour_parses_classes_and_labels(tmp_path, flavour):
    dataset_type, kwargs, cats, classes, labels = FLAVOURS[flavour]
    root = str(tmp_path)
    dump(root, tiny_vis(root, cats))
    dataset = build(root, dataset_type=dataset_type, **kwargs)
    assert dataset.metainfo['classes'] == tuple(classes)
    assert len(set(classes)) == {'ovis': 25, 'custom': 3}.get(flavour, 40)
    parsed = {inst['instance_id']: inst['bbox_label'] for video in videos(dataset)
              for frame in video['images'] for inst in frame['instances']}
    assert parsed == dict(zip([11, 12, 13, 14], labels))


def test_parsed_items_follow_the_video_interface(tmp_path):
    root = str(tmp_path)
    raw = tiny_vis(root, categories(YTVIS_2019_CLASSES))
    dump(root, raw)
    dataset = build(root, dataset_version='2019')
    assert len(dataset) == 3
    video = dataset.get_data_info(0)
    assert (video['video_id'], video['video_length'], len(video['images'])) == (1, 4, 4)
    frames = video['images']
    for t, frame in enumerate(frames):
        assert frame['frame_id'] == t and frame['video_id'] == 1
        assert (frame['height'], frame['width']) == (24, 32)
        assert frame['img_path'] == osp.join(root, 'JPEGImages', 'vid_a', f'{t:05d}.jpg')
    all_img_ids = [f['img_id'] for v in videos(dataset) for f in v['images']]
    assert len(set(all_img_ids)) == len(all_img_ids) == 9

    # track 11: uncompressed RLE, boxes from the JSON ([x, y, w, h] -> [x1, y1, x2, y2]),
    # absent (null) in frame 2; track 12: compressed RLE, boxes computed from the mask
    by_frame = [{inst['instance_id']: inst for inst in frame['instances']} for frame in frames]
    assert [sorted(f) for f in by_frame] == [[11, 12], [11, 12], [12], [11, 12]]
    assert by_frame[1][11]['bbox'] == [4, 2, 13, 10]
    assert by_frame[1][11]['mask'] == raw['annotations'][0]['segmentations'][1]
    assert by_frame[3][12]['bbox'] == [17.0, 12.0, 27.0, 20.0]  # rect x 17..26, y 12..19
    assert by_frame[3][12]['mask'] == raw['annotations'][1]['segmentations'][3]
    assert all(inst['ignore_flag'] == 0 for f in by_frame for inst in f.values())

    # video 2: polygon track with boxes from the rasterised polygon, crowd track ignored
    video2 = dataset.get_data_info(1)
    first = {inst['instance_id']: inst for inst in video2['images'][0]['instances']}
    assert first[13]['mask'] == [[2.0, 3.0, 12.0, 3.0, 12.0, 9.0, 2.0, 9.0]]
    np.testing.assert_allclose(first[13]['bbox'], [2, 3, 12, 9], atol=1)
    assert first[14]['ignore_flag'] == 1
    assert [len(f['instances']) for f in video2['images']] == [2, 1, 1]


def test_val_json_without_annotations_loads_in_test_mode(tmp_path):
    root = str(tmp_path)
    raw = tiny_vis(root, categories(YTVIS_2021_CLASSES))
    del raw['annotations']
    dump(root, raw, 'valid.json')
    dataset = build(root, 'valid.json', dataset_version='2021', test_mode=True)
    assert [v['video_length'] for v in videos(dataset)] == [4, 3, 2]
    assert all(not f['instances'] for v in videos(dataset) for f in v['images'])
    with pytest.raises(YTVISFormatError, match="no 'annotations'") as error:
        build(root, 'valid.json', dataset_version='2021')
    assert osp.join(root, 'valid.json') in str(error.value)


def test_test_frames_read_their_video_once_and_equal_mmdets(tmp_path):
    """The test sampler asks for a video's frames one by one; mmdet unpickled the whole video
    (every frame's info and masks) for each, so a video cost the square of its length."""
    from mmdet.datasets import BaseVideoDataset
    root = str(tmp_path)
    dump(root, tiny_vis(root, categories(YTVIS_2021_CLASSES)))
    dataset = build(root, dataset_version='2021', test_mode=True)
    frames = list(TrackImgSampler(dataset))
    expected = [BaseVideoDataset.prepare_data(dataset, idx) for idx in frames]
    reads = []
    get_data_info = dataset.get_data_info
    dataset.get_data_info = lambda index: reads.append(index) or get_data_info(index)
    got = [dataset.prepare_data(idx) for idx in frames]
    assert [idx[0] for idx in frames] == [0] * 4 + [1] * 3 + [2] * 2
    assert reads == [0, 1, 2]  # once per video
    assert [dict(g) for g in got] == [dict(e) for e in expected]
    assert got[1]['instances'] == expected[1]['instances'] and got[1]['instances'][0]
    edited = dataset.prepare_data(frames[1])
    edited['instances'][0][0]['bbox_label'] = -1  # a pipeline editing its input in place...
    assert dataset.prepare_data(frames[1]) == expected[1]  # ...edits a copy of the frame
    # re-indexed, index 0 is another video: what was kept under it is dropped
    dataset.get_data_info = get_data_info
    subset = dataset.get_subset([1, 2])
    assert subset.prepare_data((0, 0))['video_id'] == [videos(dataset)[1]['video_id']]
    dataset.get_subset_([2])
    assert dataset.prepare_data((0, 0))['video_id'] == [videos(subset)[1]['video_id']]


def test_filter_empty_gt_drops_whole_videos_and_logs_the_count(tmp_path, log_records):
    root = str(tmp_path)
    raw = tiny_vis(root, categories(YTVIS_2021_CLASSES))
    raw['annotations'] = [a for a in raw['annotations'] if a['id'] != 13]  # video 2: crowd only
    dump(root, raw)
    assert len(build(root, dataset_version='2021')) == 3
    filtered = build(root, dataset_version='2021', filter_cfg=dict(filter_empty_gt=True))
    assert [v['video_id'] for v in videos(filtered)] == [1]
    assert filtered.get_data_info(0)['video_length'] == 4  # frames are never dropped
    assert any('kept 1 of 3 videos (dropped 2 without annotations' in m for m in log_records)
    kept = build(root, dataset_version='2021', filter_cfg=dict(filter_empty_gt=True),
                 test_mode=True)
    assert len(kept) == 3
    small = build(root, dataset_version='2021', filter_cfg=dict(min_size=18))
    assert [v['video_id'] for v in videos(small)] == [1, 2]
    with pytest.raises(YTVISFormatError, match=r"train.json: filter_cfg=.* dropped all 3 videos "
                       r'\(0 without annotations, 3 smaller than 100 px\)'):
        build(root, dataset_version='2021', filter_cfg=dict(min_size=100))
    # a misspelled key filtered nothing, silently (mutant caught: no key check)
    for mode in (False, True):
        with pytest.raises(ValueError, match=re.escape(
                f"YTVISDataset ({root}/train.json): filter_cfg has unknown keys ['filter_empty']; "
                'it takes filter_empty_gt, min_size')):
            build(root, dataset_version='2021', filter_cfg=dict(filter_empty=True),
                  test_mode=mode)


def test_absent_polygons_and_orphan_boxes_are_counted(tmp_path, log_records):
    root = str(tmp_path)
    raw = tiny_vis(root, categories(YTVIS_2021_CLASSES))
    raw['annotations'][2]['segmentations'][1] = []
    raw['annotations'][2]['bboxes'][2] = [1, 1, 2, 2]
    raw['annotations'][2]['segmentations'][2] = None
    dump(root, raw)
    dataset = build(root, dataset_version='2021')
    assert [len(f['instances']) for f in dataset.get_data_info(1)['images']] == [2, 0, 0]
    assert any('treated 1 empty polygon lists as absent; ignored 1 per-frame boxes' in m
               for m in log_records)


def test_check_frames_can_be_disabled(tmp_path):
    root = str(tmp_path)
    dump(root, tiny_vis(root, categories(YTVIS_2021_CLASSES)))
    os.remove(osp.join(root, 'JPEGImages', 'vid_b', '00001.jpg'))
    with pytest.raises(MissingFrameError) as error:
        build(root, dataset_version='2021')
    # One error type for the format; a missing frame is also a missing file.
    assert isinstance(error.value, YTVISFormatError)
    assert isinstance(error.value, FileNotFoundError)
    assert len(build(root, dataset_version='2021', check_frames=False)) == 3


# ----------------------------------------------------------------------------- bad input
def _set(path: str, value) -> Callable[[dict, str], None]:
    """A mutation that sets raw[path...] = value; path like 'annotations.0.segmentations.1'."""

    def mutate(raw: dict, root: str) -> None:
        keys = [int(k) if k.isdigit() else k for k in path.split('.')]
        target = raw
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value(target[keys[-1]]) if callable(value) else value

    return mutate


def _raw_text(text: str) -> Callable[[dict, str], str]:
    return lambda raw, root: text


def _delete(key: str) -> Callable[[dict, str], None]:
    return lambda raw, root: raw.pop(key)


def _garble_huffman_tables(path: str) -> None:
    """Fill a JPEG's first Huffman table with 0xFF, its markers left in place: the header
    reads, the data does not decode."""
    with open(path, 'rb') as f:
        data = bytearray(f.read())
    table = data.index(b'\xff\xc4')  # the first Huffman table segment: keep its length
    length = int.from_bytes(data[table + 2:table + 4], 'big')
    data[table + 5:table + 2 + length] = b'\xff' * (length - 3)
    with open(path, 'wb') as f:
        f.write(bytes(data))


def _overwrite(path: str, text: str) -> None:
    with open(path, 'w') as f:
        f.write(text)


def _save_rotated(path: str, height: int, width: int) -> None:
    """Store a height x width JPEG whose EXIF orientation turns it by 90 degrees: OpenCV (and so
    mmcv's LoadImageFromFile) decodes it as width x height."""
    from PIL import Image
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new('RGB', (width, height)).save(path, exif=exif)


def _relink(path: str, target: str) -> None:
    os.remove(path)
    os.symlink(target, path)


def counts_string(runs: List[int]) -> str:
    """pycocotools' compressed counts string of run lengths (its rleToString)."""
    size = [1, sum(runs)]
    return mask_utils.frPyObjects(dict(size=size, counts=runs), *size)['counts'].decode()


def _counts_plus(delta: int):
    return lambda rle: dict(rle, counts=rle['counts'][:-1] + [rle['counts'][-1] + delta])


BAD_INPUTS = {
    'not json': (_raw_text('{"videos": ['), YTVISFormatError, 'not valid JSON'),
    'top level list': (_raw_text('[]'), YTVISFormatError, 'top level is a list'),
    'missing videos': (_delete('videos'), YTVISFormatError,
                       "missing top-level key(s) ['videos']"),
    'missing categories': (_delete('categories'), YTVISFormatError, 'missing top-level key'),
    'missing frame': (lambda raw, root: os.remove(osp.join(root, 'JPEGImages', 'vid_b',
                                                           '00002.jpg')),
                      MissingFrameError, 'video id=2, frame 2: {root}/JPEGImages/vid_b/00002.jpg'),
    'missing folder': (lambda raw, root: shutil.rmtree(osp.join(root, 'JPEGImages', 'vid_c')),
                       MissingFrameError, 'vid_c/00000.jpg does not exist (folder missing)'),
    'broken link': (lambda raw, root: _relink(osp.join(root, 'JPEGImages', 'vid_b', '00001.jpg'),
                                              'gone.jpg'),
                    MissingFrameError, 'video id=2, frame 1: {root}/JPEGImages/vid_b/00001.jpg '
                    'is a link to a missing file'),
    'link loop': (lambda raw, root: _relink(osp.join(root, 'JPEGImages', 'vid_b', '00001.jpg'),
                                            '00001.jpg'),
                  MissingFrameError, 'video id=2, frame 1: {root}/JPEGImages/vid_b/00001.jpg '
                  'cannot be read: Too many levels of symbolic links'),
    'frame size differs': (lambda raw, root: cv2.imwrite(
        osp.join(root, 'JPEGImages', 'vid_b', '00000.jpg'), np.zeros((10, 12, 3), np.uint8)),
                           YTVISFormatError,
                           'video id=2: frame 0 ({root}/JPEGImages/vid_b/00000.jpg) is 10x12 '
                           '(HxW) but the file says 20x28'),
    'unreadable frame': (lambda raw, root: _overwrite(
        osp.join(root, 'JPEGImages', 'vid_c', '00000.jpg'), 'not an image'),
                         YTVISFormatError, 'video id=3, frame 0: cannot read'),
    'video without frames': (_set('videos.1.file_names', []), YTVISFormatError,
                             "videos[1] (id 2): has no frames ('file_names' is empty)"),
    'video length mismatch': (_set('videos.0.length', 5), YTVISFormatError,
                              "videos[0] (id 1): 'length' 5 but 4 file_names"),
    'video bad size': (_set('videos.0.height', 0), YTVISFormatError,
                       "videos[0] (id 1): 'height' must be a positive integer, got 0"),
    'no videos': (lambda raw, root: raw.update(videos=[], annotations=[]), YTVISFormatError,
                  "'videos' is empty; the dataset has nothing to load"),
    'exif rotated frame': (lambda raw, root: _save_rotated(
        osp.join(root, 'JPEGImages', 'vid_b', '00000.jpg'), 20, 28), YTVISFormatError,
                           'video id=2: frame 0 ({root}/JPEGImages/vid_b/00000.jpg) is 28x20 '
                           '(HxW) but the file says 20x28'),
    'duplicated video id': (_set('videos.1.id', 1), YTVISFormatError,
                            'duplicate video ids [1]'),
    'duplicated annotation id': (_set('annotations.1.id', 11), YTVISFormatError,
                                 'duplicate annotation ids [11]'),
    'unknown category': (_set('annotations.2.category_id', 99), YTVISFormatError,
                         "annotations[2] (id 13): category_id 99 is not in 'categories' [1, 2, 3"),
    'unknown video': (_set('annotations.2.video_id', 7), YTVISFormatError,
                      'annotations[2] (id 13): unknown video_id 7'),
    'bad iscrowd': (_set('annotations.0.iscrowd', 2), YTVISFormatError,
                    "'iscrowd' must be 0 or 1, got 2"),
    'segmentations too short': (_set('annotations.0.segmentations', lambda s: s[:3]),
                                YTVISFormatError,
                                'annotations[0] (id 11): 3 segmentations for a video of 4 '
                                'frames (video id 1)'),
    'bboxes too long': (_set('annotations.0.bboxes', lambda b: b + [None]), YTVISFormatError,
                        "'bboxes' must be a list with one entry per frame (4 frames in video 1)"),
    'bad bbox': (_set('annotations.0.bboxes.1', [1, 2, 3]), YTVISFormatError,
                 'annotations[0] (id 11), frame 1 (vid_a/00001.jpg): bbox is not a list of 4'),
    'negative bbox size': (_set('annotations.0.bboxes.1', [1, 2, -3, 4]), YTVISFormatError,
                           'negative size'),
    'uncompressed sum': (_set('annotations.0.segmentations.1', _counts_plus(5)),
                         YTVISFormatError,
                         'annotations[0] (id 11), frame 1 (vid_a/00001.jpg): malformed RLE: '
                         'uncompressed counts must be non-negative integers summing to '
                         'height*width = 768; they sum to 773 pixels'),
    'uncompressed float': (_set('annotations.0.segmentations.0.counts.0', 1.5),
                           YTVISFormatError, 'they are not all integers'),
    'uncompressed string': (_set('annotations.0.segmentations.0.counts.0', 'x'),
                            YTVISFormatError, 'they contain non-numbers'),
    'uncompressed negative': (_set('annotations.0.segmentations.0.counts', [-4, 772]),
                              YTVISFormatError, 'they contain a negative run'),
    'rle size mismatch': (_set('annotations.1.segmentations.2.size', [24, 33]),
                          YTVISFormatError,
                          'annotations[1] (id 12), frame 2 (vid_a/00002.jpg): RLE size [24, 33] '
                          'does not match the video size [height, width] = [24, 32]'),
    'compressed illegal chars': (_set('annotations.1.segmentations.0.counts', 'ab !'),
                                 YTVISFormatError,
                                 'annotations[1] (id 12), frame 0 (vid_a/00000.jpg): malformed '
                                 "RLE: invalid character ' ' in counts"),
    'compressed truncated': (_set('annotations.1.segmentations.3.counts', lambda c: c + 'o'),
                             YTVISFormatError, 'frame 3 (vid_a/00003.jpg): malformed'),
    # runs 758, 5, 5, -3, 3 ('55HN' stores 5, 5, 5 - 8, -3 - 2): they sum to 768 and pycocotools
    # measures an area of 2, but the fourth run is negative (the check used to read only three)
    'compressed negative fourth run': (_set('annotations.1.segmentations.1.counts',
                                            counts_string([758]) + '55HN'),
                                       YTVISFormatError,
                                       'annotations[1] (id 12), frame 1 (vid_a/00001.jpg): '
                                       'malformed RLE: a run length is negative (run 3 is -3)'),
    'compressed wrong total': (_set('annotations.1.segmentations.1.counts',
                                    rle_of(rect_mask(24, 31, 1, 5, 1, 5))['counts']),
                               YTVISFormatError,
                               'frame 1 (vid_a/00001.jpg): malformed RLE: run lengths cover 744 '
                               'pixels, expected height*width = 768'),
    'rle counts wrong type': (_set('annotations.1.segmentations.0.counts', 5),
                              YTVISFormatError,
                              "malformed RLE: 'counts' must be a string or a list of run lengths, "
                              'got int'),
    'polygon odd length': (_set('annotations.2.segmentations.1', [[1, 2, 3, 4, 5, 6, 7]]),
                           YTVISFormatError,
                           'annotations[2] (id 13), frame 1 (vid_b/00001.jpg): polygon has 7 '
                           'coordinates'),
    'polygon too short': (_set('annotations.2.segmentations.0', [[1, 2, 3, 4]]),
                          YTVISFormatError, 'polygon has 4 coordinates'),
    'polygon strings': (_set('annotations.2.segmentations.0', [['1', '2', '3', '4', '5', '6']]),
                        YTVISFormatError, 'polygon coordinates contain non-numbers'),
    'polygon not nested': (_set('annotations.2.segmentations.0', [1, 2, 3, 4, 5, 6]),
                           YTVISFormatError, 'polygon is a int'),
    'polygon nan': (_set('annotations.2.segmentations.0', [[1, 2, 3, float('nan'), 5, 6]]),
                    YTVISFormatError, 'not finite'),
    'segmentation wrong type': (_set('annotations.2.segmentations.0', 'abc'), YTVISFormatError,
                                'segmentation must be null, an RLE dict or a polygon list'),
    'classes do not match': (_set('categories', categories(YTVIS_2021_CLASSES)),
                             YTVISFormatError, 'do not match the file\'s categories'),
    'classes reordered': (_set('categories', lambda cats: [dict(c, id=41 - c['id'])
                                                           for c in cats]),
                          YTVISFormatError, '(same names, different order)'),
    'duplicated category id': (_set('categories', lambda cats: cats + [cats[0]]),
                               YTVISFormatError, 'duplicate category ids [1]'),
}


@pytest.mark.parametrize('case', sorted(BAD_INPUTS))
def test_bad_input_raises_naming_file_and_entry(tmp_path, case):
    mutate, error_type, fragment = BAD_INPUTS[case]
    root = str(tmp_path)
    raw = tiny_vis(root, categories(YTVIS_2019_CLASSES))
    path = dump(root, raw)
    text = mutate(raw, root)
    if isinstance(text, str):
        with open(path, 'w') as f:
            f.write(text)
    else:
        dump(root, raw)
    with pytest.raises(error_type) as error:
        build(root, dataset_version='2019')
    message = str(error.value)
    assert message.startswith(f'{path}: '), message
    assert fragment.format(root=root) in message, message
    assert isinstance(error.value, ValueError)


FRAME_FILE_PROBLEMS = {
    # how frame 2 of video 1 (24x32) is broken, and the problem the error names
    'other size': (lambda path: cv2.imwrite(path, np.zeros((12, 16, 3), np.uint8)),
                   'video id=1: frame 2 ({path}) is 12x16 (HxW) but the file says 24x32'),
    'empty file': (lambda path: _overwrite(path, ''),
                   'video id=1, frame 2: cannot read {path}: cannot identify image file'),
    'not an image': (lambda path: _overwrite(path, 'text'),
                     'video id=1, frame 2: cannot read {path}: cannot identify image file'),
    'exif rotated': (lambda path: _save_rotated(path, 24, 32),
                     'video id=1: frame 2 ({path}) is 32x24 (HxW) but the file says 24x32'),
    'cut short': (lambda path: _cut(path, 0.6),
                  'video id=1, frame 2: cannot read {path}: the JPEG is cut short'),
}


def _cut(path: str, keep: float) -> None:
    """Keep the first ``keep`` of the file's bytes (a download or extraction interrupted)."""
    with open(path, 'rb') as f:
        data = f.read()
    with open(path, 'wb') as f:
        f.write(data[:int(len(data) * keep)])


def test_a_jpeg_cut_short_is_refused_and_appended_data_is_not(tmp_path):
    """libjpeg decodes a JPEG without its end-of-image marker with grey rows and a warning; data
    appended after the marker is harmless, however long (a motion photo appends a video); a
    0xFFD9 in the tables before the first scan is no marker."""
    from ctvis.datasets.ytvis import JPEG_TAIL_BYTES, decoded_image_size
    path = str(tmp_path / 'frame.jpg')
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    cv2.imwrite(path, noise)
    with open(path, 'rb') as f:
        intact = f.read()
    assert intact.endswith(b'\xff\xd9') and decoded_image_size(path) == (48, 64)
    for appended in (JPEG_TAIL_BYTES - 2, JPEG_TAIL_BYTES - 1, 3 * JPEG_TAIL_BYTES):
        with open(path, 'wb') as f:
            f.write(intact + b'\0' * appended)
        assert decoded_image_size(path) == (48, 64), appended  # was refused beyond 64 KiB
    for cut in (intact[:-2], intact[:len(intact) // 2]):  # all but the marker; half the file
        with open(path, 'wb') as f:
            f.write(cut)
        with pytest.raises(OSError, match='the JPEG is cut short'):
            decoded_image_size(path)
    # a quantisation table holding 0xFF 0xD9, the file cut inside its first scan: refused (the
    # marker was looked for anywhere in the last 64 KiB)
    table = bytearray(intact)
    quantisation = table.index(b'\xff\xdb')
    table[quantisation + 5:quantisation + 7] = b'\xff\xd9'
    scan = table.index(b'\xff\xda')
    with open(path, 'wb') as f:
        f.write(bytes(table[:scan + 40]))
    with pytest.raises(OSError, match='the JPEG is cut short'):
        decoded_image_size(path)
    with open(path, 'wb') as f:  # fill bytes (0xFF) may precede any marker
        f.write(intact[:2] + b'\xff\xff' + intact[2:])
    assert decoded_image_size(path) == (48, 64) and cv2.imread(path).shape == (48, 64, 3)
    png = str(tmp_path / 'frame.png')  # the marker rule is for JPEGs only
    cv2.imwrite(png, noise)
    assert decoded_image_size(png) == (48, 64)


def test_a_tiff_turned_by_its_orientation_has_its_decoded_size(tmp_path):
    """Pillow reports a TIFF's size already turned by its orientation tag, and mmcv decodes it
    turned: a 48x64 frame turned by 90 degrees passed the size check and loaded as 64x48."""
    import mmcv
    from PIL import Image
    from ctvis.datasets.ytvis import decoded_image_size
    noise = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    exif = Image.Exif()
    for orientation, expected in ((6, (64, 48)), (1, (48, 64))):
        exif[0x0112] = orientation
        tiff = str(tmp_path / f'frame{orientation}.tiff')
        Image.fromarray(noise[..., ::-1].copy()).save(tiff, exif=exif)
        with open(tiff, 'rb') as f:
            decoded = mmcv.imfrombytes(f.read())
        assert decoded_image_size(tiff) == expected == decoded.shape[:2]


@pytest.mark.parametrize('case', sorted(FRAME_FILE_PROBLEMS))
def test_every_frame_is_checked_when_its_video_is_first_loaded(tmp_path, case):
    """In training, frames after the first are checked when their video is loaded, before the
    pipeline decodes masks at the video's size: a frame of another size would otherwise be
    misaligned with them or fail deep in mmcv."""
    root = str(tmp_path)
    path = dump(root, tiny_vis(root, categories(YTVIS_2021_CLASSES)))
    dataset = build(root, dataset_version='2021')
    frame = osp.join(root, 'JPEGImages', 'vid_a', '00002.jpg')
    break_frame, fragment = FRAME_FILE_PROBLEMS[case]
    break_frame(frame)
    assert dataset[1] is not None  # video 2 is intact
    with pytest.raises(YTVISFormatError) as error:
        dataset.prepare_data(0)
    message = str(error.value)
    assert message.startswith(f'{path}: ') and fragment.format(path=frame) in message, message
    assert len(build(root, dataset_version='2021', check_frames=False).prepare_data(0))


@pytest.mark.parametrize('case', sorted(FRAME_FILE_PROBLEMS))
def test_test_mode_checks_every_frame_at_load(tmp_path, case):
    """A test run writes its predictions only at the end, so in ``test_mode`` every frame is
    checked before the first one is inferred: a bad frame in the last video must not cost the
    predictions of all the others."""
    root = str(tmp_path)
    path = dump(root, tiny_vis(root, categories(YTVIS_2021_CLASSES)))
    frame = osp.join(root, 'JPEGImages', 'vid_a', '00002.jpg')
    break_frame, fragment = FRAME_FILE_PROBLEMS[case]
    break_frame(frame)
    if case == 'empty file':  # found by the folder listing, before any header is read
        fragment = 'video id=1, frame 2: {path} is an empty file'
    with pytest.raises(YTVISFormatError) as error:
        build(root, dataset_version='2021', test_mode=True)
    message = str(error.value)
    assert message.startswith(f'{path}: ') and fragment.format(path=frame) in message, message
    dataset = build(root, dataset_version='2021', test_mode=True, check_frames=False)
    assert dataset.prepare_data((1, 0)) is not None


def test_an_empty_frame_file_is_found_at_load_in_training_too(tmp_path):
    root = str(tmp_path)
    path = dump(root, tiny_vis(root, categories(YTVIS_2021_CLASSES)))
    frame = osp.join(root, 'JPEGImages', 'vid_b', '00001.jpg')
    _overwrite(frame, '')
    with pytest.raises(YTVISFormatError, match=re.escape(
            f'{path}: video id=2, frame 1: {frame} is an empty file')):
        build(root, dataset_version='2021')


def test_a_frame_whose_data_does_not_decode_names_its_video(tmp_path):
    """Every marker in place, the Huffman tables garbage: the header reads, OpenCV cannot decode
    it. In test mode the dataset refuses it at load, before any inference (it failed in the
    loader when its video came, after every video before it); elsewhere the loader's error
    names the annotation file, the video and the frame file."""
    root = str(tmp_path)
    path = dump(root, tiny_vis(root, categories(YTVIS_2021_CLASSES)))
    frame = osp.join(root, 'JPEGImages', 'vid_a', '00002.jpg')
    _garble_huffman_tables(frame)
    assert cv2.imread(frame) is None  # what mmcv's loader meets
    load = [dict(type='TransformBroadcaster', transforms=[dict(type='LoadImageFromFile')])]
    with pytest.raises(YTVISFormatError, match=re.escape(
            f'{path}: video id=1, frame 2: cannot read {frame}: ')):
        build(root, dataset_version='2021', test_mode=True, pipeline=load)
    unchecked = build(root, dataset_version='2021', test_mode=True, pipeline=load,
                      check_frames=False)  # as a training frame, met in the loader
    with pytest.raises(YTVISFormatError, match=re.escape(
            f'{path}: video id=1: failed to load image: {frame} (the file is not a decodable '
            'image)')):
        unchecked.prepare_data((0, 2))
    assert unchecked.prepare_data((0, 1))['img'][0].shape == (24, 32, 3)


def test_a_frame_beyond_pillows_size_limit_is_named(tmp_path, monkeypatch):
    """Over twice Pillow's MAX_IMAGE_PIXELS its header read raised a bare
    DecompressionBombError naming no frame (a 13500x13500 frame by default)."""
    from PIL import Image
    root = str(tmp_path)
    path = dump(root, tiny_vis(root, categories(YTVIS_2021_CLASSES)))
    monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)  # frames of 24x32: 768 pixels
    frame = osp.join(root, 'JPEGImages', 'vid_a', '00000.jpg')
    with pytest.raises(YTVISFormatError, match=re.escape(
            f'{path}: video id=1, frame 0: cannot read {frame}: larger than the header check '
            'reads')):
        build(root, dataset_version='2021')


@pytest.mark.parametrize('extension', ['bmp', 'tif'])
def test_test_mode_refuses_frames_cut_short_whose_header_reads(tmp_path, extension,
                                                               monkeypatch):
    """A BMP, or a TIFF with its directory first (as Pillow writes it), cut short keeps its
    header (the size checks pass) and failed in the loader, late in a test run, with the whole
    run's work lost. (A PNG or WebP cut short already fails its header read.)"""
    from PIL import Image, ImageFile
    root = str(tmp_path)
    raw = tiny_vis(root, categories(YTVIS_2021_CLASSES))
    video = raw['videos'][2]  # the last video
    old = osp.join(root, 'JPEGImages', video['file_names'][1])
    video['file_names'][1] = video['file_names'][1][:-3] + extension
    frame = osp.join(root, 'JPEGImages', video['file_names'][1])
    noise = np.random.RandomState(0).randint(0, 256, (video['height'], video['width'], 3))
    Image.fromarray(noise.astype(np.uint8)).save(frame)
    os.remove(old)
    path = dump(root, raw, 'valid.json')
    build(root, 'valid.json', dataset_version='2021', test_mode=True)  # intact: loads
    with open(frame, 'rb') as f:
        data = f.read()
    with open(frame, 'wb') as f:
        f.write(data[:len(data) // 2])
    # decoded as the loader decodes (Pillow would pass it once a program allows cut files)
    monkeypatch.setattr(ImageFile, 'LOAD_TRUNCATED_IMAGES', True)
    with pytest.raises(YTVISFormatError, match=re.escape(
            f"{path}: video id={video['id']}, frame 1: cannot read {frame}: ")):
        build(root, 'valid.json', dataset_version='2021', test_mode=True)
    # two damaged frames: the first in the videos' order is named, whichever thread ends first
    earlier = osp.join(root, 'JPEGImages', raw['videos'][0]['file_names'][3])
    _garble_huffman_tables(earlier)
    with pytest.raises(YTVISFormatError, match=re.escape(
            f"{path}: video id={raw['videos'][0]['id']}, frame 3: cannot read {earlier}: ")):
        build(root, 'valid.json', dataset_version='2021', test_mode=True)


def test_missing_annotation_file_and_unknown_version(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.json: no such file'):
        build(str(tmp_path), 'nope.json')
    with pytest.raises(ValueError, match="dataset_version must be one of .* got '2020'"):
        build(str(tmp_path), dataset_version='2020')
    with pytest.raises(ValueError, match='does not apply to OVIS'):
        build(str(tmp_path), dataset_type='OVISDataset', dataset_version='2019')


def test_remote_annotation_file_is_fetched_first(tmp_path, monkeypatch):
    """A path with a URI scheme goes through mmengine's file backends (as YTVISDataset always
    did); errors name the remote path."""
    root = str(tmp_path)
    local = dump(root, tiny_vis(root, categories(YTVIS_2019_CLASSES)))
    fetched = []

    @contextlib.contextmanager
    def fake_get_local_path(path):
        fetched.append(path)
        yield local

    monkeypatch.setattr(ytvis_format_loading, 'get_local_path', fake_get_local_path)
    assert ytvis_format_loading.load_json_file('s3://bucket/train.json')['videos']
    assert fetched == ['s3://bucket/train.json']
    assert ytvis_format_loading.load_json_file(local)['videos']  # local paths are read directly
    assert fetched == ['s3://bucket/train.json']
    with open(local, 'w') as f:
        f.write('{"videos": [')
    with pytest.raises(YTVISFormatError, match='^s3://bucket/train.json: not valid JSON'):
        ytvis_format_loading.load_json_file('s3://bucket/train.json')


def check_strings(strings: List[str], frame_hw: List[int]) -> np.ndarray:
    """Areas of compressed RLE counts strings by the dataset's (the evaluator's) check."""

    def fail(index: int, problem: str) -> None:
        raise YTVISFormatError(f'string {index}: {problem}')

    return check_compressed_counts(strings, np.asarray(frame_hw, np.int64), fail)[0]


def test_compressed_rle_check_matches_pycocotools():
    rng = np.random.RandomState(0)
    strings, sizes, areas = [], [], []
    for i in range(120):
        h, w = rng.randint(1, 60, size=2)
        mask = (rng.rand(h, w) < rng.rand()).astype(np.uint8)
        if i % 9 == 0:
            mask[:] = i % 2  # all background / all foreground
        if i % 13 == 0:  # long runs need multi-character counts
            mask = np.zeros((h * 40, w * 40), np.uint8)
            mask[h:h * 30, w:] = 1
        strings.append(rle_of(mask)['counts'])
        sizes.append(mask.size)
        areas.append(int(mask.sum()))
    assert check_strings(strings, sizes).tolist() == areas
    # '0O' decodes to runs [0, -1], ':55HN' to [10, 5, 5, -3, 3]; 'o' continues past the end;
    # ' ' and 'é' are illegal; the last one covers one pixel too many.
    for bad, problem in (('0O', 'a run length is negative'),
                         (':55HN', r'a run length is negative \(run 3 is -3\)'),
                         (strings[1] + 'o', 'counts string ends inside a number'),
                         (' ', "invalid character ' '"), ('é', 'non-ASCII'),
                         ('', 'empty counts string'), (strings[2], 'run lengths cover')):
        frame_hw = sizes[2] - 1 if bad is strings[2] else 20 if bad == ':55HN' else sizes[1]
        with pytest.raises(YTVISFormatError, match=f'string 1: malformed RLE: {problem}'):
            check_strings([strings[0], bad], [sizes[0], frame_hw])


@pytest.mark.parametrize('counts, frame_hw, message', [
    ('', 20, 'empty counts string'),
    ('4 ', 20, "invalid character ' ' in counts (offset 1)"),
    ('4' + 'P' * 8, 20, 'a run length has too many chunks (run 1 has more than 7 characters, '
     'more than any uint32 needs)'),
    ('4o', 20, 'counts string ends inside a number (run 1)'),
    # run 3 is stored as 1 - (2**30 + 5), a negative number of 7 characters
    (counts_string([0, 2**30 + 5, 3, 1, 2**30]), 2**31 + 9, 'a run length is stored as a '
     'negative difference of 7 characters (run 3), which pycocotools decodes wrongly'),
    (':55HN', 20, 'a run length is negative (run 3 is -3)'),
    (counts_string([10, 15, 5]), 20, 'run lengths cover more than height*width = 20 pixels '
     '(runs 0 to 1 cover 25)'),
    (counts_string([10, 5, 4]), 20, 'run lengths cover 19 pixels, expected height*width = 20'),
])
def test_compressed_rle_messages(counts, frame_hw, message):
    with pytest.raises(YTVISFormatError) as error:
        check_strings([counts_string([20]), counts], [20, frame_hw])
    assert str(error.value) == f'string 1: malformed RLE: {message}'


def test_rle_validation_is_fast():
    """5k masks of 360x640 with ~2.5k characters each (13M characters) are checked in bulk;
    a per-character Python loop would take tens of seconds."""
    mask = rect_mask(360, 640, 40, 300, 10, 600)
    mask[100:110, ::3] = 0  # many short runs
    counts = rle_of(mask)['counts']
    assert len(counts) > 2000
    start = time.perf_counter()
    areas = check_strings([counts] * 5000, [360 * 640] * 5000)
    elapsed = time.perf_counter() - start
    assert (areas == mask.sum()).all()
    assert elapsed < 5.0, elapsed


# ----------------------------------------------------------------------------- clip sampling
def fake_video(length: int) -> dict:
    return dict(video_id=5, video_length=length,
                images=[dict(frame_id=t, img_path=f'{t}.jpg', img_id=100 + t, instances=[])
                        for t in range(length)])


def sample(sampler: VideoClipSample, video: dict, seed: int) -> dict:
    np.random.seed(seed)
    return sampler(copy.deepcopy(video))


def test_clip_sampling_invariants():
    sampler = VideoClipSample(num_frames=8, frame_range=5)
    video = fake_video(50)
    references, offsets, any_duplicates = set(), set(), False
    for seed in range(300):
        results = sample(sampler, video, seed)
        frames = results['frame_id']
        assert len(frames) == 8 and frames == sorted(frames)
        assert results['img_id'] == [100 + t for t in frames]
        assert results['video_length'] == [8] * 8 and results['ori_video_length'] == [50] * 8
        assert results['video_id'] == [5] * 8
        flags = results['key_frame_flags']
        assert sum(flags) == 1
        reference = frames[flags.index(True)]
        others = [t for t, key in zip(frames, flags) if not key]
        assert reference not in others
        assert all(abs(t - reference) <= 5 for t in others)
        references.add(reference)
        offsets.update(t - reference for t in others)
        any_duplicates |= len(set(others)) < len(others)
    assert any_duplicates  # drawn with replacement
    assert offsets == set(range(-5, 6)) - {0}
    assert len(references) >= 45  # uniform over the 50 frames


def test_clip_sampling_at_edges_and_short_videos():
    sampler = VideoClipSample(num_frames=6, frame_range=4)
    for seed in range(20):
        start = sampler(dict(fake_video(30), key_frame_id=0))
        assert start['frame_id'][0] == 0 and start['key_frame_flags'][0]
        assert all(1 <= t <= 4 for t in start['frame_id'][1:])
        end = sample(sampler, dict(fake_video(30), key_frame_id=29), seed)
        assert end['frame_id'][-1] == 29 and end['key_frame_flags'][-1]
        assert all(25 <= t <= 28 for t in end['frame_id'][:-1])
        single = sample(sampler, fake_video(1), seed)
        assert single['frame_id'] == [0] * 6 and sum(single['key_frame_flags']) == 1
        pair = sample(sampler, fake_video(2), seed)
        reference = pair['frame_id'][pair['key_frame_flags'].index(True)]
        assert sorted(pair['frame_id']) == sorted([reference] + [1 - reference] * 5)
    with pytest.raises(ValueError, match='key_frame_id 3 is outside'):
        sampler(dict(fake_video(3), key_frame_id=3))
    with pytest.raises(ValueError, match='num_frames'):
        VideoClipSample(num_frames=0)
    with pytest.raises(ValueError, match='frame_range'):
        VideoClipSample(frame_range=0)


def test_drop_empty_mask_instances_keeps_keys_aligned():
    masks = np.zeros((3, 8, 8), np.uint8)
    masks[0, :2, :2] = 1
    masks[2, 4:, 4:] = 1
    results = dict(gt_masks=BitmapMasks(masks, 8, 8),
                   gt_bboxes=np.arange(12, dtype=np.float32).reshape(3, 4),
                   gt_bboxes_labels=np.array([4, 5, 6]),
                   gt_ignore_flags=np.array([False, True, False]),
                   gt_instances_ids=np.array([70, 71, 72], dtype=np.int32))
    out = DropEmptyMaskInstances()(results)
    assert out['gt_instances_ids'].tolist() == [70, 72]
    assert out['gt_bboxes_labels'].tolist() == [4, 6]
    assert out['gt_ignore_flags'].tolist() == [False, False]
    assert out['gt_bboxes'][:, 0].tolist() == [0, 8]
    assert out['gt_masks'].areas.tolist() == [4, 16]
    assert DropEmptyMaskInstances(min_mask_area=5)(out)['gt_instances_ids'].tolist() == [72]


# ----------------------------------------------------------------------------- pipelines
def doc_pipeline(name: str) -> list:
    """The ``name = [...]`` pipeline exactly as docs/dataset_prepare.md gives it."""
    with open(DOC) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
    for block in blocks:
        if f'{name} = [' in block:
            scope: Dict[str, list] = {}
            exec(block, scope)
            return copy.deepcopy(scope[name])
    raise AssertionError(f'{DOC} has no {name}')


def moving_boxes_video(root: str, name: str, num_frames: int, h: int, w: int,
                       tracks: List[tuple], seed: int) -> tuple:
    """Frames of grey noise with solid coloured boxes; tracks = (colour BGR, y, x, size, dx)."""
    rng = np.random.RandomState(seed)
    images, masks = [], [[] for _ in tracks]
    for t in range(num_frames):
        image = rng.randint(100, 140, (h, w, 3)).astype(np.uint8)
        for k, (colour, y, x, size, dx) in enumerate(tracks):
            mask = rect_mask(h, w, y, y + size, x + dx * t, x + dx * t + size)
            image[mask.astype(bool)] = colour
            masks[k].append(mask)
        images.append(image)
    return write_frames(osp.join(root, 'JPEGImages', name), images), masks


def test_clip_augmentation_shares_crop_scale_and_flip_across_frames(tmp_path):
    """Identical frames must stay identical after the documented augmentation; with
    ``share_random_params=False`` they do not (so this test can fail)."""
    root = str(tmp_path)
    image = noise_frames(1, 400, 480, 0)[0]
    image[150:250, 300:420] = (0, 0, 255)
    names = write_frames(osp.join(root, 'JPEGImages', 'same'), [image] * 3)
    rle = rle_of(rect_mask(400, 480, 150, 250, 300, 420))
    raw = dict(videos=[dict(id=1, file_names=names, length=3, height=400, width=480)],
               categories=categories(['thing']),
               annotations=[dict(id=1, video_id=1, category_id=1, segmentations=[rle] * 3)])
    dump(root, raw)
    dataset = build(root)
    pipeline = doc_pipeline('train_pipeline')
    update_step(pipeline, 'VideoClipSample', num_frames=4)
    augment = Compose(pipeline[:-1])  # stop before packing to see the per-frame parameters
    flips, shapes, crops = set(), set(), set()
    for seed in range(24):
        np.random.seed(seed)
        results = augment(dataset.get_data_info(0))
        for key in ('img_shape', 'scale_factor', 'flip', 'flip_direction'):
            assert len(set(map(str, results[key]))) == 1, (seed, key, results[key])
        for t in range(1, 4):
            np.testing.assert_array_equal(results['img'][t], results['img'][0])
            np.testing.assert_array_equal(results['homography_matrix'][t],
                                          results['homography_matrix'][0])
            np.testing.assert_array_equal(results['gt_masks'][t].masks,
                                          results['gt_masks'][0].masks)
        flips.add(results['flip'][0])
        shapes.add(results['img_shape'][0])
        # crop: the image aspect ratio changes (the resize keeps it)
        crops.add(abs(results['img_shape'][0][1] / results['img_shape'][0][0] - 480 / 400) > 0.02)
    assert flips == {True, False} and crops == {True, False} and len(shapes) >= 5

    update_step(pipeline, 'TransformBroadcaster', share_random_params=False)
    unshared = Compose(pipeline[:-1])
    differs = False
    for seed in range(8):
        np.random.seed(seed)
        results = unshared(dataset.get_data_info(0))
        differs |= len(set(map(str, results['img_shape']))) > 1 or any(
            not np.array_equal(results['img'][t], results['img'][0]) for t in range(1, 4))
    assert differs


TRAIN_SHORT_SIDES = (320, 352, 392, 416, 448, 480, 512, 544, 576, 608, 640)


def test_train_pipeline_packs_clips_with_consistent_instances(tmp_path):
    root = str(tmp_path)
    red, green = (0, 0, 250), (0, 250, 0)
    names, masks = moving_boxes_video(root, 'boxes', 6, 400, 480,
                                      [(red, 30, 20, 60, 8), (green, 300, 380, 50, -6)], seed=0)
    segmentations = [[rle_of(m) for m in track] for track in masks]
    segmentations[1][2] = None  # the green box is not annotated in frame 2
    raw = dict(videos=[dict(id=4, file_names=names, length=6, height=400, width=480)],
               categories=[dict(id=10, name='red'), dict(id=20, name='green')],
               annotations=[dict(id=101, video_id=4, category_id=10,
                                 segmentations=segmentations[0]),
                            dict(id=202, video_id=4, category_id=20,
                                 segmentations=segmentations[1])])
    dump(root, raw)
    pipeline = doc_pipeline('train_pipeline')
    update_step(pipeline, 'VideoClipSample', num_frames=5, frame_range=3)
    dataset = build(root, pipeline=pipeline)
    colours = {101: np.array(red), 202: np.array(green)}
    absences = 0
    for seed in range(10):
        np.random.seed(seed)
        packed = dataset[0]
        inputs, sample_ = packed['inputs'], packed['data_samples']
        assert isinstance(sample_, TrackDataSample) and len(sample_) == 5
        assert inputs.dtype == torch.uint8 and inputs.shape[:2] == (5, 3)
        h, w = inputs.shape[-2:]
        assert min(h, w) in TRAIN_SHORT_SIDES or max(h, w) == 768
        assert len(sample_.key_frames_inds) == 1
        frame_ids = [frame.frame_id for frame in sample_]
        assert frame_ids == sorted(frame_ids)
        for t, frame in enumerate(sample_):
            gt = frame.gt_instances
            assert frame.img_shape == (h, w)
            # mmdet's LoadTrackAnnotations stores the ids as int32
            assert gt.labels.dtype == torch.long
            assert gt.instances_ids.dtype in (torch.int32, torch.long)
            assert isinstance(gt.masks, BitmapMasks) and gt.masks.masks.shape == (len(gt), h, w)
            assert gt.bboxes.shape == (len(gt), 4)
            ids = gt.instances_ids.tolist()
            assert len(set(ids)) == len(ids) and set(ids) <= {101, 202}
            assert all(label == {101: 0, 202: 1}[i] for i, label in zip(ids, gt.labels.tolist()))
            assert (gt.masks.areas > 0).all()
            if frame.frame_id == 2:
                assert 202 not in ids
            absences += len(ids) < 2
            # every mask still covers its own coloured box in the augmented image
            image = inputs[t].permute(1, 2, 0).numpy().astype(np.float32)
            for instance_id, mask in zip(ids, gt.masks.masks.astype(bool)):
                if mask.sum() < 100:  # a sliver left by the crop is mostly blurred edge
                    continue
                mean_colour = image[mask].mean(axis=0)
                assert np.abs(mean_colour - colours[instance_id]).max() < 40, (seed, t, mean_colour)
    assert absences > 0


def test_test_pipeline_with_track_img_sampler_visits_every_frame_in_order(tmp_path):
    root = str(tmp_path)
    raw = tiny_vis(root, categories(YTVIS_2021_CLASSES))
    del raw['annotations']
    dump(root, raw, 'valid.json')
    dataset = build(root, 'valid.json', dataset_version='2021', test_mode=True,
                    pipeline=doc_pipeline('test_pipeline'))
    sampler = TrackImgSampler(dataset, seed=0)
    indices = list(sampler)
    assert indices == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]
    sizes = {1: (24, 32), 2: (20, 28), 3: (16, 16)}
    folders = {1: 'vid_a', 2: 'vid_b', 3: 'vid_c'}
    for video_index, frame_index in indices:
        packed = dataset[(video_index, frame_index)]
        assert len(packed['data_samples']) == 1
        meta = packed['data_samples'][0].metainfo
        video_id = video_index + 1
        assert (meta['video_id'], meta['frame_id']) == (video_id, frame_index)
        assert meta['ori_video_length'] == len(raw['videos'][video_index]['file_names'])
        assert meta['img_path'] == osp.join(root, 'JPEGImages', folders[video_id],
                                            f'{frame_index:05d}.jpg')
        h, w = sizes[video_id]
        scale = min(480 / min(h, w), 1333 / max(h, w))
        expected = (int(h * scale + 0.5), int(w * scale + 0.5))
        assert meta['ori_shape'] == (h, w) and meta['img_shape'] == expected
        np.testing.assert_allclose(meta['scale_factor'], (expected[1] / w, expected[0] / h))
        assert packed['inputs'].shape == (1, 3) + expected


def test_documented_dataloader_feeds_the_track_data_preprocessor(tmp_path):
    """The docs' train dataloader config builds with mmengine and yields (N, T, 3, H, W) batches."""
    root = str(tmp_path)
    raw = dict(videos=[], annotations=[], categories=categories(['box']))
    for video_id in (1, 2):
        names, masks = moving_boxes_video(root, f'boxes{video_id}', 4, 40, 48,
                                          [((0, 0, 250), 5, 5, 10, 3)], video_id)
        raw['videos'].append(dict(id=video_id, file_names=names, length=4, height=40, width=48))
        raw['annotations'].append(dict(id=video_id, video_id=video_id, category_id=1,
                                       segmentations=[rle_of(m) for m in masks[0]]))
    dump(root, raw, 'train.json')
    with open(DOC) as f:
        blocks = re.findall(r'```python\n(.*?)```', f.read(), flags=re.S)
    scope: dict = {}
    for block in blocks:  # the pipelines, then the real-video dataloader that uses them
        if 'pipeline = [' in block or 'train_dataloader = dict(' in block:
            exec(block, scope)
        if 'train_dataloader' in scope:
            break
    cfg = copy.deepcopy(scope['train_dataloader'])
    cfg.update(num_workers=0, persistent_workers=False)
    cfg['dataset'].update(data_root=root, dataset_version=None,
                          data_prefix=dict(img_path='JPEGImages'))
    cfg['dataset']['pipeline'][0].update(num_frames=3)
    np.random.seed(0)
    batch = next(iter(Runner.build_dataloader(cfg, seed=0)))
    preprocessor = MODELS.build(dict(type='TrackDataPreprocessor', bgr_to_rgb=True,
                                     pad_size_divisor=32, pad_mask=True,
                                     mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]))
    data = preprocessor(batch, training=True)
    assert data['inputs'].shape[:3] == (2, 3, 3) and data['inputs'].dtype == torch.float32
    assert data['inputs'].shape[-2] % 32 == 0 and data['inputs'].shape[-1] % 32 == 0
    for clip in data['data_samples']:
        for frame in clip:
            assert frame.gt_instances.masks.masks.shape[-2:] == tuple(data['inputs'].shape[-2:])
            assert frame.gt_instances.instances_ids.tolist() in ([], [1], [2])


def test_boxes_and_sizes_at_their_limits(tmp_path):
    """A zero-width or zero-height box is a valid box (a negative one is not); ``min_size``
    equal to a video's short side keeps it; a one-pixel mask is an instance."""
    from ctvis.datasets.ytvis import _bbox_problem
    assert _bbox_problem([3, 4, 0, 5]) is None and _bbox_problem([3, 4, 5, 0]) is None
    assert _bbox_problem([3, 4, -1, 5]) is not None
    root = str(tmp_path)
    dump(root, tiny_vis(root, categories(YTVIS_2021_CLASSES)))
    kept = build(root, dataset_version='2021', filter_cfg=dict(min_size=20))  # video 2: 20x28
    assert [v['video_id'] for v in videos(kept)] == [1, 2]
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, 1, 1] = 1
    out = DropEmptyMaskInstances()(dict(gt_masks=BitmapMasks(masks, 4, 4),
                                        gt_instances_ids=np.array([3, 4])))
    assert out['gt_instances_ids'].tolist() == [3]
