"""Pseudo-videos from COCO images (CTVIS joint training with image data).

Three pieces:

* **Category maps** from COCO class names to the classes of a VIS target (YTVIS 2019, YTVIS 2021,
  OVIS): the official CTVIS maps, see :data:`COCO_TO_YTVIS19` and below. Keys are COCO category
  *names* (the ids are looked up in the annotation file).
* :class:`CocoPseudoVideoDataset` reads a COCO instances JSON directly and yields every image with
  target-class annotations as a one-frame video in mmdet's video format.
* :class:`PseudoVideoFromImage` turns that loaded image into a T-frame clip with smoothly varying,
  clip-coherent geometry (moving crop, monotonic rotation), the CTVIS pseudo-video augmentation.

A training pipeline for the pseudo-video dataset::

    pseudo_pipeline = [
        dict(type='BaseFrameSample'),  # the image, as a 1-frame list layout
        dict(type='TransformBroadcaster', transforms=[
            dict(type='LoadImageFromFile'),
            dict(type='LoadTrackAnnotations', with_mask=True)]),
        dict(type='PseudoVideoFromImage', num_frames=10),
        dict(type='PackTrackInputs'),
    ]
"""
import math
import os.path as osp
from collections import Counter
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.logging import print_log

from mmdet.datasets import BaseVideoDataset
from mmdet.registry import DATASETS, TRANSFORMS
from mmdet.structures.bbox import BaseBoxes, HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks
from .ytvis import (OVIS_CLASSES, YTVIS_2019_CLASSES, YTVIS_2021_CLASSES, DatasetFormatError,
                    read_annotation_json)

# ----------------------------------------------------------------------------- category maps
# The official CTVIS maps (COCO_TO_YTVIS_2019 / _2021 / COCO_TO_OVIS of the released code: 21 / 23
# / 17 COCO ids), written with COCO 2017 category names on the left; the ids are looked up in the
# annotation file. Some entries are approximate (AMBIGUOUS_COCO_CATEGORIES):
# * a COCO class mapped onto another object that the target has and COCO lacks: 'bicycle' ->
#   'motorbike' and 'skis' -> 'snowboard' (YTVIS 2019 and 2021 have no bicycle or skis class);
# * COCO 'bird' -> YTVIS 2021 'bird', although YTVIS 2021 also has 'duck' and 'parrot', which COCO
#   labels 'bird' too (YTVIS 2019 and OVIS split birds into finer classes: 'bird' is not mapped).
# Not mapped by any official map: e.g. COCO 'mouse' (the computer mouse; the targets' is the
# animal), 'bus' and 'sheep' for YTVIS, 'train' for OVIS.

#: COCO -> YTVIS 2019 (21 COCO classes). 'car' -> 'sedan', YTVIS 2019's only car class.
COCO_TO_YTVIS19: Dict[str, str] = {
    'person': 'person',
    'bicycle': 'motorbike',  # ambiguous
    'car': 'sedan',
    'motorcycle': 'motorbike',
    'airplane': 'airplane',
    'train': 'train',
    'truck': 'truck',
    'boat': 'boat',
    'cat': 'cat',
    'dog': 'dog',
    'horse': 'horse',
    'cow': 'cow',
    'elephant': 'elephant',
    'bear': 'bear',
    'zebra': 'zebra',
    'giraffe': 'giraffe',
    'skis': 'snowboard',  # ambiguous
    'snowboard': 'snowboard',
    'skateboard': 'skateboard',
    'surfboard': 'surfboard',
    'tennis racket': 'tennis_racket',
}

#: COCO -> YTVIS 2021 (23 COCO classes): the YTVIS 2019 map with 'car' -> 'car' (2021 renamed
#: 'sedan'), plus 'bird' -> 'bird' (ambiguous) and 'frisbee' -> 'flying_disc'.
COCO_TO_YTVIS21: Dict[str, str] = {
    **COCO_TO_YTVIS19, 'car': 'car', 'bird': 'bird', 'frisbee': 'flying_disc'}

