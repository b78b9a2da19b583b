"""The CTVIS memory tracker and the video-level output it feeds.

:class:`CTVISTracker` associates each frame's instance queries with the tracks in a
:class:`~ctvis.models.memory_bank.MemoryBank` (bi-softmax similarity, greedy assignment weighted by
how often each track was seen). :class:`VideoTracks` keeps, per track, what the video-level output
needs (per-detection class logits, masks as RLE at original resolution, mask-score sums), so memory
does not grow with dense per-frame tensors however long the video is. Every threshold, epsilon and
tie follows the official arithmetic (docs/parity.md, "Tracker conventions").
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pycocotools.mask as mask_util
import torch
import torch.nn.functional as F
from torch import Tensor

from mmdet.registry import MODELS
from .memory_bank import MemoryBank


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


def mask_nms(masks: Tensor, iou_thr: float) -> Tensor:
    """Greedy NMS on binary masks already sorted by descending score.

    Args:
        masks (Tensor): Binary masks, shape (N, H, W), sorted by score.
        iou_thr (float): A mask whose :func:`mask_iou` with a kept one is above this is dropped.

    Returns:
        Tensor: Indices (into ``masks``) of the kept masks, ascending, shape (K,).
    """
    overlaps = (mask_iou(masks) > iou_thr).cpu()
    suppressed = torch.zeros(len(masks), dtype=torch.bool)
    keep: List[int] = []
    for i in range(len(masks)):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= overlaps[i]
    return torch.as_tensor(keep, dtype=torch.long, device=masks.device)


def bisoftmax_scores(det_embeds: Tensor, track_embeds: Tensor) -> Tensor:
    """Matching scores between detections and tracks.

    The mean of the softmax over tracks and the softmax over detections of the raw dot products,
    so a pair scores high only when each is the other's best choice.

    Args:
        det_embeds (Tensor): Detection embeddings, shape (N, C).
        track_embeds (Tensor): Memory embeddings, shape (M, C).

    Returns:
        Tensor: Scores in [0, 1], shape (N, M).
    """
    sim = det_embeds @ track_embeds.T
    return (sim.softmax(dim=1) + sim.softmax(dim=0)) / 2


def resize_mask_logits(mask_logits: Tensor, pad_shape: Tuple[int, int],
                       img_shape: Tuple[int, int], ori_shape: Tuple[int, int]) -> Tensor:
    """Bring stride-4 mask logits back to the original image.

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
    """RLE-encode binary masks (N, H, W) with pycocotools (counts as str)."""
    arr = np.asfortranarray(masks.to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    rles = mask_util.encode(arr)
    for rle in rles:
        rle['counts'] = rle['counts'].decode('ascii')
    return rles


class _TrackRecord:
    """What the video-level output needs of one track, accumulated frame by frame."""

    __slots__ = ('logits', 'frames', 'masks', 'mask_score_num', 'mask_score_den')

    def __init__(self) -> None:
        self.logits: List[Tensor] = []  # (C + 1,) float32 per detection: kept for the mean
        self.frames: List[int] = []
        self.masks: List[dict] = []
        self.mask_score_num = 0.0
        self.mask_score_den = 0.0


class VideoTracks:
    """Video-level track records with IDOL-style short-track suppression.

    Args:
        num_classes (int): Number of object classes C (logits have C + 1 entries).
        noise_frame_num (int): Suppression starts after this many frames.
        none_frame_num (int): A track missing from its last ``none_frame_num`` frames...
        suppress_frame_num (int): ...with fewer than this many detections is suppressed.
    """

    def __init__(self, num_classes: int, noise_frame_num: int = 8, none_frame_num: int = 2,
                 suppress_frame_num: int = 3) -> None:
        self.num_classes = num_classes
        self.noise_frame_num = noise_frame_num
        self.none_frame_num = none_frame_num
        self.suppress_frame_num = suppress_frame_num
        self.records: Dict[int, _TrackRecord] = {}
        self.num_video_frames = 0
        self.ori_shape: Optional[Tuple[int, int]] = None

    def add_frame(self, frame_id: int, track_ids: Sequence[int], logits: Tensor,
                  mask_logits: Tensor) -> None:
        """Record one frame.

        Args:
            frame_id (int): Index of the frame in the video (0-based, consecutive).
            track_ids (Sequence[int]): Track id of each detection kept this frame, length N.
            logits (Tensor): Class logits of those detections, shape (N, C + 1).
            mask_logits (Tensor): Their mask logits at original resolution, shape (N, H, W).
        """
        self.num_video_frames = frame_id + 1
        self.ori_shape = tuple(mask_logits.shape[-2:])
        binary = mask_logits > 0
        probs = mask_logits.sigmoid()
        score_num = (probs * binary).flatten(1).sum(1).double().cpu()
        score_den = binary.flatten(1).sum(1).double().cpu()
        rles = encode_masks(binary) if len(track_ids) else []
        logits = logits.detach().float().cpu()
        for k, track_id in enumerate(track_ids):
            record = self.records.get(int(track_id))
            if record is None:
                record = self.records[int(track_id)] = _TrackRecord()
            record.logits.append(logits[k])
            record.frames.append(frame_id)
            record.masks.append(rles[k])
            record.mask_score_num += float(score_num[k])
            record.mask_score_den += float(score_den[k])
        self._suppress_short_tracks(frame_id)

    def _suppress_short_tracks(self, frame_id: int) -> None:
        if frame_id <= self.noise_frame_num:
            return
        first_missing = frame_id - self.none_frame_num + 1
        for track_id in [i for i, r in self.records.items()
                         if r.frames[-1] < first_missing
                         and len(r.frames) < self.suppress_frame_num]:
            del self.records[track_id]

    def track_logits(self) -> Tensor:
        """Mean class logits of every recorded track, shape (K, C + 1), in creation order.

        The float32 mean of the stacked per-frame logits, as the official code takes it: a sum in
        another precision can move a mean by one float32 step and reorder exact top-k ties.
        """
        return torch.stack([torch.stack(r.logits).mean(0) for r in self.records.values()])

    def video_predictions(self, max_per_video: Optional[int] = None) -> dict:
        """Top-k (track, class) pairs of the video.

        Scores are class probability (softmax over the mean logits) times the track's mask score
        (mean sigmoid inside its binary masks over all frames).

        Returns:
            dict: ``scores`` (K,), ``labels`` (K,), ``track_ids`` (K,), ``track_index`` (K,) (row
            in :meth:`track_logits`), and ``masks``: K lists of per-frame RLE dicts (empty masks
            where the track is absent).
        """
        k = max_per_video or self.num_classes
        if not self.records:
            return dict(scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long),
                        track_ids=torch.zeros(0, dtype=torch.long),
                        track_index=torch.zeros(0, dtype=torch.long), masks=[])
        probs = self.track_logits().softmax(-1)[:, :-1]
        k = min(k, probs.numel())
        top_scores, top_idx = probs.flatten().topk(k, sorted=True)
        track_index = torch.div(top_idx, self.num_classes, rounding_mode='floor')
        labels = top_idx % self.num_classes
        records = list(self.records.values())
        track_ids = list(self.records)
        empty = encode_masks(torch.zeros((1, *self.ori_shape), dtype=torch.bool))[0]
        scores, masks = [], []
        for score, row in zip(top_scores.tolist(), track_index.tolist()):
            record = records[row]
            mask_score = record.mask_score_num / (record.mask_score_den + 1e-6)
            scores.append(score * mask_score)
            per_frame = [empty] * self.num_video_frames
            for frame, rle in zip(record.frames, record.masks):
                per_frame[frame] = rle
            masks.append(per_frame)
        return dict(scores=torch.tensor(scores, dtype=torch.float64), labels=labels,
                    track_ids=torch.tensor([track_ids[r] for r in track_index.tolist()]),
                    track_index=track_index, masks=masks)


