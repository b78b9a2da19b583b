"""COCO pseudo-videos: category maps, the COCO dataset, the pseudo-video transform and the
dataset-ratio sampler used for joint training."""
import copy
import json
import os.path as osp
import re
from collections import Counter

import cv2
import mmcv
import numpy as np
import pytest
import torch
from mmengine.dataset import BaseDataset, ConcatDataset
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from torch.utils.data import Sampler

from ctvis.datasets import samplers as samplers_module
from ctvis.datasets.pseudo_video import (AMBIGUOUS_COCO_CATEGORIES, COCO_TO_OVIS,
                                         COCO_TO_YTVIS19, COCO_TO_YTVIS21, PSEUDO_VIDEO_TARGETS,
                                         CocoPseudoVideoDataset)
from ctvis.datasets.pseudo_video_transform import PseudoVideoFromImage
from ctvis.datasets.samplers import DatasetRatioSampler, SourceAspectRatioBatchSampler
from ctvis.datasets.synthetic.toy import TOY_CLASSES, make_toy_vis
from ctvis.datasets.ytvis import OVIS_CLASSES, YTVIS_2019_CLASSES, YTVIS_2021_CLASSES, YTVISDataset
from ctvis.datasets.ytvis_format import MissingFrameError, YTVISFormatError
from mmdet.datasets import CocoDataset
from mmdet.structures.bbox import HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks

pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

COCO_CLASSES = CocoDataset.METAINFO['classes']


# ----------------------------------------------------------------------------- category maps
# The official maps (ctvis/data/vis/builtin.py of the released code) as (COCO id, 1-based target
# category id) pairs, and the COCO 2017 names of those ids.
COCO_NAMES = {
    1: 'person', 2: 'bicycle', 3: 'car', 4: 'motorcycle', 5: 'airplane', 6: 'bus', 7: 'train',
    8: 'truck', 9: 'boat', 16: 'bird', 17: 'cat', 18: 'dog', 19: 'horse', 20: 'sheep', 21: 'cow',
    22: 'elephant', 23: 'bear', 24: 'zebra', 25: 'giraffe', 34: 'frisbee', 35: 'skis',
    36: 'snowboard', 41: 'skateboard', 42: 'surfboard', 43: 'tennis racket'}
OFFICIAL_MAPS = {
    'ytvis19': [(1, 1), (2, 21), (3, 6), (4, 21), (5, 28), (7, 17), (8, 29), (9, 34), (17, 14),
                (18, 8), (19, 18), (21, 15), (22, 32), (23, 20), (24, 30), (25, 22), (35, 33),
                (36, 33), (41, 5), (42, 27), (43, 40)],
    'ytvis21': [(1, 26), (2, 23), (3, 5), (4, 23), (5, 1), (7, 36), (8, 37), (9, 4), (16, 3),
                (17, 6), (18, 9), (19, 19), (21, 7), (22, 12), (23, 2), (24, 40), (25, 18),
                (34, 14), (35, 31), (36, 31), (41, 29), (42, 33), (43, 34)],
    'ovis': [(1, 1), (2, 21), (3, 25), (4, 22), (5, 23), (6, 25), (8, 25), (9, 24), (17, 3),
             (18, 4), (19, 5), (20, 6), (21, 7), (22, 8), (23, 9), (24, 10), (25, 11)],
}


@pytest.mark.parametrize('target, classes, category_map, size', [
    ('ytvis19', YTVIS_2019_CLASSES, COCO_TO_YTVIS19, 21),
    ('ytvis21', YTVIS_2021_CLASSES, COCO_TO_YTVIS21, 23),
    ('ovis', OVIS_CLASSES, COCO_TO_OVIS, 17),
])
def test_category_maps_are_the_official_ones(target, classes, category_map, size):
    assert PSEUDO_VIDEO_TARGETS[target] == (classes, category_map)
    assert set(COCO_NAMES.values()) <= set(COCO_CLASSES)
    official = {COCO_NAMES[coco_id]: classes[target_id - 1]
                for coco_id, target_id in OFFICIAL_MAPS[target]}
    assert category_map == official and len(category_map) == size


def test_ambiguous_categories():
    assert AMBIGUOUS_COCO_CATEGORIES == {'ytvis19': ('bicycle', 'skis'),
                                         'ytvis21': ('bicycle', 'skis', 'bird'), 'ovis': ()}
    # bicycle and skis are mapped onto other objects; YTVIS21 also has birds besides 'bird'.
    for target, category_map in (('ytvis19', COCO_TO_YTVIS19), ('ytvis21', COCO_TO_YTVIS21)):
        assert category_map['bicycle'] == category_map['motorcycle'] == 'motorbike'
        assert category_map['skis'] == category_map['snowboard'] == 'snowboard'
    assert {'duck', 'parrot', 'bird'} <= set(YTVIS_2021_CLASSES)
    assert 'bird' not in COCO_TO_YTVIS19 and 'bird' not in COCO_TO_OVIS


def test_renamed_classes():
    assert COCO_TO_YTVIS19['car'] == 'sedan' and COCO_TO_YTVIS21['car'] == 'car'
    assert COCO_TO_YTVIS21['frisbee'] == 'flying_disc'
    assert COCO_TO_YTVIS19['tennis racket'] == COCO_TO_YTVIS21['tennis racket'] == 'tennis_racket'
    assert {k for k, v in COCO_TO_OVIS.items() if v == 'Vehical'} == {'car', 'bus', 'truck'}