#: COCO -> OVIS (17 COCO classes). OVIS 'Vehical' (the official spelling) is a superclass of road
#: vehicles: COCO 'car', 'bus' and 'truck' all map onto it.
COCO_TO_OVIS: Dict[str, str] = {
    'person': 'Person',
    'bicycle': 'Bicycle',
    'car': 'Vehical',
    'motorcycle': 'Motorcycle',
    'airplane': 'Airplane',
    'bus': 'Vehical',
    'truck': 'Vehical',
    'boat': 'Boat',
    'cat': 'Cat',
    'dog': 'Dog',
    'horse': 'Horse',
    'sheep': 'Sheep',
    'cow': 'Cow',
    'elephant': 'Elephant',
    'bear': 'Bear',
    'zebra': 'Zebra',
    'giraffe': 'Giraffe',
}

#: target name -> (target classes in category-id order, COCO name -> target name map).
PSEUDO_VIDEO_TARGETS: Dict[str, Tuple[Tuple[str, ...], Dict[str, str]]] = {
    'ytvis19': (YTVIS_2019_CLASSES, COCO_TO_YTVIS19),
    'ytvis21': (YTVIS_2021_CLASSES, COCO_TO_YTVIS21),
    'ovis': (OVIS_CLASSES, COCO_TO_OVIS),
}

#: target name -> the COCO classes of its official map whose target label is approximate (see the
#: notes above); ``CocoPseudoVideoDataset(drop_ambiguous_categories=True)`` leaves them out.
AMBIGUOUS_COCO_CATEGORIES: Dict[str, Tuple[str, ...]] = {
    'ytvis19': ('bicycle', 'skis'),
    'ytvis21': ('bicycle', 'skis', 'bird'),
    'ovis': (),
}


