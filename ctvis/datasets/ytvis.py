"""YouTube-VIS style video datasets (YTVIS 2019/2021/2022, OVIS, custom) read from the raw JSON.

The official annotation files are read directly, without a conversion step, and validated while
they are parsed so that a broken file fails before training starts, with a
:class:`~ctvis.datasets.ytvis_format.YTVISFormatError` that names the file and the offending entry.
The loader, the schema of videos, categories and annotation keys, and the RLE check are those of
the evaluator (:mod:`ctvis.datasets.ytvis_format`); this module adds what training needs (frame
files, class names, polygons, boxes). The parsed items follow mmdet's video format
(:class:`mmdet.datasets.BaseVideoDataset`), one item per video::

    dict(video_id=int, video_length=int, images=[
        dict(img_id=int, img_path=str, file_name=str, height=int, width=int, frame_id=int,
             video_id=int, instances=[dict(bbox=[x1, y1, x2, y2], bbox_label=int,
                                           mask=<RLE dict | polygons>, instance_id=int,
                                           ignore_flag=0 | 1)]),
        ...])

``bbox_label`` indexes ``metainfo['classes']``, which lists the class names in sorted category-id
order; ``instance_id`` is the annotation ``id`` of the JSON (unique in the dataset); ``img_id`` is
a running frame index, unique in the dataset (mmdet's ``PackTrackInputs`` and the VIS metric key
frames by it); ``file_name`` is the frame's path as written in the JSON.
"""
import copy
import math
import os
import os.path as osp
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
import pycocotools.mask as mask_util
from mmengine.logging import print_log
from PIL import Image

from mmdet.datasets import BaseVideoDataset
from mmdet.registry import DATASETS
from .ytvis_format import (MaskCollector, MissingFrameError, Videos, YTVISFormatError, entry_namer,
                           load_json_file)
from .ytvis_format.rle import polygons_problem
from .ytvis_format.schema import (check_annotation, check_unique_ids, parse_categories,
                                  parse_videos)

YTVIS_2019_CLASSES = (
    'person', 'giant_panda', 'lizard', 'parrot', 'skateboard', 'sedan', 'ape', 'dog', 'snake',
    'monkey', 'hand', 'rabbit', 'duck', 'cat', 'cow', 'fish', 'train', 'horse', 'turtle', 'bear',
    'motorbike', 'giraffe', 'leopard', 'fox', 'deer', 'owl', 'surfboard', 'airplane', 'truck',
    'zebra', 'tiger', 'elephant', 'snowboard', 'boat', 'shark', 'mouse', 'frog', 'eagle',
    'earless_seal', 'tennis_racket')
YTVIS_2021_CLASSES = (
    'airplane', 'bear', 'bird', 'boat', 'car', 'cat', 'cow', 'deer', 'dog', 'duck',
    'earless_seal', 'elephant', 'fish', 'flying_disc', 'fox', 'frog', 'giant_panda', 'giraffe',
    'horse', 'leopard', 'lizard', 'monkey', 'motorbike', 'mouse', 'parrot', 'person', 'rabbit',
    'shark', 'skateboard', 'snake', 'snowboard', 'squirrel', 'surfboard', 'tennis_racket',
    'tiger', 'train', 'truck', 'turtle', 'whale', 'zebra')
# The official OVIS files spell the last class 'Vehical'.
OVIS_CLASSES = (
    'Person', 'Bird', 'Cat', 'Dog', 'Horse', 'Sheep', 'Cow', 'Elephant', 'Bear', 'Zebra',
    'Giraffe', 'Poultry', 'Giant_panda', 'Lizard', 'Parrot', 'Monkey', 'Rabbit', 'Tiger', 'Fish',
    'Turtle', 'Bicycle', 'Motorcycle', 'Airplane', 'Boat', 'Vehical')
# YTVIS 2022 shares the 2021 training set and classes (only the validation videos differ).
YTVIS_CLASSES_BY_VERSION = {
    '2019': YTVIS_2019_CLASSES,
    '2021': YTVIS_2021_CLASSES,
    '2022': YTVIS_2021_CLASSES,
}