@MODELS.register_module()
class CTVISTracker:
    """Parameter-free memory tracker of CTVIS (spec §4.2).

    Args:
        num_classes (int): Number of object classes C.
        score_thr (float): Queries whose best class probability is not above this are dropped
            (the best one is kept if none passes).
        init_score_thr (float): Unmatched detections above this start new tracks.
        mask_nms_thr (float): Mask-IoU threshold of the per-frame NMS.
        match_score_thr (float): Minimum (weighted) bi-softmax score of an accepted match.
        match_metric (str): ``'bisoftmax'`` (default), ``'det2track'`` or ``'track2det'``.
        frame_weight (bool): Weight competing tracks by how many frames they were seen in.
        max_cache (int): Raw embeddings per track used by the memory fusion.
        num_dead_frames (int): Tracks unseen for more than this many frames are forgotten.
        noise_frame_num, none_frame_num, suppress_frame_num (int): Short-track suppression
            (see :class:`VideoTracks`).
    """

    def __init__(self, num_classes: int, score_thr: float = 0.01, init_score_thr: float = 0.01,
                 mask_nms_thr: float = 0.6, match_score_thr: float = 0.3,
                 match_metric: str = 'bisoftmax', frame_weight: bool = True,
                 max_cache: int = 10, num_dead_frames: int = 20, noise_frame_num: int = 8,
                 none_frame_num: int = 2, suppress_frame_num: int = 3) -> None:
        if match_metric not in ('bisoftmax', 'det2track', 'track2det'):
            raise ValueError(f"match_metric must be 'bisoftmax', 'det2track' or 'track2det', "
                             f'got {match_metric!r}')
        self.num_classes = num_classes
        self.score_thr = score_thr
        self.init_score_thr = init_score_thr
        self.mask_nms_thr = mask_nms_thr
        self.match_score_thr = match_score_thr
        self.match_metric = match_metric
        self.frame_weight = frame_weight
        self.max_cache = max_cache
        self.num_dead_frames = num_dead_frames
        self.suppression = dict(noise_frame_num=noise_frame_num, none_frame_num=none_frame_num,
                                suppress_frame_num=suppress_frame_num)
        self.reset()

    def reset(self) -> None:
        """Forget everything: call at the first frame of each video."""
        self.memory = MemoryBank(self.max_cache, self.num_dead_frames)
        self.video = VideoTracks(self.num_classes, **self.suppression)
        self.num_tracks = 0

    def select_candidates(self, logits: Tensor, mask_logits: Tensor) -> Tuple[Tensor, Tensor]:
        """Score filter and mask NMS of one frame's queries.

        Args:
            logits (Tensor): Class logits, shape (Q, C + 1).
            mask_logits (Tensor): Stride-4 mask logits, shape (Q, h, w).

        Returns:
            tuple[Tensor, Tensor]: Kept query indices in descending score order (N,) and their
            scores (N,).
        """
        scores = logits.softmax(-1)[:, :-1].max(-1).values
        # the official call: not a stable sort, so tied queries come in its order, not query order
        order = torch.sort(scores, dim=0, descending=True).indices
        keep = order[scores[order] > self.score_thr]
        if len(keep) == 0:
            keep = order[:1]
        kept = mask_nms(mask_logits[keep].sigmoid() > 0.5, self.mask_nms_thr)
        keep = keep[kept]
        return keep, scores[keep]

    def match_scores(self, det_embeds: Tensor, track_embeds: Tensor) -> Tensor:
        """Detection-to-track matching scores, shape (N, M)."""
        if self.match_metric == 'bisoftmax':
            return bisoftmax_scores(det_embeds, track_embeds)
        sim = det_embeds @ track_embeds.T
        return sim.softmax(dim=1) if self.match_metric == 'det2track' else sim.softmax(dim=0)

    def assign(self, scores: Tensor, track_frames: Tensor) -> List[int]:
        """Greedy assignment of detections (rows, in descending detection score) to tracks.

        Args:
            scores (Tensor): Matching scores, shape (N, M).
            track_frames (Tensor): Frames each track was seen in, shape (M,).

        Returns:
            list[int]: For each detection, the matched column or -1.
        """
        scores = scores.clone()
        matches = []
        for i in range(scores.shape[0]):
            row = scores[i]
            if self.frame_weight:
                valid = row > self.match_score_thr
                if int(valid.sum()) > 1:
                    weights = track_frames[valid]
                    row = row.clone()
                    row[valid] = row[valid] * weights
                    row[~valid] = row[~valid] * weights.mean()
            best_score, best = row.max(dim=0)
            if best_score > self.match_score_thr:
                matches.append(int(best))
                scores[:, best] = 0
            else:
                matches.append(-1)
        return matches

    def track(self, frame_id: int, logits: Tensor, mask_logits: Tensor,
              embeds: Tensor) -> Tuple[Tensor, Tensor]:
        """Associate one frame's queries with the memory and update it.

        Args:
            frame_id (int): Index of the frame in the video; 0 resets the tracker.
            logits (Tensor): Class logits, shape (Q, C + 1).
            mask_logits (Tensor): Stride-4 mask logits, shape (Q, h, w).
            embeds (Tensor): Re-id embeddings, shape (Q, E).

        Returns:
            tuple[Tensor, Tensor]: Query indices kept this frame (N,) and their track ids (N,).
        """
        if frame_id == 0:
            self.reset()
        keep, det_scores = self.select_candidates(logits, mask_logits)
        det_embeds = embeds[keep]
        matches = [-1] * len(keep)
        if len(self.memory) > 0:
            matches = self.assign(
                self.match_scores(det_embeds, self.memory.embeddings().to(det_embeds)),
                self.memory.num_observations().to(det_embeds))
        memory_ids = self.memory.track_ids
        track_ids, kept = [], []
        for k, column in enumerate(matches):
            if column >= 0:
                track_ids.append(memory_ids[column])
            elif det_scores[k] > self.init_score_thr:
                track_ids.append(self.num_tracks)
                self.num_tracks += 1
            else:
                continue
            kept.append(k)
        kept = torch.as_tensor(kept, dtype=torch.long, device=keep.device)
        self.memory.update(track_ids, det_embeds[kept], frame_id)
        self.memory.remove_dead(frame_id)
        return keep[kept], torch.as_tensor(track_ids, dtype=torch.long)


@MODELS.register_module()
class RandomIdentityTracker(CTVISTracker):
    """A no-tracking control: the CTVIS tracker with the embedding association replaced by chance.

    Candidates, new-track creation, memory and video output are those of :class:`CTVISTracker`,
    but each frame's detections are given the existing track ids in random order, so any AP gap
    to the real tracker measures what the learned association contributes.

    Args:
        seed (int): Seed of the random assignment.
        **kwargs: Arguments of :class:`CTVISTracker`.
    """

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        super().__init__(*args, **kwargs)

    def assign(self, scores: Tensor, track_frames: Tensor) -> List[int]:
        num_dets, num_tracks = scores.shape
        order = torch.randperm(num_tracks, generator=self.generator).tolist()
        return [order[i] if i < num_tracks else -1 for i in range(num_dets)]