# ----------------------------------------------------------------------------- dataset
@DATASETS.register_module()
class CocoPseudoVideoDataset(BaseVideoDataset):
    """COCO images as one-frame videos labelled with the classes of a VIS dataset.

    Reads a COCO instances JSON directly (no conversion step). Annotations whose category maps
    onto the target are kept and labelled with the target's contiguous class index; the others
    are dropped, and so are images left without a non-crowd annotation (the counts are logged).
    Crowd annotations are kept with ``ignore_flag=1`` (mmdet's ``PackTrackInputs`` moves them to
    ``ignored_instances``). ``instance_id`` is the COCO annotation id, unique in the file.

    Each item follows mmdet's video format with ``video_length=1`` and ``video_id = img_id =``
    the COCO image id::

        dict(video_id=int, video_length=1, images=[dict(
            img_id=int, img_path=str, height=int, width=int, frame_id=0, video_id=int,
            instances=[dict(bbox=[x1, y1, x2, y2], bbox_label=int, mask=<polygons | RLE>,
                            instance_id=int, ignore_flag=0 | 1)])])

    Args:
        target (str, optional): 'ytvis19', 'ytvis21' or 'ovis': fixes the classes and the default
            category map (:data:`PSEUDO_VIDEO_TARGETS`). Defaults to None.
        category_map (Mapping[str, str], optional): COCO category name -> target class name,
            replacing the target's default map. Needed when ``target`` is None, together with
            ``metainfo=dict(classes=...)``. Defaults to None.
        drop_ambiguous_categories (bool): Leave out the entries of the target's official map
            whose target label is approximate (:data:`AMBIGUOUS_COCO_CATEGORIES`: COCO bicycle
            and skis for YTVIS, and bird for YTVIS 2021). Needs ``target`` and no
            ``category_map``. Defaults to False (the official maps).
        metainfo (dict, optional): With ``target``, its classes must equal the target's.
        **kwargs: Arguments of :class:`mmengine.dataset.BaseDataset` (``ann_file``,
            ``data_root``, ``data_prefix=dict(img_path=...)``, ``pipeline`` ...).
    """

    def __init__(self,
                 *,
                 target: Optional[str] = None,
                 category_map: Optional[Mapping[str, str]] = None,
                 drop_ambiguous_categories: bool = False,
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        name = type(self).__name__
        metainfo = dict(metainfo or {})
        if drop_ambiguous_categories and (target is None or category_map is not None):
            raise ValueError(f'{name}: drop_ambiguous_categories edits the official map of a '
                             'target: give target=... and no category_map')
        if target is not None:
            if target not in PSEUDO_VIDEO_TARGETS:
                raise ValueError(f'{name}: target must be one of '
                                 f'{sorted(PSEUDO_VIDEO_TARGETS)} or None, got {target!r}')
            target_classes, default_map = PSEUDO_VIDEO_TARGETS[target]
            if 'classes' in metainfo and tuple(metainfo['classes']) != target_classes:
                raise ValueError(f"{name}: metainfo['classes'] contradicts target={target!r}")
            metainfo['classes'] = target_classes
            if category_map is None:
                dropped = AMBIGUOUS_COCO_CATEGORIES[target] if drop_ambiguous_categories else ()
                category_map = {coco: target_name for coco, target_name in default_map.items()
                                if coco not in dropped}
        elif category_map is None or metainfo.get('classes') is None:
            raise ValueError(f'{name}: give target=... or both category_map=... and '
                             "metainfo=dict(classes=...)")
        classes = tuple(metainfo['classes'])
        if not isinstance(category_map, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in category_map.items()):
            raise TypeError(f'{name}: category_map must map COCO category names (str) to '
                            f'target class names (str), got {category_map!r}')
        unknown = sorted(set(category_map.values()) - set(classes))
        if unknown:
            raise ValueError(f'{name}: category_map targets {unknown} are not classes of the '
                             f'target ({classes})')
        self.target = target
        self.drop_ambiguous_categories = drop_ambiguous_categories
        self.category_map = dict(category_map)
        super().__init__(metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        """Read and validate ``self.ann_file`` and build the one-frame videos.

        Returns:
            list[dict]: One item per kept image (see the class docstring).
        """
        raw = self._read_json()
        labels = self._category_labels(raw['categories'])
        images = self._parse_images(raw['images'])
        skipped = Counter()
        seen_ann_ids = set()
        for index, ann in enumerate(raw['annotations']):
            if not isinstance(ann, dict) or not isinstance(ann.get('id'), int):
                raise DatasetFormatError(
                    f'{self.ann_file}: annotation #{index} has no int id: {str(ann)[:200]}')
            where = f"{self.ann_file}: annotation id={ann['id']}"
            if ann['id'] in seen_ann_ids:
                raise DatasetFormatError(f'{where}: duplicated annotation id')
            seen_ann_ids.add(ann['id'])
            image = images.get(ann.get('image_id'))
            if image is None:
                raise DatasetFormatError(f"{where}: unknown image_id {ann.get('image_id')!r}")
            category_id = ann.get('category_id')
            if category_id not in labels:
                raise DatasetFormatError(f'{where}: unknown category_id {category_id!r}')
            if labels[category_id] is None:
                skipped['other category'] += 1
                continue
            instance = self._parse_instance(ann, labels[category_id], where)
            if instance is None:
                skipped['empty box or mask'] += 1
                continue
            image['instances'].append(instance)

        data_list = []
        for img_id, image in images.items():
            if not any(instance['ignore_flag'] == 0 for instance in image['instances']):
                skipped['images without target annotations'] += 1
                continue
            data_list.append(dict(video_id=img_id, video_length=1, images=[image]))
        print_log(
            f'{type(self).__name__}: {self.ann_file}: kept {len(data_list)} of {len(images)} '
            f'images as pseudo-videos; skipped {dict(skipped)}', logger='current')
        return data_list

    def _read_json(self) -> dict:
        raw = read_annotation_json(self.ann_file, type(self).__name__)
        for key in ('images', 'annotations', 'categories'):
            if not isinstance(raw.get(key), list):
                raise DatasetFormatError(
                    f"{self.ann_file}: '{key}' must be a list in a COCO instances file "
                    f'(found keys {sorted(raw)})')
        return raw

    def _category_labels(self, categories: list) -> Dict[int, Optional[int]]:
        """COCO category id -> target label (None for categories that are not mapped)."""
        classes = self.metainfo['classes']
        labels: Dict[int, Optional[int]] = {}
        names = set()
        for category in categories:
            if (not isinstance(category, dict) or not isinstance(category.get('id'), int)
                    or not isinstance(category.get('name'), str)):
                raise DatasetFormatError(
                    f'{self.ann_file}: category {category!r} needs an int id and a str name')
            if category['id'] in labels:
                raise DatasetFormatError(
                    f"{self.ann_file}: duplicated category id {category['id']}")
            target_name = self.category_map.get(category['name'])
            labels[category['id']] = (None if target_name is None else
                                      classes.index(target_name))
            names.add(category['name'])
        missing = sorted(set(self.category_map) - names)
        if len(missing) == len(self.category_map):
            raise DatasetFormatError(
                f'{self.ann_file}: none of the mapped COCO categories {sorted(self.category_map)} '
                'is in the file; is this a COCO instances file?')
        if missing:
            print_log(f'{type(self).__name__}: {self.ann_file}: mapped categories not in the '
                      f'file: {missing}', logger='current')
        return labels

    def _parse_images(self, raw_images: list) -> Dict[int, dict]:
        """COCO image id -> frame info (with an empty ``instances`` list), in file order."""
        img_prefix = self.data_prefix.get('img_path', '') or ''
        images: Dict[int, dict] = {}
        for index, raw_image in enumerate(raw_images):
            if not isinstance(raw_image, dict) or not isinstance(raw_image.get('id'), int):
                raise DatasetFormatError(
                    f'{self.ann_file}: image #{index} has no int id: {str(raw_image)[:200]}')
            img_id = raw_image['id']
            file_name, height, width = (raw_image.get('file_name'), raw_image.get('height'),
                                        raw_image.get('width'))
            if (not isinstance(file_name, str) or not isinstance(height, int)
                    or not isinstance(width, int) or height < 1 or width < 1):
                raise DatasetFormatError(
                    f'{self.ann_file}: image id={img_id} needs a str file_name and positive int '
                    f'height/width, got {file_name!r}, {height!r}, {width!r}')
            if img_id in images:
                raise DatasetFormatError(f'{self.ann_file}: duplicated image id {img_id}')
            img_path = osp.join(img_prefix, file_name)
            images[img_id] = dict(img_id=img_id, img_path=img_path, file_name=file_name,
                                  height=height, width=width, frame_id=0, video_id=img_id,
                                  instances=[])
        return images

    @staticmethod
    def _parse_instance(ann: dict, label: int, where: str) -> Optional[dict]:
        """One instance of the shared format, or None when its box or mask is empty."""
        if 'segmentation' not in ann or 'bbox' not in ann:
            raise DatasetFormatError(f"{where}: needs 'segmentation' and 'bbox'")
        bbox = ann['bbox']
        if (not isinstance(bbox, list) or len(bbox) != 4 or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            raise DatasetFormatError(f'{where}: bbox must be 4 finite numbers, got {bbox!r}')
        segmentation = ann['segmentation']
        if not isinstance(segmentation, (list, dict)):
            raise DatasetFormatError(f'{where}: segmentation must be polygons or an RLE dict, '
                                     f'got {type(segmentation).__name__}')
        x, y, w, h = bbox
        if w < 1 or h < 1 or ann.get('area', 1) <= 0 or not segmentation:
            return None
        return dict(bbox=[x, y, x + w, y + h], bbox_label=label, mask=segmentation,
                    instance_id=ann['id'], ignore_flag=int(bool(ann.get('iscrowd', 0))))

    def filter_data(self) -> List[dict]:
        """Drop images smaller than ``filter_cfg['min_size']`` (images without target annotations
        are already dropped while loading)."""
        min_size = (self.filter_cfg or {}).get('min_size', 0)
        if self.test_mode or not min_size:
            return self.data_list
        kept = [video for video in self.data_list
                if min(video['images'][0]['height'], video['images'][0]['width']) >= min_size]
        print_log(f'{type(self).__name__}: dropped {len(self.data_list) - len(kept)} images '
                  f'smaller than {min_size} px', logger='current')
        return kept


# ----------------------------------------------------------------------------- transform
def _resize_matrix(src_hw: Tuple[int, int], dst_hw: Tuple[int, int]) -> np.ndarray:
    """3x3 pixel-index map of a resize, pixel-centre aligned like ``cv2.resize``."""
    sx, sy = dst_hw[1] / src_hw[1], dst_hw[0] / src_hw[0]
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])


def _translate_matrix(dx: float, dy: float) -> np.ndarray:
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1]], dtype=np.float64)