def _bbox_problem(bbox: Any) -> Optional[str]:
    """Why an ``[x, y, w, h]`` box is unusable, or None if it is fine."""
    if not isinstance(bbox, list) or len(bbox) != 4:
        return 'bbox is not a list of 4 numbers [x, y, w, h]'
    try:
        total = sum(bbox)
    except TypeError:
        return 'bbox contains non-numbers'
    if not math.isfinite(total) or bbox[2] < 0 or bbox[3] < 0:
        return f'bbox {bbox} is not finite or has a negative size'
    return None


def _mask_to_coco_rle(mask: Any, height: int, width: int) -> dict:
    """Compressed RLE of a validated polygon list / uncompressed / compressed RLE."""
    if isinstance(mask, list):
        return mask_util.merge(mask_util.frPyObjects(mask, height, width))
    if isinstance(mask['counts'], list):
        return mask_util.frPyObjects(mask, height, width)
    return mask


# The end of a JPEG read first when looking for its end-of-image marker; the whole file is read
# only when the marker is not there (data appended after it, e.g. a motion photo's video).
JPEG_TAIL_BYTES = 64 * 1024
JPEG_EOI, JPEG_SOS = b'\xff\xd9', b'\xff\xda'


def decoded_image_size(path: str) -> Tuple[int, int]:
    """(H, W) of an image as OpenCV (and so mmcv's ``LoadImageFromFile``) decodes it, read from
    the header only: the stored size, transposed when the EXIF orientation rotates it.

    A JPEG must also hold its end-of-image marker after the start of its first scan: libjpeg
    decodes a file cut short (an interrupted download or extraction) with the missing rows
    filled in grey and only a warning on stderr. (In the compressed data 0xFF is always followed
    by 0x00 or a restart marker, so 0xFFD9 there is the marker; before the scan, table bytes can
    hold it by chance.)

    Raises:
        OSError: the file cannot be opened, is not an image (e.g. empty) or is a JPEG cut short.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if image.format == 'TIFF':  # Pillow reports a TIFF's size already turned
                width = image.tag_v2.get(256, width)
                height = image.tag_v2.get(257, height)
            orientation = image.getexif().get(0x0112, 1)
            is_jpeg = image.format == 'JPEG'
    except (SyntaxError, ValueError) as error:  # what PIL raises for some corrupt headers
        raise OSError(str(error)) from error
    except Image.DecompressionBombError as error:  # over twice Pillow's MAX_IMAGE_PIXELS
        raise OSError(f'larger than the header check reads ({error})') from error
    if is_jpeg and not _jpeg_has_end_marker(path):
        raise OSError('the JPEG is cut short (no end-of-image marker after its first scan): the '
                      'frame would decode with its missing rows in grey')
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def check_image_decodes(path: str) -> None:
    """Raise OSError unless the image decodes with OpenCV, as mmcv's loader decodes it (a JPEG
    at 1/8 scale, which still reads all of its compressed data). A header can read well while
    the data is damaged (a TIFF or BMP cut short, a bogus JPEG Huffman table): the frame then
    fails in the loader. (Pillow would pass a file cut short wherever a program has set its
    ``ImageFile.LOAD_TRUNCATED_IMAGES``.)"""
    data = np.fromfile(path, np.uint8)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_REDUCED_COLOR_8 | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as error:
        raise OSError(f'OpenCV cannot decode it ({error.err or error})') from error
    if image is None:
        raise OSError('OpenCV cannot decode its data (damaged, or a format it does not read)')


def _jpeg_has_end_marker(path: str) -> bool:
    """Whether a JPEG holds its end-of-image marker after the start of its first scan."""
    with open(path, 'rb') as f:
        scan = _jpeg_first_scan(f)
        if scan is None:
            return False
        size = f.seek(0, os.SEEK_END)
        tail_start = max(scan, size - JPEG_TAIL_BYTES)
        f.seek(tail_start)
        if JPEG_EOI in f.read():
            return True
        if tail_start == scan:
            return False
        f.seek(scan)  # the marker may lie before the tail: data appended after it
        return JPEG_EOI in f.read()


def _jpeg_first_scan(f) -> Optional[int]:
    """Offset of a JPEG's first start-of-scan marker, walking the header's segments (each a
    marker and a 2-byte length), or None if the file ends (or breaks) before it."""
    offset = 2  # after the start-of-image marker
    while True:
        f.seek(offset)
        marker = f.read(4)
        if len(marker) < 4 or marker[0] != 0xFF:
            return None
        if marker[:2] == JPEG_SOS:
            return offset
        if marker[1] == 0xFF:  # a fill byte before the marker
            offset += 1
            continue
        if 0xD0 <= marker[1] <= 0xD7 or marker[1] == 0x01:  # markers without a length
            offset += 2
            continue
        offset += 2 + int.from_bytes(marker[2:], 'big')


# filter_cfg keys the video datasets understand (filter_empty_gt is implied for pseudo-videos)
FILTER_CFG_KEYS = ('filter_empty_gt', 'min_size')


def check_filter_cfg(filter_cfg: Optional[dict], owner: str) -> None:
    """ValueError for a ``filter_cfg`` key no dataset reads: a misspelled one filtered nothing."""
    unknown = sorted(set(filter_cfg or {}) - set(FILTER_CFG_KEYS))
    if unknown:
        raise ValueError(f'{owner}: filter_cfg has unknown keys {unknown}; it takes '
                         f'{", ".join(FILTER_CFG_KEYS)}')


def check_frame_files(videos: Iterable[dict], ann_file: str) -> None:
    """Raise :class:`MissingFrameError` for the first frame of ``videos`` (mmdet's video format)
    not found on disk, :class:`YTVISFormatError` for an empty frame file; one ``os.scandir`` per
    frame folder."""
    listings: Dict[str, Optional[Dict[str, os.DirEntry]]] = {}
    for video in videos:
        for frame in video['images']:
            folder, name = osp.split(frame['img_path'])
            where = f"{ann_file}: video id={video['video_id']}, frame {frame['frame_id']}"
            if folder not in listings:
                try:
                    with os.scandir(folder or '.') as entries:
                        listings[folder] = {entry.name: entry for entry in entries}
                except (FileNotFoundError, NotADirectoryError):
                    listings[folder] = None
                except OSError as error:  # e.g. no permission to list it
                    raise MissingFrameError(f'{where}: cannot list the folder {folder}: '
                                            f'{error.strerror or error}') from error
            listing = listings[folder]
            if listing is None or name not in listing:
                raise MissingFrameError(f"{where}: {frame['img_path']} does not exist"
                                        + (' (folder missing)' if listing is None else ''))
            entry = listing[name]
            try:
                size = entry.stat().st_size  # follows a link
            except OSError as error:
                broken = isinstance(error, FileNotFoundError) and entry.is_symlink()
                raise MissingFrameError(
                    f"{where}: {frame['img_path']} " + ('is a link to a missing file' if broken
                                                        else f'cannot be read: '
                                                        f'{error.strerror or error}')) from error
            if size == 0:
                raise YTVISFormatError(f"{where}: {frame['img_path']} is an empty file")


def read_annotation_json(ann_file: str, owner: str) -> dict:
    """Load an annotation JSON whose top level is an object; errors name the file."""
    if not ann_file:
        raise ValueError(f'{owner}: ann_file is not set')
    raw = load_json_file(ann_file)
    if not isinstance(raw, dict):
        raise YTVISFormatError(
            f'{ann_file}: top level is a {type(raw).__name__}, expected an object')
    return raw


class FrameCheckingVideoDataset(BaseVideoDataset):
    """A video dataset whose frame files are checked before their frames are used.

    At load time (:meth:`_check_frames`): every frame exists and is not empty, and the frames of
    :meth:`_sized_at_load` decode to their annotated size; in test mode every frame is also
    decoded once, so that a damaged frame stops the run before inference rather than after the
    videos before it (about 1 ms a 720p frame on 2 threads). Each other frame's size is checked the
    first time its video is loaded in a process (:meth:`prepare_data`): masks are decoded at the
    annotated size, so a frame stored at another size (downscaled after annotation, or rotated
    by its EXIF orientation) would be misaligned with them, or fail deep in the pipeline. Remote
    frames (a URI prefix) are not checked.

    Args:
        check_frames (bool): Run the checks. Defaults to True.
        **kwargs: Arguments of :class:`mmdet.datasets.BaseVideoDataset`.
    """

    def __init__(self, *, check_frames: bool = True, **kwargs) -> None:
        self.check_frames = check_frames
        self._checked_videos: set = set()  # indices whose frames _check_video_frames passed
        self._test_video: Optional[Tuple[int, dict]] = None  # (index, info) of the last video
        super().__init__(**kwargs)

    def _sized_at_load(self, video: dict) -> List[dict]:
        """The frames of a video whose size :meth:`_check_frames` reads (one header each)."""
        return video['images'] if self.test_mode else video['images'][:1]

    def _check_frames(self, videos: Iterable[dict]) -> None:
        """Raise :class:`MissingFrameError` for the first frame not found on disk,
        :class:`YTVISFormatError` for an empty frame file, a frame of :meth:`_sized_at_load`
        that does not have its annotated size, or (test mode) a frame that does not decode.
        Cost: one ``os.scandir`` per frame folder and one image-header read per frame of
        :meth:`_sized_at_load`; in test mode one decode per frame.
        """
        if self._frames_are_remote():
            print_log(f"{type(self).__name__}: frames under {self.data_prefix['img_path']} are "
                      'remote; skipped the frame check', logger='current')
            return
        videos = list(videos)
        check_frame_files(videos, self.ann_file)
        frames = [frame for video in videos for frame in self._sized_at_load(video)]
        if not self.test_mode:
            for frame in frames:
                self._check_frame_size(frame)
            return
        # OpenCV decodes outside the interpreter lock; the first bad frame in order is raised
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for _ in pool.map(partial(self._check_frame_size, decode=True), frames):
                pass

    def _frames_are_remote(self) -> bool:
        """Whether the frames' prefix is a URI (no local files to check)."""
        return '://' in (self.data_prefix.get('img_path', '') or '')

    def _check_frame_size(self, frame: dict, decode: bool = False) -> None:
        """Raise :class:`YTVISFormatError` unless the frame's file is an image that decodes to
        the frame's ``height`` x ``width`` (read from its header), and with ``decode`` unless
        all of its data decodes (:func:`check_image_decodes`)."""
        where = f"{self.ann_file}: video id={frame['video_id']}"
        try:
            height, width = decoded_image_size(frame['img_path'])
            if decode:
                check_image_decodes(frame['img_path'])
        except OSError as error:
            raise YTVISFormatError(f"{where}, frame {frame['frame_id']}: cannot read "
                                   f"{frame['img_path']}: {error}") from error
        if (height, width) != (frame['height'], frame['width']):
            raise YTVISFormatError(
                f"{where}: frame {frame['frame_id']} ({frame['img_path']}) is {height}x{width} "
                f"(HxW) but the file says {frame['height']}x{frame['width']}")

    def _check_video_frames(self, video_index: int) -> None:
        """Check the size of the frames of a video that :meth:`_check_frames` did not, the first
        time the video is loaded in this process."""
        if video_index in self._checked_videos:
            return
        if not self._frames_are_remote():
            video = self._video_info(video_index)
            for frame in video['images'][len(self._sized_at_load(video)):]:
                self._check_frame_size(frame)
        self._checked_videos.add(video_index)

    def _video_info(self, video_index: int) -> dict:
        """A video's info; in test mode the last video's is kept, since the test sampler asks
        for its frames one by one and each ``get_data_info`` unpickles the whole video."""
        if not self.test_mode:
            return self.get_data_info(video_index)
        cached = self._test_video
        if cached is None or cached[0] != video_index:
            cached = self._test_video = (video_index, self.get_data_info(video_index))
        return cached[1]

    def _forget_videos(self) -> None:
        """Drop what is kept per video index (:meth:`_video_info`, the videos whose frames were
        checked): re-indexing the dataset gives the indices other videos."""
        self._checked_videos = set()
        self._test_video = None

    def get_subset_(self, indices: Union[Sequence[int], int]) -> None:
        super().get_subset_(indices)
        self._forget_videos()

    def get_subset(self, indices: Union[Sequence[int], int]) -> 'FrameCheckingVideoDataset':
        subset = super().get_subset(indices)
        subset._forget_videos()
        return subset

    def _prepare_test_frame(self, video_index: int, frame_index: int) -> Any:
        """What mmdet's ``prepare_data`` gives for one frame in test mode (a copy of the frame's
        info with the video's ``video_id`` and lengths, through the pipeline), from the video's
        info read once per video: mmdet's unpickled every frame's info and annotations for each
        frame, so a video cost the square of its length (166 ms a frame at 2000 frames)."""
        video = self._video_info(video_index)
        frame = copy.deepcopy(video['images'][frame_index])
        frame['video_id'] = video['video_id']
        data = defaultdict(list, {key: [value] for key, value in frame.items()})
        data['ori_video_length'] = [video['video_length']]
        data['video_length'] = [1]
        return self.pipeline(data)

    def prepare_data(self, idx: Union[int, Tuple[int, int]]) -> Any:
        """mmdet's video ``prepare_data`` (``idx``: a video index or (video, frame) indices),
        after :meth:`_check_video_frames` when ``check_frames``; a test-mode frame by
        :meth:`_prepare_test_frame`.

        A frame whose header reads but whose data does not decode (mmcv's loader asserts) raises
        :class:`YTVISFormatError` naming the annotation file, the video and the frame file.
        """
        video_index = idx[0] if isinstance(idx, tuple) else idx
        if self.check_frames:
            self._check_video_frames(video_index)
        try:
            if self.test_mode and isinstance(idx, tuple):
                return self._prepare_test_frame(*idx)
            return super().prepare_data(idx)
        except AssertionError as error:
            if not str(error).startswith('failed to load image'):
                raise
            video_id = self._video_info(video_index)['video_id']
            raise YTVISFormatError(f'{self.ann_file}: video id={video_id}: {error} (the file '
                                   'is not a decodable image)') from error


@DATASETS.register_module()
class YTVISDataset(FrameCheckingVideoDataset):
    """YouTube-VIS format video dataset read from the official raw JSON.

    mmdet's ``YouTubeVISDataset`` needs the JSON converted to CocoVID first, fixes its classes by
    mutating the class attribute, and filters frames (not videos) without annotations, which
    breaks the temporal order of clips; this class reads the raw file, validates it and filters
    whole videos.

    Classes: ``dataset_version`` '2019' / '2021' / '2022' fixes the 40 YTVIS classes (2022 uses
    the 2021 classes); ``metainfo=dict(classes=...)`` fixes any list; with neither, the classes
    are the JSON's ``categories`` names in sorted id order (custom data). Fixed classes must equal
    the JSON's categories (sorted by id), otherwise :class:`YTVISFormatError` is raised.

    Args:
        dataset_version (str, optional): '2019', '2021', '2022' or None. Defaults to None.
        metainfo (dict, optional): ``dict(classes=(...))`` fixes the class list. Defaults to
            None.
        check_frames (bool): Check that every referenced frame exists and is not empty (one
            ``os.scandir`` per frame folder) and that each video's first frame has the video's
            size (one image header read per video); then that all frames are images of that
            size (one header read per frame): at load time in ``test_mode``, where a bad frame
            found mid-run would cost the whole run's predictions, and otherwise the first time
            a video is loaded (once per process); in ``test_mode`` also that every frame
            decodes (one decode per frame at load). Defaults to True.
        **kwargs: Arguments of :class:`mmengine.dataset.BaseDataset` (``ann_file``,
            ``data_root``, ``data_prefix=dict(img_path=...)``, ``pipeline``, ``test_mode``,
            ``filter_cfg=dict(filter_empty_gt=True)`` ...). ``test_mode=True`` accepts JSONs
            without ``annotations`` (val/test splits).
    """

    def __init__(self,
                 *,
                 dataset_version: Optional[str] = None,
                 check_frames: bool = True,
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        if dataset_version is not None:
            if dataset_version not in YTVIS_CLASSES_BY_VERSION:
                raise ValueError(f'{type(self).__name__}: dataset_version must be one of '
                                 f'{sorted(YTVIS_CLASSES_BY_VERSION)} or None, '
                                 f'got {dataset_version!r}')
            version_classes = YTVIS_CLASSES_BY_VERSION[dataset_version]
            metainfo = dict(metainfo or {})
            if 'classes' in metainfo and tuple(metainfo['classes']) != version_classes:
                raise ValueError(f"{type(self).__name__}: metainfo['classes'] contradicts "
                                 f'dataset_version={dataset_version!r}')
            metainfo['classes'] = version_classes
        self.dataset_version = dataset_version
        super().__init__(check_frames=check_frames, metainfo=metainfo, **kwargs)

    # ------------------------------------------------------------------ loading
    def load_data_list(self) -> List[dict]:
        """Read, validate and parse ``self.ann_file``.

        Returns:
            list[dict]: One item per video in the mmdet video format (see the module docstring).
        """
        raw = self._read_json()
        labels = self._parse_categories(raw)
        video_table = parse_videos(raw, self.ann_file)
        videos = self._parse_videos(raw['videos'])
        annotations = raw.get('annotations')
        if annotations is None:
            if not self.test_mode:
                raise YTVISFormatError(
                    f"{self.ann_file}: no 'annotations' key; training needs annotations "
                    '(use test_mode=True for val/test files)')
            annotations = []
        elif not isinstance(annotations, list):
            raise YTVISFormatError(f"{self.ann_file}: 'annotations' must be a list")
        self._add_instances(annotations, videos, video_table, labels)
        if self.check_frames:
            self._check_frames(videos.values())

        data_list = list(videos.values())
        if not data_list:
            raise YTVISFormatError(f"{self.ann_file}: 'videos' is empty; the dataset has "
                                   'nothing to load')
        num_frames = sum(video['video_length'] for video in data_list)
        print_log(
            f'{type(self).__name__}: {self.ann_file}: {len(data_list)} videos, {num_frames} '
            f'frames, {len(annotations)} instance tracks, {len(self.metainfo["classes"])} '
            'classes', logger='current')
        return data_list

    def _read_json(self) -> dict:
        raw = read_annotation_json(self.ann_file, type(self).__name__)
        missing = [key for key in ('videos', 'categories') if key not in raw]
        if missing:
            raise YTVISFormatError(
                f'{self.ann_file}: missing top-level key(s) {missing} '
                f'(found {sorted(raw)})')
        return raw

    def _parse_categories(self, raw: dict) -> Dict[int, int]:
        """Check the categories against the configured classes; return category id -> label."""
        sorted_ids = parse_categories(raw, self.ann_file).tolist()
        names_by_id = {}
        for index, category in enumerate(raw['categories']):
            if not isinstance(category.get('name'), str):
                raise YTVISFormatError(f"{self.ann_file}: categories[{index}] (id "
                                       f"{category['id']}) needs a str 'name'")
            names_by_id[category['id']] = category['name']
        json_classes = tuple(names_by_id[cat_id] for cat_id in sorted_ids)
        if len(set(json_classes)) != len(json_classes):
            raise YTVISFormatError(f'{self.ann_file}: duplicated category names')

        fixed_classes = self._metainfo.get('classes')
        if fixed_classes is None:
            self._metainfo['classes'] = json_classes
        elif tuple(fixed_classes) != json_classes:
            only_config = [c for c in fixed_classes if c not in json_classes]
            only_json = [c for c in json_classes if c not in fixed_classes]
            raise YTVISFormatError(
                f"{self.ann_file}: the configured classes (dataset_version="
                f'{self.dataset_version!r}, {len(fixed_classes)} classes) do not match the '
                f"file's categories sorted by id ({len(json_classes)} classes); only in the "
                f'config: {only_config}, only in the file: {only_json}'
                + ('' if only_config or only_json else ' (same names, different order)'))
        else:
            self._metainfo['classes'] = tuple(fixed_classes)
        return {cat_id: label for label, cat_id in enumerate(sorted_ids)}

    def _parse_videos(self, raw_videos: list) -> Dict[int, dict]:
        """Build the per-video items (frames without instances yet), keyed by video id, from the
        videos :func:`~.ytvis_format.schema.parse_videos` checked; each needs ``file_names``."""
        img_prefix = self.data_prefix.get('img_path', '') or ''
        videos: Dict[int, dict] = {}
        next_img_id = 0
        for index, raw_video in enumerate(raw_videos):
            video_id, file_names = raw_video['id'], raw_video.get('file_names')
            if not isinstance(file_names, list) or not all(
                    isinstance(name, str) for name in file_names):
                raise YTVISFormatError(f"{self.ann_file}: videos[{index}] (id {video_id}): "
                                       "'file_names' must be a list of strings")
            images = []
            for frame_id, file_name in enumerate(file_names):
                images.append(
                    dict(img_id=next_img_id, img_path=osp.join(img_prefix, file_name),
                         file_name=file_name, height=raw_video['height'],
                         width=raw_video['width'], frame_id=frame_id, video_id=video_id,
                         instances=[]))
                next_img_id += 1
            videos[video_id] = dict(video_id=video_id, video_length=len(images), images=images)
        return videos

    def _add_instances(self, annotations: list, videos: Dict[int, dict], video_table: Videos,
                       labels: Dict[int, int]) -> None:
        """Validate the tracks and append one instance per annotated frame to its frame.

        The keys of each annotation are checked by :func:`~.ytvis_format.schema.check_annotation`
        and its RLE masks, in bulk, by :class:`~.ytvis_format.MaskCollector`, as the evaluator
        does; polygons and boxes by the rules of this dataset.
        """
        rles = MaskCollector(video_table)
        name_entry = entry_namer(self.ann_file, 'annotations', annotations, 'id')

        def describe(index: int, frame: int) -> str:
            if frame < 0:
                return name_entry(index, frame)
            video = videos[annotations[index]['video_id']]
            return f"{name_entry(index, frame)} ({video['images'][frame]['file_name']})"

        needs_bbox: List[Tuple[dict, int, int]] = []  # instance, height, width
        num_empty_polygon_frames = 0
        num_bbox_without_mask = 0
        for index, ann in enumerate(annotations):
            video_index, label, iscrowd = check_annotation(ann, index, self.ann_file,
                                                           video_table, labels)
            ann_id, where = ann['id'], describe(index, -1)
            video = videos[ann['video_id']]
            length = video['video_length']
            segmentations = ann.get('segmentations')
            # The RLE dicts (checked at the end, all at once); polygons are checked below.
            rles.add_track(index, video_index,
                           [s if type(s) is dict else None for s in segmentations]
                           if type(segmentations) is list else segmentations, False, describe)
            bboxes = ann.get('bboxes')
            if bboxes is None:
                bboxes = [None] * length
            elif not isinstance(bboxes, list) or len(bboxes) != length:
                raise YTVISFormatError(f"{where}: 'bboxes' must be a list with one entry per "
                                       f"frame ({length} frames in video {video['video_id']})")

            for frame_id, (segmentation, bbox) in enumerate(zip(segmentations, bboxes)):
                frame = video['images'][frame_id]
                at = describe(index, frame_id)
                height, width = frame['height'], frame['width']
                if segmentation is None or segmentation == []:
                    num_empty_polygon_frames += segmentation == []
                    num_bbox_without_mask += bbox is not None
                    continue
                if isinstance(segmentation, list):
                    problem = polygons_problem(segmentation)
                    if problem:
                        raise YTVISFormatError(f'{at}: {problem}')
                elif not isinstance(segmentation, dict):
                    raise YTVISFormatError(
                        f'{at}: segmentation must be null, an RLE dict or a polygon list, got '
                        f'{type(segmentation).__name__}')
                instance = dict(bbox_label=label, mask=segmentation, instance_id=ann_id,
                                ignore_flag=int(iscrowd))
                if bbox is None:
                    needs_bbox.append((instance, height, width))
                else:
                    problem = _bbox_problem(bbox)
                    if problem:
                        raise YTVISFormatError(f'{at}: {problem}')
                    x, y, w, h = bbox
                    instance['bbox'] = [x, y, x + w, y + h]
                frame['instances'].append(instance)
        check_unique_ids([ann['id'] for ann in annotations], self.ann_file, 'annotation')
        rles.build(len(annotations), describe)
        # Masks are validated now, so pycocotools can safely compute the missing boxes.
        for instance, height, width in needs_bbox:
            x, y, w, h = mask_util.toBbox(_mask_to_coco_rle(instance['mask'], height,
                                                            width)).tolist()
            instance['bbox'] = [x, y, x + w, y + h]
        if num_empty_polygon_frames or num_bbox_without_mask:
            print_log(
                f'{type(self).__name__}: {self.ann_file}: treated {num_empty_polygon_frames} '
                'empty polygon lists as absent; ignored '
                f'{num_bbox_without_mask} per-frame boxes that have no mask', logger='current')

    # ---------------------------------------------------------------- filtering
    def filter_data(self) -> List[dict]:
        """Drop whole videos (never single frames, which would break clip order).

        ``filter_cfg=dict(filter_empty_gt=True)`` drops videos without any non-crowd instance,
        ``min_size=N`` drops videos whose shorter side is below N pixels. Test mode and
        ``filter_cfg=None`` keep everything. The number of dropped videos is logged.
        """
        check_filter_cfg(self.filter_cfg, f'{type(self).__name__} ({self.ann_file})')
        if self.test_mode or not self.filter_cfg:
            return self.data_list
        filter_empty_gt = self.filter_cfg.get('filter_empty_gt', False)
        min_size = self.filter_cfg.get('min_size', 0)
        kept, num_empty, num_small = [], 0, 0
        for video in self.data_list:
            first = video['images'][0]
            if min(first['height'], first['width']) < min_size:
                num_small += 1
            elif filter_empty_gt and not any(
                    not instance['ignore_flag'] for frame in video['images']
                    for instance in frame['instances']):
                num_empty += 1
            else:
                kept.append(video)
        if not kept:
            raise YTVISFormatError(
                f'{self.ann_file}: filter_cfg={self.filter_cfg} dropped all '
                f'{len(self.data_list)} videos ({num_empty} without annotations, {num_small} '
                f'smaller than {min_size} px); nothing is left to train on')
        print_log(
            f'{type(self).__name__}: {self.ann_file}: kept {len(kept)} of {len(self.data_list)} '
            f'videos (dropped {num_empty} without annotations, {num_small} smaller than '
            f'{min_size} px)', logger='current')
        return kept


@DATASETS.register_module()
class OVISDataset(YTVISDataset):
    """OVIS (Occluded Video Instance Segmentation), YouTube-VIS layout with 25 classes."""

    METAINFO = dict(classes=OVIS_CLASSES)

    def __init__(self, **kwargs) -> None:
        if kwargs.get('dataset_version') is not None:
            raise ValueError('OVISDataset: dataset_version does not apply to OVIS')
        super().__init__(**kwargs)
