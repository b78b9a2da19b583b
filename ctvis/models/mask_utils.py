"""Mask helpers shared by the head, the trackers and the video output: IoU, NMS, centroids,
resizing, RLE encoding.

The IoU and NMS follow the official arithmetic (docs/parity.md, "Tracker conventions").
"""
from typing import List, Optional, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F
from torch import Tensor


def tracker_binary_masks(mask_logits: Tensor) -> Tensor:
    """The tracker's binary masks (its mask NMS and the motion cue's geometry): ``sigmoid >
    0.5``, as the official tracker; a logit whose float32 sigmoid rounds to 0.5 is outside. (The
    output binarises at ``logit > 0``: :func:`output_binary_masks`.)"""
    return mask_logits.sigmoid() > 0.5


def output_binary_masks(mask_logits: Tensor) -> Tensor:
    """The binary masks of the per-frame and video output: ``logit > 0``, as the official video
    output (a logit of exactly 0 is outside)."""
    return mask_logits > 0


def mask_iou(masks: Tensor) -> Tensor:
    """Pairwise IoU of binary masks with the official convention.

    ``(intersection + 1e-6) / (union + 1e-6)`` from integer pixel counts, the ratio in float32 (as
    the official ``ctvis/utils/utils.py`` computes it): two empty masks have IoU 1, and a ratio of
    exactly 3/5 can land one float32 step above or below 0.6 depending on the counts.

    Args:
        masks (Tensor): Binary masks, shape (N, H, W).

    Returns:
        Tensor: IoUs, float32, shape (N, N).
    """
    flat = masks.flatten(1).float()
    inter = (flat @ flat.T).round().long()  # exact counts (below 2 ** 24 pixels)
    area = inter.diagonal()
    union = area[:, None] + area[None] - inter
    return (inter + 1e-6) / (union + 1e-6)


def greedy_suppression(overlaps: Tensor) -> Tensor:
    """Greedy NMS given which pairs of score-sorted items overlap too much.

    Item ``i`` is kept unless an item kept before it overlaps it.

    Args:
        overlaps (Tensor): Boolean, shape (N, N): ``overlaps[i, j]`` when item ``j`` must go if
            item ``i`` is kept. Items are in descending score order.

    Returns:
        Tensor: Indices of the kept items, ascending, long, shape (K,), on ``overlaps.device``.
    """
    suppressed = torch.zeros(len(overlaps), dtype=torch.bool)
    cpu_overlaps = overlaps.cpu()
    keep: List[int] = []
    for i in range(len(overlaps)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= cpu_overlaps[i]
    return torch.as_tensor(keep, dtype=torch.long, device=overlaps.device)


def mask_centroids(weights: Tensor) -> Tensor:
    """Weighted centroids of masks, in cells of the mask grid (a cell's centre at +0.5).

    Args:
        weights (Tensor): Non-negative weights (a binary mask, or probabilities), (..., h, w).

    Returns:
        Tensor: (..., 2) centroids as (x, y); NaN where a mask's weights are all 0.
    """
    h, w = weights.shape[-2:]
    ys = torch.arange(h, device=weights.device, dtype=weights.dtype) + 0.5
    xs = torch.arange(w, device=weights.device, dtype=weights.dtype) + 0.5
    total = weights.sum((-2, -1))
    centre_y = (weights.sum(-1) * ys).sum(-1) / total
    centre_x = (weights.sum(-2) * xs).sum(-1) / total
    return torch.stack([centre_x, centre_y], -1)


def mask_nms(masks: Tensor, iou_thr: float) -> Tensor:
    """Greedy NMS on binary masks already sorted by descending score.

    Args:
        masks (Tensor): Binary masks, shape (N, H, W), sorted by score.
        iou_thr (float): A mask whose :func:`mask_iou` with a kept one is above this is dropped.

    Returns:
        Tensor: Indices (into ``masks``) of the kept masks, ascending, shape (K,).
    """
    return greedy_suppression(mask_iou(masks) > iou_thr)


def resize_mask_logits(mask_logits: Tensor, pad_shape: Tuple[int, int],
                       img_shape: Tuple[int, int], ori_shape: Tuple[int, int]) -> Tensor:
    """Bring mask logits (stride 4, or 2 with a stem level) back to the original image.

    Upsample to the padded network input, crop the padding, then resize to the original size
    (both bilinear), as the reference implementation does.

    Args:
        mask_logits (Tensor): Shape (N, h, w).
        pad_shape, img_shape, ori_shape: (H, W) of the padded batch input, of the resized image
            inside it, and of the original frame.

    Returns:
        Tensor: Mask logits at original resolution, shape (N, H_ori, W_ori).
    """
    if mask_logits.shape[0] == 0:
        return mask_logits.new_zeros((0, *ori_shape))
    x = F.interpolate(mask_logits[:, None], size=tuple(pad_shape), mode='bilinear',
                      align_corners=False)
    x = x[:, :, :img_shape[0], :img_shape[1]]
    x = F.interpolate(x, size=tuple(ori_shape), mode='bilinear', align_corners=False)
    return x[:, 0]


def encode_masks(masks: Tensor) -> List[dict]:
    """RLE-encode binary masks with pycocotools.

    Args:
        masks (Tensor): Binary (or 0/1) masks, shape (N, H, W).

    Returns:
        list[dict]: N RLE dicts, ``size`` [H, W] and ``counts`` as str (JSON-ready).
    """
    arr = np.asfortranarray(masks.to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    rles = mask_util.encode(arr)
    for rle in rles:
        rle['counts'] = rle['counts'].decode('ascii')
    return rles


def json_rle(rle: Optional[dict], where: str) -> Optional[dict]:
    """A pycocotools RLE (``counts`` as bytes or str) as a JSON-ready dict; None stays None.

    Args:
        rle (dict, optional): ``size`` (H, W) and ``counts``.
        where (str): What the mask belongs to, for the error message.

    Returns:
        dict, optional: ``size`` as a list of ints and ``counts`` as str.

    Raises:
        TypeError: ``rle`` is neither None nor a dict with ``size`` and ``counts``.
    """
    if rle is None:
        return None
    if not isinstance(rle, dict) or 'counts' not in rle or 'size' not in rle:
        raise TypeError(f'{where}: masks must be pycocotools RLE dicts (size, counts) or None, '
                        f'got {type(rle).__name__}')
    counts = rle['counts']
    if isinstance(counts, bytes):
        counts = counts.decode('ascii')
    return {'size': [int(s) for s in rle['size']], 'counts': counts}
