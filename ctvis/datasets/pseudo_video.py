"""Pseudo-videos from COCO images (CTVIS joint training with image data).

Three pieces:

* **Category maps** from COCO class names to the classes of a VIS target (YTVIS 2019, YTVIS 2021,
  OVIS): the official CTVIS maps, see :data:`COCO_TO_YTVIS19` and below. Keys are COCO category
  *names* (the ids are looked up in the annotation file).
* :class:`CocoPseudoVideoDataset` reads a COCO instances JSON directly and yields every image with
  target-class annotations as a one-frame video in mmdet's video format.
* :class:`~ctvis.datasets.pseudo_video_transform.PseudoVideoFromImage` turns that loaded image
  into a T-frame clip with smoothly varying, clip-coherent geometry (moving crop, monotonic
  rotation), the CTVIS pseudo-video augmentation.

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
from operator import mul
from typing import Dict, List, Mapping, Optional, Tuple

from mmengine.logging import print_log

from mmdet.registry import DATASETS
from .ytvis import (OVIS_CLASSES, YTVIS_2019_CLASSES, YTVIS_2021_CLASSES,
                    FrameCheckingVideoDataset, check_filter_cfg, read_annotation_json)
from .ytvis_format import MaskCollector, Videos, YTVISFormatError
from .ytvis_format.loading import is_real
from .ytvis_format.rle import polygons_problem

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


def polygon_area(coordinates: List[float]) -> float:
    """Area enclosed by a flat ``[x0, y0, x1, y1, ...]`` polygon (shoelace formula; plain Python,
    8x faster than numpy on COCO's short polygons: 1.8 us each)."""
    xs, ys = coordinates[0::2], coordinates[1::2]
    return abs(sum(map(mul, xs, ys[1:] + ys[:1])) - sum(map(mul, ys, xs[1:] + xs[:1]))) / 2


# ----------------------------------------------------------------------------- dataset
@DATASETS.register_module()
class CocoPseudoVideoDataset(FrameCheckingVideoDataset):
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
        check_frames (bool): Check at load time that every kept image exists and is not an empty
            file (one ``os.scandir`` per image folder), naming the first that fails (a missing
            image otherwise failed only when a batch drew it), and, the first time an image is
            loaded, that it decodes to the size the file gives it (its masks are drawn at that
            size). Defaults to True.
        **kwargs: Arguments of :class:`mmengine.dataset.BaseDataset` (``ann_file``,
            ``data_root``, ``data_prefix=dict(img_path=...)``, ``pipeline`` ...).
    """

    def __init__(self,
                 *,
                 target: Optional[str] = None,
                 category_map: Optional[Mapping[str, str]] = None,
                 drop_ambiguous_categories: bool = False,
                 metainfo: Optional[dict] = None,
                 check_frames: bool = True,
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
        super().__init__(check_frames=check_frames, metainfo=metainfo, **kwargs)

    def _sized_at_load(self, video: dict) -> List[dict]:
        """None: reading the headers of COCO's 100k images at load would take minutes; each is
        checked when first loaded instead."""
        return []

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
        # RLE masks are checked in bulk at the end, as the video datasets check theirs
        image_table = Videos.from_lists(list(images), [i['height'] for i in images.values()],
                                        [i['width'] for i in images.values()], [1] * len(images))
        rles = MaskCollector(image_table)
        rle_instances: Dict[int, Tuple[dict, dict]] = {}  # annotation index -> instance, image
        for index, ann in enumerate(raw['annotations']):
            if not isinstance(ann, dict) or not isinstance(ann.get('id'), int):
                raise YTVISFormatError(
                    f'{self.ann_file}: annotation #{index} has no int id: {str(ann)[:200]}')
            where = f"{self.ann_file}: annotation id={ann['id']}"
            if ann['id'] in seen_ann_ids:
                raise YTVISFormatError(f'{where}: duplicated annotation id')
            seen_ann_ids.add(ann['id'])
            image = images.get(ann.get('image_id'))
            if image is None:
                raise YTVISFormatError(f"{where}: unknown image_id {ann.get('image_id')!r}")
            category_id = ann.get('category_id')
            if category_id not in labels:
                raise YTVISFormatError(f'{where}: unknown category_id {category_id!r}')
            if labels[category_id] is None:
                skipped['other category'] += 1
                continue
            instance = self._parse_instance(ann, labels[category_id], where)
            if instance is None:
                skipped['empty box or mask'] += 1
                continue
            if isinstance(instance['mask'], dict):
                rles.add_track(index, image_table.index[image['img_id']], [instance['mask']],
                               False, lambda *_, where=where: where)
                rle_instances[index] = instance, image
            image['instances'].append(instance)
        mask_table = rles.build(len(raw['annotations']),
                                lambda index, _: f"{self.ann_file}: annotation id="
                                f"{raw['annotations'][index]['id']}")
        for index, area in zip(mask_table.track.tolist(), mask_table.area.tolist()):
            if area == 0:  # an RLE that covers nothing
                instance, image = rle_instances[index]
                image['instances'].remove(instance)
                skipped['empty box or mask'] += 1

        data_list = []
        for img_id, image in images.items():
            if not any(instance['ignore_flag'] == 0 for instance in image['instances']):
                skipped['images without target annotations'] += 1
                continue
            data_list.append(dict(video_id=img_id, video_length=1, images=[image]))
        print_log(
            f'{type(self).__name__}: {self.ann_file}: kept {len(data_list)} of {len(images)} '
            f'images as pseudo-videos; skipped {dict(skipped)}', logger='current')
        if not data_list:
            raise YTVISFormatError(
                f'{self.ann_file}: no image has an annotation of the target classes (of '
                f'{len(images)} images; skipped {dict(skipped)}): nothing to train on')
        if self.check_frames:
            self._check_frames(data_list)
        return data_list

    def _read_json(self) -> dict:
        raw = read_annotation_json(self.ann_file, type(self).__name__)
        for key in ('images', 'annotations', 'categories'):
            if not isinstance(raw.get(key), list):
                raise YTVISFormatError(
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
                raise YTVISFormatError(
                    f'{self.ann_file}: category {category!r} needs an int id and a str name')
            if category['id'] in labels:
                raise YTVISFormatError(
                    f"{self.ann_file}: duplicated category id {category['id']}")
            target_name = self.category_map.get(category['name'])
            labels[category['id']] = (None if target_name is None else
                                      classes.index(target_name))
            names.add(category['name'])
        missing = sorted(set(self.category_map) - names)
        if len(missing) == len(self.category_map):
            raise YTVISFormatError(
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
                raise YTVISFormatError(
                    f'{self.ann_file}: image #{index} has no int id: {str(raw_image)[:200]}')
            img_id = raw_image['id']
            file_name, height, width = (raw_image.get('file_name'), raw_image.get('height'),
                                        raw_image.get('width'))
            if (not isinstance(file_name, str) or not isinstance(height, int)
                    or not isinstance(width, int) or height < 1 or width < 1):
                raise YTVISFormatError(
                    f'{self.ann_file}: image id={img_id} needs a str file_name and positive int '
                    f'height/width, got {file_name!r}, {height!r}, {width!r}')
            if img_id in images:
                raise YTVISFormatError(f'{self.ann_file}: duplicated image id {img_id}')
            img_path = osp.join(img_prefix, file_name)
            images[img_id] = dict(img_id=img_id, img_path=img_path, file_name=file_name,
                                  height=height, width=width, frame_id=0, video_id=img_id,
                                  instances=[])
        return images

    @staticmethod
    def _parse_instance(ann: dict, label: int, where: str) -> Optional[dict]:
        """One instance of the shared format, or None when its box or mask is empty."""
        if 'segmentation' not in ann or 'bbox' not in ann:
            raise YTVISFormatError(f"{where}: needs 'segmentation' and 'bbox'")
        bbox = ann['bbox']
        if (not isinstance(bbox, list) or len(bbox) != 4 or not all(
                isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
            raise YTVISFormatError(f'{where}: bbox must be 4 finite numbers, got {bbox!r}')
        segmentation = ann['segmentation']
        if not isinstance(segmentation, (list, dict)):
            raise YTVISFormatError(f'{where}: segmentation must be polygons or an RLE dict, '
                                     f'got {type(segmentation).__name__}')
        if isinstance(segmentation, list):
            # polygons of fewer than 3 points, or of zero area (collinear), cover nothing
            segmentation = [p for p in segmentation if not isinstance(p, list) or len(p) >= 6]
            problem = polygons_problem(segmentation)
            if problem:
                raise YTVISFormatError(f'{where}: {problem}')
            segmentation = [p for p in segmentation if polygon_area(p) > 0]
        area = ann.get('area', 1)
        if not is_real(area) or not math.isfinite(area):
            raise YTVISFormatError(f"{where}: 'area' must be a finite number, got {area!r}")
        iscrowd = ann.get('iscrowd', 0)
        if iscrowd not in (0, 1):
            raise YTVISFormatError(f"{where}: 'iscrowd' must be 0 or 1, got {iscrowd!r}")
        x, y, w, h = bbox
        if w < 1 or h < 1 or area <= 0 or not segmentation:
            return None
        return dict(bbox=[x, y, x + w, y + h], bbox_label=label, mask=segmentation,
                    instance_id=ann['id'], ignore_flag=int(iscrowd))

    def filter_data(self) -> List[dict]:
        """Drop images smaller than ``filter_cfg['min_size']`` (images without target annotations
        are already dropped while loading)."""
        check_filter_cfg(self.filter_cfg, f'{type(self).__name__} ({self.ann_file})')
        min_size = (self.filter_cfg or {}).get('min_size', 0)
        if self.test_mode or not min_size:
            return self.data_list
        kept = [video for video in self.data_list
                if min(video['images'][0]['height'], video['images'][0]['width']) >= min_size]
        print_log(f'{type(self).__name__}: dropped {len(self.data_list) - len(kept)} images '
                  f'smaller than {min_size} px', logger='current')
        return kept