# ----------------------------------------------------------------------------- COCO dataset
def _polygon(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def _write_coco(tmp_path, with_images: bool = False) -> str:
    """A tiny COCO instances file: 4 images 60x80, person/bicycle/car/bus/bird/mouse."""
    categories = [dict(id=i, name=n) for i, n in
                  [(1, 'person'), (2, 'bicycle'), (3, 'car'), (6, 'bus'), (16, 'bird'),
                   (74, 'mouse')]]
    images = [dict(id=i, file_name=f'{i:03d}.png', height=60, width=80) for i in (1, 2, 3, 4)]

    def ann(ann_id, image_id, category_id, box, iscrowd=0):
        x0, y0, x1, y1 = box
        return dict(id=ann_id, image_id=image_id, category_id=category_id, iscrowd=iscrowd,
                    bbox=[x0, y0, x1 - x0, y1 - y0], area=(x1 - x0) * (y1 - y0),
                    segmentation=_polygon(*box))

    crowd = ann(13, 3, 1, (5, 5, 25, 25), iscrowd=1)
    crowd['segmentation'] = dict(size=[60, 80], counts=[305, 20, 40, 20, 4415])  # uncompressed
    annotations = [
        ann(10, 1, 1, (10, 10, 30, 40)),  # person
        ann(11, 1, 16, (40, 10, 60, 30)),  # bird: never mapped
        ann(12, 2, 74, (5, 5, 15, 15)),  # mouse: never mapped
        crowd,  # image 3 has only a crowd person
        ann(14, 4, 3, (20, 20, 50, 45)),  # car
        ann(15, 4, 1, (0, 0, 10, 10), iscrowd=1),  # crowd person
        ann(16, 4, 1, (60, 5, 60, 25)),  # zero-width box: skipped
        ann(17, 2, 2, (30, 30, 50, 50)),  # bicycle
        ann(18, 1, 6, (50, 35, 75, 55)),  # bus
    ]
    path = str(tmp_path / 'instances.json')
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=annotations, categories=categories), f)
    if with_images:
        colours = {10: (0, 0, 255), 14: (0, 255, 0), 18: (255, 0, 0), 17: (255, 0, 255)}
        for image in images:
            img = np.full((60, 80, 3), 90, np.uint8)
            for a in annotations:
                if a['image_id'] == image['id'] and a['id'] in colours:
                    x, y, w, h = a['bbox']
                    img[y:y + h, x:x + w] = colours[a['id']]
            cv2.imwrite(str(tmp_path / image['file_name']), img)
    return path


def _labels(dataset) -> dict:
    """video id -> [(instance id, label, ignore flag)] of every kept pseudo-video."""
    return {info['video_id']: [(i['instance_id'], i['bbox_label'], i['ignore_flag'])
                               for i in info['images'][0]['instances']]
            for info in (dataset.get_data_info(k) for k in range(len(dataset)))}


def test_coco_dataset_keeps_mapped_annotations(tmp_path):
    ann_file = _write_coco(tmp_path)
    dataset = CocoPseudoVideoDataset(check_frames=False, target='ytvis19', ann_file=ann_file,
                                     data_prefix=dict(img_path='/images'), pipeline=[])
    assert dataset.metainfo['classes'] == YTVIS_2019_CLASSES
    first = dataset.get_data_info(0)
    assert (first['video_id'], first['video_length']) == (1, 1)
    frame = first['images'][0]
    assert frame['img_path'] == '/images/001.png'
    assert (frame['img_id'], frame['frame_id'], frame['height'], frame['width']) == (1, 0, 60, 80)
    assert [(i['instance_id'], i['bbox_label'], i['ignore_flag'], i['bbox'])
            for i in frame['instances']] == [(10, 0, 0, [10, 10, 30, 40])]
    sedan, motorbike = YTVIS_2019_CLASSES.index('sedan'), YTVIS_2019_CLASSES.index('motorbike')
    # Image 3 (a crowd person only) is dropped; bird, bus and mouse are not YTVIS19 classes.
    assert _labels(dataset) == {1: [(10, 0, 0)], 2: [(17, motorbike, 0)],
                                4: [(14, sedan, 0), (15, 0, 1)]}

    with pytest.raises(ValueError, match=r"CocoPseudoVideoDataset \(.*\): filter_cfg has unknown "
                       r"keys \['min_sz'\]"):
        CocoPseudoVideoDataset(check_frames=False, target='ytvis21', ann_file=ann_file, pipeline=[],
                               filter_cfg=dict(min_sz=8))

    ytvis21 = CocoPseudoVideoDataset(check_frames=False, target='ytvis21', ann_file=ann_file,
                                     pipeline=[])
    person, bird = YTVIS_2021_CLASSES.index('person'), YTVIS_2021_CLASSES.index('bird')
    assert _labels(ytvis21)[1] == [(10, person, 0), (11, bird, 0)]
    assert _labels(ytvis21)[2] == [(17, YTVIS_2021_CLASSES.index('motorbike'), 0)]

    vehicle = OVIS_CLASSES.index('Vehical')
    ovis = CocoPseudoVideoDataset(check_frames=False, target='ovis', ann_file=ann_file, pipeline=[])
    assert _labels(ovis) == {1: [(10, 0, 0), (18, vehicle, 0)],
                             2: [(17, OVIS_CLASSES.index('Bicycle'), 0)],
                             4: [(14, vehicle, 0), (15, 0, 1)]}


def test_coco_dataset_can_drop_the_ambiguous_categories(tmp_path):
    ann_file = _write_coco(tmp_path)
    ytvis19 = CocoPseudoVideoDataset(check_frames=False, target='ytvis19',
                                     drop_ambiguous_categories=True,
                                     ann_file=ann_file, pipeline=[])
    assert ytvis19.category_map == {k: v for k, v in COCO_TO_YTVIS19.items()
                                    if k not in ('bicycle', 'skis')}
    assert sorted(_labels(ytvis19)) == [1, 4]  # image 2 had only the bicycle
    ytvis21 = CocoPseudoVideoDataset(check_frames=False, target='ytvis21',
                                     drop_ambiguous_categories=True,
                                     ann_file=ann_file, pipeline=[])
    assert len(ytvis21.category_map) == 20 and 'bird' not in ytvis21.category_map
    assert _labels(ytvis21)[1] == [(10, YTVIS_2021_CLASSES.index('person'), 0)]
    ovis = CocoPseudoVideoDataset(check_frames=False, target='ovis', drop_ambiguous_categories=True,
                                  ann_file=ann_file, pipeline=[])
    assert ovis.category_map == COCO_TO_OVIS
    for kwargs in (dict(category_map={'car': 'car'}, metainfo=dict(classes=('car', ))),
                   dict(target='ytvis21', category_map={'car': 'car'})):
        with pytest.raises(ValueError, match='drop_ambiguous_categories edits the official map'):
            CocoPseudoVideoDataset(check_frames=False, drop_ambiguous_categories=True,
                                   ann_file=ann_file, **kwargs)


def test_coco_dataset_with_an_explicit_map(tmp_path):
    dataset = CocoPseudoVideoDataset(check_frames=False, category_map={'bird': 'b', 'mouse': 'm'},
                                     metainfo=dict(classes=('m', 'b')),
                                     ann_file=_write_coco(tmp_path), pipeline=[])
    assert [(d['video_id'], [i['bbox_label'] for i in d['images'][0]['instances']])
            for d in (dataset.get_data_info(k) for k in range(len(dataset)))] == \
        [(1, [1]), (2, [0])]