def _pack_masks(masks: np.ndarray) -> np.ndarray:
    """Bit-pack (N, H, W) binary masks into (H, W, ceil(N / 8)) uint8 channels.

    One ``cv2.warpAffine`` call then moves 8 masks per channel, and nearest sampling keeps
    every bit exact.
    """
    return np.ascontiguousarray(np.packbits(masks.astype(bool), axis=0).transpose(1, 2, 0))


def _warp_packed_masks(packed: np.ndarray, num_masks: int, matrix: np.ndarray,
                       out_hw: Tuple[int, int]) -> np.ndarray:
    """Warp masks packed by :func:`_pack_masks` (nearest); returns (N, h, w) uint8."""
    if num_masks == 0:
        return np.zeros((0, *out_hw), dtype=np.uint8)
    warped = []
    for start in range(0, packed.shape[2], 256):  # cv2 handles at most 512 channels
        chunk = cv2.warpAffine(np.ascontiguousarray(packed[..., start:start + 256]),
                               matrix[:2], (out_hw[1], out_hw[0]), flags=cv2.INTER_NEAREST,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        warped.append(chunk.reshape(*out_hw, -1))
    warped_bits = np.ascontiguousarray(np.concatenate(warped, axis=2).transpose(2, 0, 1))
    return np.unpackbits(warped_bits, axis=0, count=num_masks)


@TRANSFORMS.register_module()
class PseudoVideoFromImage(BaseTransform):
    """Turn one annotated image into a T-frame pseudo-video clip (CTVIS §3).

    Random parameters are drawn once per clip; the geometry changes smoothly over the frames:

    1. with ``crop_prob``: shortest-edge resize to one of ``crop_resize_short_edges`` (longer
       edge at most ``crop_resize_max_edge``), then a crop of random size in ``crop_size_range``
       (clipped to the image) whose top-left corner moves along a straight line between two
       random positions; frame t sits at fraction w_t of the way, where w are sorted uniform
       samples (reversed with ``reverse_prob``);
    2. shortest-edge resize to one of ``resize_short_edges`` (longer edge at most
       ``resize_max_edge``);
    3. horizontal flip of the whole clip with ``flip_prob``;
    4. rotation by T angles drawn uniformly in ±``max_rotate_angle`` degrees, sorted (reversed
       with ``reverse_prob``), about one centre drawn in ``rotate_center_range`` (relative, both
       axes), output size unchanged (corners filled with 0). Positive angles turn
       counter-clockwise (cv2 convention).

    The four steps are composed into one affine map per frame and applied with a single
    ``cv2.warpAffine`` (bilinear for the image, nearest for the masks), so the masks follow the
    image exactly and the image is interpolated once rather than four times. Boxes are
    recomputed from the warped masks; an instance whose mask is empty in a frame is dropped
    from that frame. All frames have the same size.

    The input is one image, either as a plain results dict or as the 1-frame list layout that
    ``BaseFrameSample`` + ``TransformBroadcaster`` produce. The output is the T-frame list
    layout that mmdet's ``PackTrackInputs`` expects: every key holds a list with one entry per
    frame.

    Required Keys:

    - img
    - gt_masks (BitmapMasks | PolygonMasks)
    - gt_bboxes (np.ndarray | HorizontalBoxes, optional)
    - gt_bboxes_labels (optional)
    - gt_instances_ids (optional)
    - gt_ignore_flags (optional)

    Modified Keys (now lists of T entries; the instance keys filtered per frame):

    - img
    - img_shape
    - gt_masks (BitmapMasks)
    - gt_bboxes
    - gt_bboxes_labels
    - gt_instances_ids
    - gt_ignore_flags
    - frame_id (0..T-1), video_length and ori_video_length (T)
    - every other key is repeated for each frame

    Added Keys:

    - scale_factor (tuple[float, float]): the resize factors of steps 1-2
    - flip (bool), flip_direction ('horizontal' | None)
    - homography_matrix (np.ndarray): (3, 3) float32 map from input pixels to frame pixels
    - key_frame_flags (list[bool]): True for frame 0

    Args:
        num_frames (int): Clip length T. Defaults to 10.
        crop_prob (float): Probability of step 1. Defaults to 0.5.
        crop_resize_short_edges (Sequence[int]): Choices of the step-1 shorter edge.
            Defaults to (400, 500, 600).
        crop_resize_max_edge (int): Step-1 longer edge limit. Defaults to 1333.
        crop_size_range (tuple[int, int]): Inclusive range of crop height and width (each drawn
            separately). Defaults to (384, 600).
        resize_short_edges (Sequence[int]): Choices of the step-2 shorter edge.
            Defaults to (320, 352, 392, 416, 448, 480, 512, 544, 576, 608, 640).
        resize_max_edge (int): Step-2 longer edge limit. Defaults to 768.
        flip_prob (float): Probability of the clip-wide horizontal flip. Defaults to 0.5.
        max_rotate_angle (float): Largest rotation in degrees; 0 disables step 4.
            Defaults to 15.
        rotate_center_range (tuple[float, float]): Range of the rotation centre, relative to the
            frame size. Defaults to (0.4, 0.6).
        reverse_prob (float): Probability to reverse the crop motion and, separately, the order
            of the rotation angles. Defaults to 0.5.
    """

    def __init__(self,
                 num_frames: int = 10,
                 crop_prob: float = 0.5,
                 crop_resize_short_edges: Sequence[int] = (400, 500, 600),
                 crop_resize_max_edge: int = 1333,
                 crop_size_range: Tuple[int, int] = (384, 600),
                 resize_short_edges: Sequence[int] = (320, 352, 392, 416, 448, 480, 512, 544,
                                                      576, 608, 640),
                 resize_max_edge: int = 768,
                 flip_prob: float = 0.5,
                 max_rotate_angle: float = 15.0,
                 rotate_center_range: Tuple[float, float] = (0.4, 0.6),
                 reverse_prob: float = 0.5) -> None:
        name = type(self).__name__
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f'{name}: num_frames must be an int >= 1, got {num_frames}')
        for arg, prob in (('crop_prob', crop_prob), ('flip_prob', flip_prob),
                          ('reverse_prob', reverse_prob)):
            if not 0 <= prob <= 1:
                raise ValueError(f'{name}: {arg} must be in [0, 1], got {prob}')
        for arg, edges, max_edge in (
                ('crop_resize_short_edges', crop_resize_short_edges, crop_resize_max_edge),
                ('resize_short_edges', resize_short_edges, resize_max_edge)):
            if len(edges) == 0 or not all(0 < edge <= max_edge for edge in edges):
                raise ValueError(f'{name}: {arg} must be non-empty, positive and at most the '
                                 f'matching max edge {max_edge}, got {edges}')
        if not 0 < crop_size_range[0] <= crop_size_range[1]:
            raise ValueError(f'{name}: crop_size_range must be 0 < low <= high, '
                             f'got {crop_size_range}')
        if not 0 <= rotate_center_range[0] <= rotate_center_range[1] <= 1:
            raise ValueError(f'{name}: rotate_center_range must lie in [0, 1], '
                             f'got {rotate_center_range}')
        if max_rotate_angle < 0:
            raise ValueError(f'{name}: max_rotate_angle must be >= 0, got {max_rotate_angle}')
        self.num_frames = num_frames
        self.crop_prob = crop_prob
        self.crop_resize_short_edges = tuple(crop_resize_short_edges)
        self.crop_resize_max_edge = crop_resize_max_edge
        self.crop_size_range = tuple(crop_size_range)
        self.resize_short_edges = tuple(resize_short_edges)
        self.resize_max_edge = resize_max_edge
        self.flip_prob = flip_prob
        self.max_rotate_angle = max_rotate_angle
        self.rotate_center_range = tuple(rotate_center_range)
        self.reverse_prob = reverse_prob

    def _monotonic_weights(self) -> np.ndarray:
        """(T,) sorted uniform samples in [0, 1], reversed with ``reverse_prob``."""
        weights = np.sort(np.random.uniform(0.0, 1.0, self.num_frames))
        return weights[::-1].copy() if np.random.rand() < self.reverse_prob else weights

    def sample_clip_geometry(
            self, height: int, width: int
    ) -> Tuple[np.ndarray, Tuple[int, int], bool, Tuple[float, float]]:
        """Draw the clip's random parameters and build the per-frame affine maps.

        Args:
            height (int): Input image height H.
            width (int): Input image width W.

        Returns:
            tuple: ``matrices`` (T, 3, 3) float64 maps from input pixel indices to frame pixel
            indices, the frame size ``(h, w)``, whether the clip is flipped, and the resize
            ``scale_factor`` (w_scale, h_scale) of steps 1-2.
        """
        num_frames = self.num_frames
        # 1. Resize + linearly moving crop.
        if np.random.rand() < self.crop_prob:
            short_edge = int(np.random.choice(self.crop_resize_short_edges))
            resized_w, resized_h = mmcv.rescale_size((width, height),
                                                     (self.crop_resize_max_edge, short_edge))
            pre_resize = _resize_matrix((height, width), (resized_h, resized_w))
            low, high = self.crop_size_range
            crop_h = np.random.randint(min(resized_h, low), min(resized_h, high) + 1)
            crop_w = np.random.randint(min(resized_w, low), min(resized_w, high) + 1)
            start, end = (np.random.uniform((0, 0), (resized_w - crop_w, resized_h - crop_h))
                          for _ in range(2))
            corners = start + self._monotonic_weights()[:, None] * (end - start)  # (T, 2)
            per_frame = [_translate_matrix(-x, -y) @ pre_resize for x, y in corners]
            region_hw = (crop_h, crop_w)
            first_scale = (resized_w / width, resized_h / height)
        else:
            per_frame = [np.eye(3)] * num_frames
            region_hw = (height, width)
            first_scale = (1.0, 1.0)
        # 2. Shortest-edge resize.
        short_edge = int(np.random.choice(self.resize_short_edges))
        out_w, out_h = mmcv.rescale_size((region_hw[1], region_hw[0]),
                                         (self.resize_max_edge, short_edge))
        shared = _resize_matrix(region_hw, (out_h, out_w))
        scale_factor = (first_scale[0] * out_w / region_hw[1],
                        first_scale[1] * out_h / region_hw[0])
        # 3. Clip-wide horizontal flip.
        flip = bool(np.random.rand() < self.flip_prob)
        if flip:
            shared = np.array([[-1, 0, out_w - 1], [0, 1, 0], [0, 0, 1]]) @ shared
        # 4. Monotonic rotation about one centre.
        if self.max_rotate_angle > 0:
            angles = -self.max_rotate_angle + 2 * self.max_rotate_angle * self._monotonic_weights()
            centre = np.random.uniform(*self.rotate_center_range, size=2) * (out_w, out_h)
            rotations = [np.vstack([cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])),
                                                            float(angle), 1.0), (0, 0, 1)])
                         for angle in angles]
        else:
            rotations = [np.eye(3)] * num_frames
        matrices = np.stack([rotation @ shared @ frame_map
                             for rotation, frame_map in zip(rotations, per_frame)])
        return matrices, (out_h, out_w), flip, scale_factor

    def transform(self, results: dict) -> dict:
        """Build the clip (see the class docstring for the keys)."""
        results = self._single_image(results)
        img = results['img']
        height, width = img.shape[:2]
        where = f"{type(self).__name__} ({results.get('img_path', 'image')})"
        if 'gt_masks' not in results:
            raise KeyError(f'{where}: needs gt_masks; load annotations with '
                           'LoadTrackAnnotations(with_mask=True) first')
        gt_masks = results['gt_masks']
        if isinstance(gt_masks, PolygonMasks):
            gt_masks = gt_masks.to_bitmap()
        if not isinstance(gt_masks, BitmapMasks):
            raise TypeError(f'{where}: gt_masks must be BitmapMasks or PolygonMasks, '
                            f'got {type(gt_masks).__name__}')
        if (gt_masks.height, gt_masks.width) != (height, width):
            raise ValueError(f'{where}: gt_masks are {gt_masks.height}x{gt_masks.width} but '
                             f'the image is {height}x{width}')
        num_instances = len(gt_masks)
        instance_keys = [key for key in ('gt_bboxes', 'gt_bboxes_labels', 'gt_instances_ids',
                                         'gt_ignore_flags') if key in results]
        for key in instance_keys:
            if len(results[key]) != num_instances:
                raise ValueError(f'{where}: {key} has {len(results[key])} entries but '
                                 f'gt_masks has {num_instances}')

        matrices, out_hw, flip, scale_factor = self.sample_clip_geometry(height, width)
        prev_homography = np.asarray(results.get('homography_matrix', np.eye(3)))
        prev_scale = results.get('scale_factor', (1.0, 1.0))
        box_type = type(results['gt_bboxes']) if 'gt_bboxes' in results else None

        frames: Dict[str, List[Any]] = {key: [] for key in (
            'img', 'gt_masks', 'homography_matrix', *instance_keys)}
        packed_masks = _pack_masks(gt_masks.masks)
        # A 1-pixel replicated border makes bilinear samples just outside the image edge behave
        # like cv2.resize (no dark frame edges); rotation corners are still filled with 0.
        padded_img = cv2.copyMakeBorder(img, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        for matrix in matrices:
            frames['img'].append(cv2.warpAffine(
                padded_img, (matrix @ _translate_matrix(-1, -1))[:2], (out_hw[1], out_hw[0]),
                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0))
            masks = _warp_packed_masks(packed_masks, num_instances, matrix, out_hw)
            keep = masks.reshape(len(masks), -1).any(axis=1)
            frame_masks = BitmapMasks(masks[keep], *out_hw)
            frames['gt_masks'].append(frame_masks)
            frames['homography_matrix'].append((matrix @ prev_homography).astype(np.float32))
            for key in instance_keys:
                if key == 'gt_bboxes':
                    boxes = HorizontalBoxes.from_instance_masks(frame_masks)
                    frames[key].append(boxes if issubclass(box_type, BaseBoxes) else
                                       boxes.numpy().astype(np.float32))
                else:
                    frames[key].append(results[key][keep])

        clip = {key: [value] * self.num_frames for key, value in results.items()}
        clip.update(frames)
        clip.update(
            img_shape=[out_hw] * self.num_frames,
            scale_factor=[(prev_scale[0] * scale_factor[0],
                           prev_scale[1] * scale_factor[1])] * self.num_frames,
            flip=[flip] * self.num_frames,
            flip_direction=['horizontal' if flip else None] * self.num_frames,
            frame_id=list(range(self.num_frames)),
            video_length=[self.num_frames] * self.num_frames,
            ori_video_length=[self.num_frames] * self.num_frames,
            key_frame_flags=[True] + [False] * (self.num_frames - 1))
        return clip

    @staticmethod
    def _single_image(results: dict) -> dict:
        """The one input image as a plain dict (unwraps the 1-frame list layout)."""
        name = PseudoVideoFromImage.__name__
        if 'img' not in results:
            raise KeyError(f'{name}: needs a loaded image (LoadImageFromFile first)')
        if isinstance(results['img'], list):
            if len(results['img']) != 1:
                raise ValueError(f"{name}: expects one image, got a list of "
                                 f"{len(results['img'])} (sample one frame per pseudo-video, "
                                 'e.g. with BaseFrameSample)')
            single = {}
            for key, value in results.items():
                if isinstance(value, list) and len(value) != 1:
                    raise ValueError(f'{name}: in the list layout every list must hold one '
                                     f'entry, {key!r} holds {len(value)}')
                single[key] = value[0] if isinstance(value, list) else value
            results = single
        for key in ('gt_seg_map', 'gt_keypoints', 'proposals'):
            if key in results:
                raise ValueError(f'{name}: {key} is not transformed by this transform; '
                                 f"remove it from the pipeline ({results.get('img_path')})")
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_frames={self.num_frames}, '
                f'crop_prob={self.crop_prob}, '
                f'crop_resize_short_edges={self.crop_resize_short_edges}, '
                f'crop_resize_max_edge={self.crop_resize_max_edge}, '
                f'crop_size_range={self.crop_size_range}, '
                f'resize_short_edges={self.resize_short_edges}, '
                f'resize_max_edge={self.resize_max_edge}, flip_prob={self.flip_prob}, '
                f'max_rotate_angle={self.max_rotate_angle}, '
                f'rotate_center_range={self.rotate_center_range}, '
                f'reverse_prob={self.reverse_prob})')
