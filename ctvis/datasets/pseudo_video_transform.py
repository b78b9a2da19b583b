"""The CTVIS pseudo-video augmentation: one annotated image becomes a T-frame clip.

:class:`PseudoVideoFromImage` gives the clip smoothly varying, clip-coherent geometry (a moving
crop, a monotonic rotation); :class:`~ctvis.datasets.pseudo_video.CocoPseudoVideoDataset` supplies
the images. The pipeline is shown in :mod:`ctvis.datasets.pseudo_video`.
"""
from typing import Any, Dict, List, Sequence, Tuple

import cv2
import mmcv
import numpy as np
from mmcv.transforms import BaseTransform

from mmdet.registry import TRANSFORMS
from mmdet.structures.bbox import BaseBoxes, HorizontalBoxes
from mmdet.structures.mask import BitmapMasks, PolygonMasks


# Below this scale the image is shrunk with an antialiased filter before the warp.
ANTIALIAS_BELOW = 0.9


def _shortest_edge_size(wh: Tuple[int, int], scale: Tuple[int, int]) -> Tuple[int, int]:
    """``mmcv.rescale_size`` with at least one pixel per side: a very elongated image (say
    1x3000) would otherwise round its short side to 0 and fail with no file named."""
    width, height = mmcv.rescale_size(wh, scale)
    return max(width, 1), max(height, 1)


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
    image exactly and the image is interpolated once rather than four times. When steps 1-2
    shrink the image, it is first shrunk by that factor with ``cv2.INTER_AREA`` (once per clip)
    and the warp takes it from there: bilinear sampling alone aliases when it shrinks, where
    the official pipeline resizes with Pillow's antialiased filter. Boxes are
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
            resized_w, resized_h = _shortest_edge_size((width, height),
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
        out_w, out_h = _shortest_edge_size((region_hw[1], region_hw[0]),
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
        # Shrinking: an antialiased resize first, so the warp samples at about 1:1.
        source, to_source = img, np.eye(3)
        shrink = min(scale_factor)
        if shrink < ANTIALIAS_BELOW:
            source_hw = (max(round(height * shrink), 1), max(round(width * shrink), 1))
            source = cv2.resize(img, (source_hw[1], source_hw[0]), interpolation=cv2.INTER_AREA)
            to_source = _resize_matrix((height, width), source_hw)
        from_source = np.linalg.inv(to_source)
        # A 1-pixel replicated border makes bilinear samples just outside the image edge behave
        # like cv2.resize (no dark frame edges); rotation corners are still filled with 0.
        padded_img = cv2.copyMakeBorder(source, 1, 1, 1, 1, cv2.BORDER_REPLICATE)
        for matrix in matrices:
            frames['img'].append(cv2.warpAffine(
                padded_img, (matrix @ from_source @ _translate_matrix(-1, -1))[:2],
                (out_hw[1], out_hw[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                borderValue=0))
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