def test_coco_dataset_errors_name_the_file(tmp_path):
    ann_file = _write_coco(tmp_path)
    with open(ann_file) as f:
        good = json.load(f)

    def write(content, name):
        path = str(tmp_path / name)
        with open(path, 'w') as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    cases = [
        (write('{"images": [', 'truncated.json'), 'not valid JSON'),
        (write([1, 2], 'list.json'), 'top level'),
        (write({k: v for k, v in good.items() if k != 'annotations'}, 'no_anns.json'),
         "'annotations'"),
        (write(dict(good, annotations=good['annotations'] + [
            dict(good['annotations'][0], id=99, image_id=1234)]), 'bad_image.json'),
         'annotation id=99: unknown image_id 1234'),
        (write(dict(good, annotations=[dict(good['annotations'][0], bbox=[1, 2])]),
               'bad_box.json'), 'bbox must be 4 finite numbers'),
        (write(dict(good, categories=[dict(id=1, name='toaster')], annotations=[]),
               'no_mapped.json'), 'none of the mapped COCO categories'),
        (write(dict(good, annotations=[dict(good['annotations'][0], segmentation=[[1, 2, 'x',
                                                                                  4, 5, 6]])]),
               'bad_polygon.json'), 'annotation id=10: polygon coordinates contain non-numbers'),
        (write(dict(good, annotations=[dict(good['annotations'][0], area=None)]),
               'null_area.json'), "annotation id=10: 'area' must be a finite number, got None"),
        (write(dict(good, annotations=[dict(good['annotations'][0], iscrowd=2)]),
               'crowd2.json'), "annotation id=10: 'iscrowd' must be 0 or 1, got 2"),
        # RLEs are checked before pycocotools sees them: it decodes runs that fall short of the
        # image with uninitialised memory, and names nothing when it fails
        (write(dict(good, annotations=[dict(good['annotations'][0], segmentation=dict(
            size=[60, 80], counts=[305, 20, 40, 20]))]), 'short_rle.json'),
         r'annotation id=10: malformed RLE: uncompressed counts .* sum to 385 pixels'),
        (write(dict(good, annotations=[dict(good['annotations'][0], segmentation=dict(
            size=[30, 40], counts=[305, 20, 875]))]), 'rle_size.json'),
         r'annotation id=10: RLE size \[30, 40\] does not match'),
        (write(dict(good, annotations=[dict(good['annotations'][0], segmentation=dict(
            size=[60, 80]))]), 'rle_no_counts.json'), "annotation id=10: malformed RLE"),
        # nothing to train on: failed as "need at least one array to concatenate"
        (write(dict(good, annotations=[a for a in good['annotations'] if a['category_id'] == 74]),
               'only_mice.json'), 'no image has an annotation of the target classes'),
    ]
    for path, message in cases:
        with pytest.raises(YTVISFormatError, match=message) as error:
            CocoPseudoVideoDataset(target='ytvis21', ann_file=path, pipeline=[])
        assert osp.basename(path) in str(error.value)
    with pytest.raises(ValueError, match='target must be one of'):
        CocoPseudoVideoDataset(target='ytvis2019', ann_file=ann_file)
    with pytest.raises(ValueError, match='not classes of the target'):
        CocoPseudoVideoDataset(target='ovis', category_map={'car': 'sedan'}, ann_file=ann_file)
    with pytest.raises(ValueError, match='give target'):
        CocoPseudoVideoDataset(category_map={'car': 'sedan'}, ann_file=ann_file)


def test_coco_images_are_checked_and_degenerate_polygons_dropped_at_load(tmp_path):
    """A missing image failed when a batch drew it; a 2-point polygon became an instance with an
    empty mask, so its image trained as pure background."""
    ann_file = _write_coco(tmp_path, with_images=True)
    prefix = dict(img_path=str(tmp_path))
    dataset = CocoPseudoVideoDataset(target='ytvis21', ann_file=ann_file, data_prefix=prefix,
                                     pipeline=[])
    assert sorted(_labels(dataset)) == [1, 2, 4]
    (tmp_path / '002.png').unlink()
    with pytest.raises(MissingFrameError, match=re.escape(
            f'{ann_file}: video id=2, frame 0: {tmp_path}/002.png does not exist')):
        CocoPseudoVideoDataset(target='ytvis21', ann_file=ann_file, data_prefix=prefix,
                               pipeline=[])
    with open(ann_file) as f:
        coco = json.load(f)
    for ann in coco['annotations']:
        if ann['id'] == 17:  # image 2's only target annotation
            ann['segmentation'] = [[30, 30, 50, 50]]
    with open(ann_file, 'w') as f:
        json.dump(coco, f)
    dataset = CocoPseudoVideoDataset(target='ytvis21', ann_file=ann_file, data_prefix=prefix,
                                     pipeline=[])
    assert sorted(_labels(dataset)) == [1, 4]  # image 2 left without a target annotation
    # three collinear points, and an RLE that covers nothing, draw empty masks too
    # three collinear points, and an RLE that covers nothing, draw empty masks too; a triangle
    # of positive area is kept
    bicycle = next(ann for ann in coco['annotations'] if ann['id'] == 17)
    for segmentation, kept in (([[30, 30, 40, 40, 50, 50]], [1, 4]),
                               (dict(size=[60, 80], counts=[4800]), [1, 4]),
                               ([[30, 30, 50, 30, 40, 50]], [1, 2, 4])):
        bicycle['segmentation'] = segmentation
        with open(ann_file, 'w') as f:
            json.dump(coco, f)
        dataset = CocoPseudoVideoDataset(target='ytvis21', ann_file=ann_file,
                                         data_prefix=prefix, pipeline=[], check_frames=False)
        assert sorted(_labels(dataset)) == kept


def test_coco_image_size_is_checked_when_first_loaded(tmp_path):
    """An image stored at another size than the file says (downscaled after annotation, or
    rotated by its EXIF orientation) would get masks drawn for another canvas: empty, or a
    reshape error naming no file."""
    ann_file = _write_coco(tmp_path, with_images=True)
    init_default_scope('mmdet')
    pipeline = [dict(type='VideoClipSample', num_frames=1, frame_range=1),
                dict(type='TransformBroadcaster', transforms=[dict(type='LoadImageFromFile')])]

    def first_item(prefix):
        dataset = CocoPseudoVideoDataset(target='ytvis21', ann_file=ann_file, pipeline=pipeline,
                                         data_prefix=dict(img_path=prefix))
        return dataset[0]

    assert first_item(str(tmp_path))['img_shape'] == [(60, 80)]
    cv2.imwrite(str(tmp_path / '001.png'), np.zeros((30, 40, 3), np.uint8))
    with pytest.raises(YTVISFormatError, match=re.escape(
            f'{ann_file}: video id=1: frame 0 ({tmp_path}/001.png) is 30x40 (HxW) but the file '
            'says 60x80')):
        first_item(str(tmp_path))
    # remote images are not checked (no local file to read): the dataset builds
    dataset = CocoPseudoVideoDataset(target='ytvis21', ann_file=ann_file, pipeline=[],
                                     data_prefix=dict(img_path='s3://bucket/coco/'))
    assert len(dataset) == 3


# ----------------------------------------------------------------------------- transform
H, W = 240, 320
# Instance colours (BGR) on a grey background; instance 2 is small and near a corner, so crops
# and rotations often remove it from some frames.
PATCHES = [((0, 0, 255), (40, 30, 120, 90)), ((0, 255, 0), (180, 120, 260, 200)),
           ((255, 0, 0), (296, 4, 314, 22))]


def _synthetic_image_results(polygons: bool = False) -> dict:
    img = np.full((H, W, 3), 100, np.uint8)
    masks = np.zeros((len(PATCHES), H, W), np.uint8)
    for k, (colour, (x0, y0, x1, y1)) in enumerate(PATCHES):
        img[y0:y1, x0:x1] = colour
        masks[k, y0:y1, x0:x1] = 1
    gt_masks = BitmapMasks(masks, H, W)
    if polygons:
        gt_masks = PolygonMasks([[np.array(_polygon(x0, y0, x1, y1)[0], float)]
                                 for _, (x0, y0, x1, y1) in PATCHES], H, W)
    return dict(img=img, img_path='synthetic.png', img_id=5, ori_shape=(H, W),
                img_shape=(H, W), gt_masks=gt_masks,
                gt_bboxes=np.array([box for _, box in PATCHES], np.float32),
                gt_bboxes_labels=np.array([0, 1, 2]),
                gt_instances_ids=np.array([11, 12, 13], np.int32),
                gt_ignore_flags=np.zeros(3, bool))


def _coordinate_image() -> np.ndarray:
    """uint16 B = 100 x, G = 100 y, R = 50000: every pixel encodes its own position."""
    ys, xs = np.mgrid[0:H, 0:W]
    return np.stack([xs * 100, ys * 100, np.full((H, W), 50000)], -1).astype(np.uint16)


def _core(mask: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """The mask without its boundary band (frame edges count as boundary).

    Bilinear sampling blends colours within one input pixel of an edge, which is ``scale``
    frame pixels after upscaling; nearest sampling moves the mask edge by half of that.
    """
    radius = int(np.ceil(scale)) + 1
    return cv2.erode(mask.astype(np.uint8), np.ones((2 * radius + 1, 2 * radius + 1), np.uint8),
                     borderType=cv2.BORDER_CONSTANT, borderValue=0).astype(bool)


def test_masks_follow_the_image_in_every_frame():
    transform = PseudoVideoFromImage(num_frames=6)
    dropped = 0
    for seed in range(12):
        np.random.seed(seed)
        clip = transform(_synthetic_image_results(polygons=seed % 2 == 1))
        assert len(clip['img']) == 6 and len({img.shape for img in clip['img']}) == 1
        scale = max(clip['scale_factor'][0])
        for t, img in enumerate(clip['img']):
            masks = clip['gt_masks'][t]
            ids = clip['gt_instances_ids'][t].tolist()
            assert img.shape[:2] == clip['img_shape'][t] == (masks.height, masks.width)
            assert len(masks) == len(ids) == len(clip['gt_bboxes_labels'][t]) == \
                len(clip['gt_bboxes'][t]) == len(clip['gt_ignore_flags'][t])
            assert all(area > 0 for area in masks.areas)  # empty instances were dropped
            assert clip['gt_bboxes_labels'][t].tolist() == [i - 11 for i in ids]
            np.testing.assert_array_equal(
                clip['gt_bboxes'][t], HorizontalBoxes.from_instance_masks(masks).numpy())
            # Input position of every frame pixel (the homography is checked against the image
            # pixels in test_homography_maps_input_pixels_to_frame_pixels).
            ys, xs = np.mgrid[0:img.shape[0], 0:img.shape[1]]
            src_x, src_y, _ = np.einsum('ij,jhw->ihw', np.linalg.inv(clip['homography_matrix'][t]),
                                        np.stack([xs, ys, np.ones_like(xs)]).astype(float))
            for k, (colour, (x0, y0, x1, y1)) in enumerate(PATCHES):
                # Nearest sampling: inside iff the input pixel index rounds into the patch;
                # pixels within 0.05 input pixels of a rounding edge may go either way.
                edges = np.abs(np.stack([src_x - x0, src_x - x1, src_y - y0, src_y - y1]) + 0.5)
                certain = edges.min(0) > 0.05
                expected = (src_x > x0 - 0.5) & (src_x < x1 - 0.5) & \
                    (src_y > y0 - 0.5) & (src_y < y1 - 0.5)
                colour_pixels = np.abs(img.astype(int) - colour).max(2) < 40
                if 11 + k not in ids:
                    dropped += 1
                    assert not expected[certain].any(), (seed, t, k)
                    assert not _core(colour_pixels).any(), (seed, t, k)
                    continue
                mask = masks.masks[ids.index(11 + k)].astype(bool)
                assert (mask == expected)[certain].all(), (seed, t, k)
                assert mask[_core(colour_pixels, scale)].all(), (seed, t, k)
                assert colour_pixels[_core(mask, scale)].all(), (seed, t, k)
    assert dropped > 0  # the corner instance left some frames


def test_homography_maps_input_pixels_to_frame_pixels():
    """Sampling the coordinate image at the inverse homography reproduces every frame."""
    results = _synthetic_image_results()
    results['img'] = _coordinate_image()
    transform = PseudoVideoFromImage(num_frames=4, crop_prob=0.5, flip_prob=0.5)
    for seed in range(8):
        np.random.seed(seed)
        clip = transform(dict(results))
        for img, matrix in zip(clip['img'], clip['homography_matrix']):
            inverse = np.linalg.inv(matrix.astype(np.float64))
            ys, xs = np.nonzero(_core(img[..., 2] > 40000, max(clip['scale_factor'][0])))
            src = inverse @ np.stack([xs, ys, np.ones_like(xs)])
            # Bilinear sampling of a linear ramp is exact up to cv2's 1/32-pixel grid.
            assert np.abs(img[ys, xs, 0] / 100 - src[0]).max() < 0.05
            assert np.abs(img[ys, xs, 1] / 100 - src[1]).max() < 0.05


def test_rotation_is_monotonic_and_bounded():
    directions = set()
    transform = PseudoVideoFromImage(num_frames=8, crop_prob=0.0, flip_prob=0.0)
    for seed in range(10):
        np.random.seed(seed)
        clip = transform(_synthetic_image_results())
        angles = np.degrees([np.arctan2(m[0, 1], m[0, 0]) for m in clip['homography_matrix']])
        steps = np.diff(angles)
        assert (steps > 0).all() or (steps < 0).all()
        assert np.abs(angles).max() <= 15.0 + 1e-3
        directions.add(bool(steps[0] > 0))
        # One rotation centre for the clip: frame t relative to frame 0 is a rotation about it.
        matrices = np.stack(clip['homography_matrix']).astype(np.float64)
        first_inverse = np.linalg.inv(matrices[0])
        centres = []
        for matrix in matrices[1:]:
            relative = matrix @ first_inverse
            centres.append(np.linalg.solve(np.eye(2) - relative[:2, :2], relative[:2, 2]))
        np.testing.assert_allclose(centres, [centres[0]] * len(centres), atol=0.05)
        frame_h, frame_w = clip['img_shape'][0]
        assert 0.4 * frame_w - 1 <= centres[0][0] <= 0.6 * frame_w
        assert 0.4 * frame_h - 1 <= centres[0][1] <= 0.6 * frame_h
    assert directions == {True, False}  # reversed with probability 0.5


def test_crop_window_moves_linearly_and_keeps_its_size():
    transform = PseudoVideoFromImage(num_frames=7, crop_prob=1.0, flip_prob=0.0,
                                     max_rotate_angle=0.0, crop_size_range=(150, 250))
    for seed in range(8):
        np.random.seed(seed)
        clip = transform(_synthetic_image_results())
        matrices = np.stack(clip['homography_matrix']).astype(np.float64)
        np.testing.assert_allclose(matrices[:, :2, :2], matrices[:1, :2, :2].repeat(7, 0))
        # The input position of the frame's top-left pixel: affine in the crop corner.
        corners = np.stack([np.linalg.inv(m)[:2, 2] for m in matrices])
        offsets = corners - corners[0]
        direction = corners[-1] - corners[0]
        assert np.linalg.norm(direction) > 1  # it moves
        cross = offsets[:, 0] * direction[1] - offsets[:, 1] * direction[0]
        assert np.abs(cross).max() < 1e-6 * np.linalg.norm(direction) ** 2  # collinear
        progress = offsets @ direction / (direction @ direction)
        assert (np.diff(progress) >= -1e-9).all()  # monotonic, from start to end
        assert progress[0] == pytest.approx(0) and progress[-1] == pytest.approx(1)
        # The window lies inside the resized input.
        scale_x, scale_y = matrices[0, 0, 0], matrices[0, 1, 1]
        frame_h, frame_w = clip['img_shape'][0]
        assert corners.min() >= -0.5
        assert (corners[:, 0] + frame_w / scale_x).max() <= W + 0.5
        assert (corners[:, 1] + frame_h / scale_y).max() <= H + 0.5


def _checkerboard_clip(short_edge: int) -> np.ndarray:
    """Frame 0 of a clip of a 480x640 one-pixel checkerboard resized to ``short_edge``."""
    height, width = 480, 640
    board = ((np.indices((height, width)).sum(0) % 2) * 255).astype(np.uint8)
    results = dict(img=np.repeat(board[..., None], 3, 2), img_path='board.png', img_id=1,
                   ori_shape=(height, width), img_shape=(height, width),
                   gt_masks=BitmapMasks(np.ones((1, height, width), np.uint8), height, width),
                   gt_bboxes=np.array([[0, 0, width, height]], np.float32),
                   gt_bboxes_labels=np.array([0]), gt_instances_ids=np.array([1], np.int32),
                   gt_ignore_flags=np.zeros(1, bool))
    transform = PseudoVideoFromImage(num_frames=2, crop_prob=0.0, flip_prob=0.0,
                                     max_rotate_angle=0.0, resize_short_edges=(short_edge, ))
    clip = transform(results)
    assert clip['img_shape'][0] == (short_edge, round(short_edge * 4 / 3))
    return clip['img'][0]


@pytest.mark.parametrize('short_edge, aliased_std', [(160, 70.8), (400, 41.8)])
def test_shrunk_frames_are_antialiased(short_edge, aliased_std):
    """A one-pixel checkerboard shrunk to a third (or 0.83): bilinear sampling alone lands
    on single pixels and keeps most of the 0/255 contrast (aliasing; ``aliased_std`` measured
    without the pre-shrink), where Pillow's resize of the official pipeline averages it to
    grey."""
    inner = _checkerboard_clip(short_edge)[4:-4, 4:-4, 0].astype(float)
    assert inner.std() < 0.7 * aliased_std


@pytest.mark.parametrize('short_edge, pre_shrunk', [(430, True), (432, False), (480, False)])
def test_only_shrinks_below_0_9_are_pre_shrunk(short_edge, pre_shrunk, monkeypatch):
    """At 0.9 and above the warp's bilinear sampling barely aliases, and a second
    interpolation would only blur."""
    import ctvis.datasets.pseudo_video_transform as module
    calls = []
    resize = module.cv2.resize

    def spy(*args, **kwargs):
        calls.append(kwargs.get('interpolation'))
        return resize(*args, **kwargs)

    monkeypatch.setattr(module.cv2, 'resize', spy)
    _checkerboard_clip(short_edge)
    assert calls == ([cv2.INTER_AREA] if pre_shrunk else [])


@pytest.mark.parametrize('height, width', [(1, 3000), (3000, 1), (1, 1)])
def test_elongated_images_keep_a_pixel_per_side(height, width):
    """A 1x3000 image's short side rounds to 0 at the max-edge resize: the frames failed with a
    division by zero or a reshape to (0, 768), naming no file."""
    results = dict(img=np.full((height, width, 3), 100, np.uint8), img_path='thin.png',
                   img_id=1, ori_shape=(height, width), img_shape=(height, width),
                   gt_masks=BitmapMasks(np.ones((1, height, width), np.uint8), height, width),
                   gt_bboxes=np.array([[0, 0, width, height]], np.float32),
                   gt_bboxes_labels=np.array([0]), gt_instances_ids=np.array([1], np.int32),
                   gt_ignore_flags=np.zeros(1, bool))
    for crop_prob in (0.0, 1.0):
        np.random.seed(0)
        clip = PseudoVideoFromImage(num_frames=3, crop_prob=crop_prob)(copy.deepcopy(results))
        for img, shape in zip(clip['img'], clip['img_shape']):
            assert min(shape) >= 1 and img.shape[:2] == shape


def test_frame_size_and_flip_are_shared_by_the_clip():
    transform = PseudoVideoFromImage(num_frames=5)
    flips = set()
    for seed in range(16):
        np.random.seed(seed)
        clip = transform(_synthetic_image_results())
        assert len(set(clip['flip'])) == 1 and len(set(clip['img_shape'])) == 1
        flips.add(clip['flip'][0])
        determinants = [np.linalg.det(m[:2, :2]) for m in clip['homography_matrix']]
        assert all((d < 0) == clip['flip'][0] for d in determinants)
        assert clip['flip_direction'][0] == ('horizontal' if clip['flip'][0] else None)
        assert clip['frame_id'] == list(range(5)) and clip['video_length'] == [5] * 5
    assert flips == {True, False}

    # Without crop the frame size is the shortest-edge resize of the input.
    no_crop = PseudoVideoFromImage(num_frames=2, crop_prob=0.0, max_rotate_angle=0.0,
                                   flip_prob=1.0)
    sizes = set()
    for seed in range(10):
        np.random.seed(seed)
        clip = no_crop(_synthetic_image_results())
        frame_h, frame_w = clip['img_shape'][0]
        assert (frame_w, frame_h) in {mmcv.rescale_size((W, H), (768, short))
                                      for short in no_crop.resize_short_edges}
        sizes.add(frame_h)
        # Flipped: the red patch (left in the input) is in the right half.
        red = np.abs(clip['img'][0].astype(int) - (0, 0, 255)).max(2) < 40
        assert np.nonzero(red)[1].mean() > frame_w / 2
    assert len(sizes) > 2

    # Without crop, flip and rotation a frame is exactly mmcv's keep-ratio rescale.
    plain = PseudoVideoFromImage(num_frames=1, crop_prob=0.0, max_rotate_angle=0.0,
                                 flip_prob=0.0, resize_short_edges=(400, ))
    results = _synthetic_image_results()
    results['img'] = cv2.GaussianBlur(results['img'], (0, 0), 5)  # edges in every direction
    expected = mmcv.imrescale(results['img'], (768, 400))
    frame = plain(results)['img'][0]
    assert frame.shape == expected.shape
    assert np.abs(frame.astype(int) - expected).max() <= 1


def test_list_layout_input_and_errors():
    results = _synthetic_image_results()
    listed = {key: [value] for key, value in results.items()}
    np.random.seed(3)
    from_list = PseudoVideoFromImage(num_frames=2)(listed)
    np.random.seed(3)
    from_dict = PseudoVideoFromImage(num_frames=2)(results)
    np.testing.assert_array_equal(from_list['img'][1], from_dict['img'][1])
    assert from_list['img_path'] == ['synthetic.png'] * 2

    with pytest.raises(ValueError, match='expects one image'):
        PseudoVideoFromImage()({key: [value, value] for key, value in results.items()})
    with pytest.raises(ValueError, match='gt_masks are 10x10'):
        PseudoVideoFromImage()(dict(results, gt_masks=BitmapMasks(np.zeros((3, 10, 10)), 10, 10)))
    with pytest.raises(ValueError, match='gt_instances_ids has 2 entries'):
        PseudoVideoFromImage()(dict(results, gt_instances_ids=np.array([1, 2])))
    with pytest.raises(ValueError, match='crop_size_range'):
        PseudoVideoFromImage(crop_size_range=(600, 384))
    with pytest.raises(ValueError, match='resize_short_edges'):
        PseudoVideoFromImage(resize_short_edges=(800, ), resize_max_edge=768)


@pytest.mark.parametrize('frame_sampler', [
    dict(type='BaseFrameSample'), dict(type='VideoClipSample', num_frames=1, frame_range=1)])
def test_pipeline_from_coco_file_to_packed_clip(tmp_path, frame_sampler):
    ann_file = _write_coco(tmp_path, with_images=True)
    pipeline = [
        frame_sampler,
        dict(type='TransformBroadcaster', transforms=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadTrackAnnotations', with_mask=True)]),
        dict(type='PseudoVideoFromImage', num_frames=3, crop_prob=0.0, max_rotate_angle=5.0),
        dict(type='PackTrackInputs'),
    ]
    init_default_scope('mmdet')
    dataset = CocoPseudoVideoDataset(target='ovis', ann_file=ann_file,
                                     data_prefix=dict(img_path=str(tmp_path)), pipeline=pipeline)
    np.random.seed(0)
    packed = dataset[0]  # image 1: person (red) and bus (blue)
    inputs, sample = packed['inputs'], packed['data_samples']
    assert inputs.dtype == torch.uint8 and inputs.shape[:2] == (3, 3)
    frames = sample.video_data_samples
    assert len(frames) == 3
    vehicle = OVIS_CLASSES.index('Vehical')
    for t, frame in enumerate(frames):
        gt = frame.gt_instances
        assert gt.labels.tolist() == [0, vehicle] and gt.instances_ids.tolist() == [10, 18]
        assert gt.masks.masks.shape == (2, *inputs.shape[2:])
        assert frame.metainfo['frame_id'] == t and frame.metainfo['img_id'] == 1
        image = inputs[t].permute(1, 2, 0).numpy()
        for mask, colour in zip(gt.masks.masks, [(0, 0, 255), (255, 0, 0)]):
            core = _core(mask, max(frame.metainfo['scale_factor']))
            assert core.sum() > 50
            assert (np.abs(image[core].astype(int) - colour).max(1) < 40).all()
    crowd = CocoPseudoVideoDataset(target='ovis', ann_file=ann_file,
                                   data_prefix=dict(img_path=str(tmp_path)), pipeline=pipeline)[2]
    first = crowd['data_samples'].video_data_samples[0]
    assert first.gt_instances.instances_ids.tolist() == [14]
    assert first.ignored_instances.instances_ids.tolist() == [15]


# ----------------------------------------------------------------------------- sampler
class _RangeDataset(BaseDataset):
    """n items whose content is their own index."""

    def __init__(self, size: int) -> None:
        self.size = size
        super().__init__(metainfo=dict(classes=('a', )), pipeline=[], serialize_data=False)

    def load_data_list(self):
        return [dict(value=i) for i in range(self.size)]


def _take(sampler, count):
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def test_sampler_hits_the_ratios_and_covers_each_dataset():
    concat = ConcatDataset([_RangeDataset(7), _RangeDataset(13)])
    sampler = DatasetRatioSampler(concat, ratios=[1.0, 1.5], seed=0)
    indices = np.array(_take(sampler, 20000))
    assert ((indices >= 0) & (indices < 20)).all()
    pseudo_share = (indices < 7).mean()
    assert abs(pseudo_share - 0.4) < 0.015  # binomial std 0.0035
    for part, size in ((indices[indices < 7], 7), (indices[indices >= 7] - 7, 13)):
        counts = np.bincount(part, minlength=size)
        # Permutation passes: after k picks every item has floor(k/n) or that + 1.
        assert counts.max() - counts.min() <= 1
    assert len(sampler) == 20

    ovis_like = DatasetRatioSampler(concat, ratios=[1.0, 0.75], seed=1)
    assert abs((np.array(_take(ovis_like, 20000)) < 7).mean() - 1 / 1.75) < 0.015


def test_sampler_is_seeded_and_continues_its_stream():
    concat = ConcatDataset([_RangeDataset(5), _RangeDataset(9)])
    first = DatasetRatioSampler(concat, ratios=[1, 1], seed=3)
    assert _take(first, 200) == _take(DatasetRatioSampler(concat, ratios=[1, 1], seed=3), 200)
    assert _take(DatasetRatioSampler(concat, ratios=[1, 1], seed=4), 200) != \
        _take(DatasetRatioSampler(concat, ratios=[1, 1], seed=3), 200)
    # A second iter() continues where the first stopped (like InfiniteSampler).
    assert _take(first, 50) == _take(DatasetRatioSampler(concat, ratios=[1, 1], seed=3),
                                     250)[200:]


def test_sampler_gives_each_rank_its_own_stream(monkeypatch):
    concat = ConcatDataset([_RangeDataset(6), _RangeDataset(10)])
    single = _take(DatasetRatioSampler(concat, ratios=[1, 1.5], seed=0), 400)
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(samplers_module, 'get_dist_info', lambda rank=rank: (rank, 2))
        sampler = DatasetRatioSampler(concat, ratios=[1, 1.5], seed=0)
        assert (sampler.rank, sampler.world_size) == (rank, 2)
        per_rank.append(_take(sampler, 200))
    assert per_rank[0] != per_rank[1]
    assert per_rank[0] == single[0::2] and per_rank[1] == single[1::2]


def test_sampler_rejects_bad_arguments():
    concat = ConcatDataset([_RangeDataset(3), _RangeDataset(4)])
    with pytest.raises(ValueError, match='2 sub-datasets'):
        DatasetRatioSampler(concat, ratios=[1.0])
    with pytest.raises(ValueError, match='not all 0'):
        DatasetRatioSampler(concat, ratios=[0, 0])
    with pytest.raises(ValueError, match='>= 0'):
        DatasetRatioSampler(concat, ratios=[1, -1])
    with pytest.raises(TypeError, match='ConcatDataset'):
        DatasetRatioSampler(_RangeDataset(3), ratios=[1.0])
    with pytest.raises(ValueError, match='empty'):
        DatasetRatioSampler(ConcatDataset([_RangeDataset(0), _RangeDataset(4)]),
                            ratios=[1, 1])


class _VideoSizes(BaseDataset):
    """Videos (mmdet's video format) whose first frames have the given (width, height)."""

    def __init__(self, sizes) -> None:
        self.sizes = sizes
        super().__init__(metainfo=dict(classes=('a', )), pipeline=[])

    def load_data_list(self):
        return [dict(video_id=i, images=[dict(width=w, height=h)])
                for i, (w, h) in enumerate(self.sizes)]


def test_batches_keep_to_one_source_and_orientation():
    """The official joint loader fills a batch from one source's aspect-grouped loader (its
    pools share one deque); mixed batches padded a portrait frame to a landscape one's size."""
    pseudo = _VideoSizes([(640, 480), (480, 640), (500, 500)] * 3)  # square goes as portrait
    real = _VideoSizes([(1280, 720)] * 5 + [(720, 1280)] * 4)
    concat = ConcatDataset([pseudo, real])
    batch_sampler = SourceAspectRatioBatchSampler(
        DatasetRatioSampler(concat, ratios=[1.0, 1.5], seed=0), batch_size=2)
    batches = _take(batch_sampler, 5000)
    groups = {(i >= 9, concat.get_data_info(i)['images'][0]['width'] <=
               concat.get_data_info(i)['images'][0]['height']) for i in range(18)}
    assert len(groups) == 4
    for batch in batches:
        assert len(batch) == 2
        assert len({batch_sampler.group(i) for i in batch}) == 1
        portrait = [concat.get_data_info(i)['images'][0]['width'] <=
                    concat.get_data_info(i)['images'][0]['height'] for i in batch]
        assert len(set(portrait)) == 1 and len({i >= 9 for i in batch}) == 1
    clips = np.array(batches).ravel()
    assert abs((clips < 9).mean() - 0.4) < 0.02  # the sources keep their ratios
    # no drawn clip is skipped: the batches and the clips waiting in the buckets are the
    # sampler's stream so far
    waiting = [i for bucket in batch_sampler._buckets.values() for i in bucket]
    assert len(waiting) < 4  # at most one clip per (source, orientation)
    stream = _take(DatasetRatioSampler(concat, ratios=[1.0, 1.5], seed=0),
                   len(clips) + len(waiting))
    assert Counter(stream) == Counter(clips.tolist() + waiting)
    assert len(batch_sampler) == 9 and batch_sampler.group(0) == (0, False)
    # a finite sampler's leftovers: dropped, or batched at the end
    finite = list(range(18))
    full = list(SourceAspectRatioBatchSampler(_FixedSampler(concat, finite), batch_size=4))
    # groups of 3, 6 (the square clips with the portrait ones, as detectron2), 5 and 4 clips:
    # one full batch each but the 3
    assert full == [[1, 2, 4, 5], [9, 10, 11, 12], [14, 15, 16, 17]]
    kept = list(SourceAspectRatioBatchSampler(_FixedSampler(concat, finite), 4, drop_last=False))
    assert sorted(i for batch in kept for i in batch) == finite
    with pytest.raises(ValueError, match='batch_size must be a whole number >= 1'):
        SourceAspectRatioBatchSampler(_FixedSampler(concat, finite), batch_size=0)


def test_a_new_seed_restarts_the_stream_after_workers_drew_ahead():
    """A resumed run gives the sampler the interrupted run's seed after the loader was built:
    loader workers had already drawn batches from the stream of the new run's seed, and the
    stream (a generator started on the first draw) went on with it."""
    from torch.utils.data import DataLoader
    concat = ConcatDataset([_VideoSizes([(640, 480), (480, 640)] * 4),
                            _VideoSizes([(1280, 720)] * 6)])

    def loader(seed):
        batch_sampler = SourceAspectRatioBatchSampler(
            DatasetRatioSampler(concat, ratios=[1.0, 1.5], seed=seed), batch_size=2)
        return DataLoader(concat, batch_sampler=batch_sampler, num_workers=1,
                          collate_fn=lambda items: [item['video_id'] for item in items])

    expected = _take(loader(0), 12)
    resumed = loader(5)
    drawn_ahead = iter(resumed)  # the workers prefetch from the seed-5 stream
    next(drawn_ahead)
    resumed.batch_sampler.sampler.seed = 0  # what RNGStateHook does on resume
    resumed.batch_sampler.reset()
    del drawn_ahead
    assert _take(resumed, 12) == expected


class _FixedSampler(Sampler):
    def __init__(self, dataset, indices):
        self.dataset, self.indices = dataset, indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def test_joint_training_dataloader_mixes_pseudo_and_real_clips(tmp_path):
    """Runner-built dataloader over ConcatDataset(pseudo COCO, toy videos) with the sampler."""
    init_default_scope('mmdet')
    num_frames = 3
    toy = make_toy_vis(str(tmp_path / 'toy'), 2, 5, seed=0, size=(48, 64))
    pseudo = CocoPseudoVideoDataset(
        category_map={'person': 'disc', 'car': 'square'}, metainfo=dict(classes=TOY_CLASSES),
        ann_file=_write_coco(tmp_path, with_images=True), data_prefix=dict(img_path=str(tmp_path)),
        pipeline=[
            dict(type='BaseFrameSample'),
            dict(type='TransformBroadcaster', transforms=[
                dict(type='LoadImageFromFile'), dict(type='LoadTrackAnnotations', with_mask=True)]),
            dict(type='PseudoVideoFromImage', num_frames=num_frames, resize_short_edges=(48, ),
                 crop_prob=0.0),
            dict(type='PackTrackInputs'),
        ])
    real = YTVISDataset(
        ann_file=toy['train'], data_prefix=dict(img_path=toy['img_root']), pipeline=[
            dict(type='VideoClipSample', num_frames=num_frames, frame_range=2),
            dict(type='TransformBroadcaster', share_random_params=True, transforms=[
                dict(type='LoadImageFromFile'), dict(type='LoadTrackAnnotations', with_mask=True)]),
            dict(type='PackTrackInputs'),
        ])
    loader = Runner.build_dataloader(dict(
        batch_size=4, num_workers=0, dataset=ConcatDataset([pseudo, real]),
        sampler=dict(type='DatasetRatioSampler', ratios=[1.0, 1.5]),
        batch_sampler=dict(type='SourceAspectRatioBatchSampler'),  # as the zoo configs
        collate_fn=dict(type='pseudo_collate')), seed=0)
    sources = Counter()
    batches = iter(loader)
    for _ in range(6):
        batch = next(batches)
        assert len(batch['inputs']) == 4
        batch_sources = set()
        for inputs, sample in zip(batch['inputs'], batch['data_samples']):
            assert inputs.shape[0] == num_frames and len(sample.video_data_samples) == num_frames
            path = sample.video_data_samples[0].metainfo['img_path']
            batch_sources.add('pseudo' if path.endswith('.png') else 'real')
        assert len(batch_sources) == 1  # one source per batch
        sources[batch_sources.pop()] += 1
    assert sources['pseudo'] > 0 and sources['real'] > 0


def test_coco_instances_at_the_size_and_area_limits():
    """A 1x1 box of area 1 is an instance; area 0 is not."""
    square = [[0, 0, 1, 0, 1, 1, 0, 1]]
    one_pixel = dict(id=1, bbox=[0, 0, 1, 1], area=1, segmentation=square)
    assert CocoPseudoVideoDataset._parse_instance(one_pixel, 0, 'where') is not None
    assert CocoPseudoVideoDataset._parse_instance(dict(one_pixel, area=0), 0, 'where') is None


def test_transform_settings_at_their_bounds_are_accepted():
    PseudoVideoFromImage(resize_short_edges=(768, ), resize_max_edge=768,
                         crop_size_range=(400, 400), rotate_center_range=(0.5, 1.0))


def test_a_flipped_frame_is_the_exact_mirror_image():
    height, width = 40, 60
    img = np.random.RandomState(0).randint(0, 255, (height, width, 3), np.uint8)
    masks = np.zeros((1, height, width), np.uint8)
    masks[0, 5:10, 0:3] = 1
    results = dict(img=img, img_path='x.png', img_id=1, ori_shape=(height, width),
                   img_shape=(height, width), gt_masks=BitmapMasks(masks, height, width),
                   gt_instances_ids=np.array([1]), gt_bboxes_labels=np.array([0]))
    clip = PseudoVideoFromImage(num_frames=1, crop_prob=0.0, max_rotate_angle=0.0,
                                flip_prob=1.0, resize_short_edges=(height, ))(results)
    assert np.array_equal(clip['img'][0], img[:, ::-1])
    assert np.array_equal(clip['gt_masks'][0].masks[0], masks[0, :, ::-1])


def test_a_source_with_ratio_zero_is_switched_off():
    concat = ConcatDataset([_RangeDataset(3), _RangeDataset(4)])
    assert min(_take(DatasetRatioSampler(concat, ratios=[0, 1], seed=0), 100)) >= 3
    DatasetRatioSampler(ConcatDataset([_RangeDataset(0), _RangeDataset(4)]), ratios=[0, 1])


def test_batches_of_one_and_the_length_of_kept_leftovers():
    concat = ConcatDataset([_VideoSizes([(640, 480)] * 5)])
    one = SourceAspectRatioBatchSampler(_FixedSampler(concat, list(range(5))), batch_size=1)
    assert list(one) == [[i] for i in range(5)]
    kept = SourceAspectRatioBatchSampler(_FixedSampler(concat, list(range(5))), 2,
                                         drop_last=False)
    assert len(kept) == 3 == len(list(kept))
