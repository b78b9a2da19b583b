"""The CTVIS memory tracker (spec §4.2) and its no-tracking control.

:class:`CTVISTracker` associates each frame's instance queries with the tracks in a
:class:`~ctvis.models.memory_bank.MemoryBank` (bi-softmax similarity, greedy assignment weighted by
how often each track was seen) and feeds a :class:`~ctvis.models.video_tracks.VideoTracks`, the
video-level output. Every threshold, epsilon and tie follows the official arithmetic
(docs/parity.md, "Tracker conventions").
"""
import math
import numbers
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from mmdet.registry import MODELS
from .base_tracker import BaseVideoTracker
from .mask_utils import greedy_suppression, mask_iou, tracker_binary_masks
from .memory_bank import MemoryBank
from .motion import MotionHistory, mask_geometry
from .video_tracks import VideoTracks


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


def check_settings(owner: str, counts: dict, thresholds: dict, flags: dict) -> None:
    """ValueError naming the setting unless each count ``(value, minimum)`` is a whole number of
    at least its minimum, each threshold a finite real number and each flag a bool: a string or
    NaN would otherwise pass the config and fail (or filter everything) at the first frame."""
    for name, (value, minimum) in counts.items():
        if type(value) is not int or value < minimum:
            raise ValueError(f'{owner}: {name} must be a whole number >= {minimum}, got {value!r}')
    for name, value in thresholds.items():
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
                not math.isfinite(value):
            raise ValueError(f'{owner}: {name} must be a finite number, got {value!r}')
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f'{owner}: {name} must be True or False, got {value!r}')


@MODELS.register_module()
class CTVISTracker(BaseVideoTracker):
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
        motion_weight (float): Weight in [0, 1] of a motion cue mixed into the matching scores
            (not in CTVIS; 0, the default, is the official tracker): ``(1 - w) * score + w *
            support``, the support of :class:`~ctvis.models.motion.MotionHistory` (how close a
            detection's mask centroid is to where the track's last ones lead). For look-alike
            instances that cross (docs/benchmarks.md).
        motion_sigma (float): The support's width, in units of the track's radius.
        motion_history (int): Mask centroids per track the prediction's line is fitted to.
    """

    def __init__(self, num_classes: int, score_thr: float = 0.01, init_score_thr: float = 0.01,
                 mask_nms_thr: float = 0.6, match_score_thr: float = 0.3,
                 match_metric: str = 'bisoftmax', frame_weight: bool = True,
                 max_cache: int = 10, num_dead_frames: int = 20, noise_frame_num: int = 8,
                 none_frame_num: int = 2, suppress_frame_num: int = 3,
                 motion_weight: float = 0.0, motion_sigma: float = 1.0,
                 motion_history: int = 10) -> None:
        if match_metric not in ('bisoftmax', 'det2track', 'track2det'):
            raise ValueError(f"match_metric must be 'bisoftmax', 'det2track' or 'track2det', "
                             f'got {match_metric!r}')
        check_settings(type(self).__name__, dict(
            num_classes=(num_classes, 1), max_cache=(max_cache, 1),
            num_dead_frames=(num_dead_frames, 0), noise_frame_num=(noise_frame_num, 0),
            none_frame_num=(none_frame_num, 0), suppress_frame_num=(suppress_frame_num, 0),
            motion_history=(motion_history, 1)),
            dict(score_thr=score_thr, init_score_thr=init_score_thr, mask_nms_thr=mask_nms_thr,
                 match_score_thr=match_score_thr, motion_weight=motion_weight,
                 motion_sigma=motion_sigma), dict(frame_weight=frame_weight))
        if not 0 <= motion_weight <= 1:
            raise ValueError(f'{type(self).__name__}: motion_weight must be in [0, 1], got '
                             f'{motion_weight!r}')
        if not motion_sigma > 0:
            raise ValueError(f'{type(self).__name__}: motion_sigma must be > 0, got '
                             f'{motion_sigma!r}')
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
        self.motion_weight = motion_weight
        self.motion_sigma = motion_sigma
        self.motion_history = motion_history
        self.reset()

    def reset(self) -> None:
        """Forget everything: call at the first frame of each video."""
        self.memory = MemoryBank(self.max_cache, self.num_dead_frames)
        self.video = VideoTracks(self.num_classes, **self.suppression)
        self.motion = MotionHistory(self.motion_history)
        self.num_tracks = 0

    def select_candidates(self, logits: Tensor, mask_logits: Optional[Tensor],
                          mask_ious: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Score filter and mask NMS of one frame's queries.

        Args:
            logits (Tensor): Class logits, shape (Q, C + 1).
            mask_logits (Tensor, optional): Stride-4 mask logits, shape (Q, h, w).
            mask_ious (Tensor, optional): Instead of ``mask_logits``: the queries' pairwise
                :func:`mask_iou` of their binary masks (``sigmoid > 0.5``), shape (Q, Q).

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
        if mask_ious is None:
            ious = mask_iou(tracker_binary_masks(mask_logits[keep]))
        else:
            ious = mask_ious[keep][:, keep]
        kept = greedy_suppression(ious > self.mask_nms_thr)  # mask NMS
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

    def track(self, frame_id: int, logits: Tensor, mask_logits: Optional[Tensor],
              embeds: Tensor, mask_ious: Optional[Tensor] = None,
              geometry: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Associate one frame's queries with the memory and update it.

        Args:
            frame_id (int): Index of the frame in the video; 0 resets the tracker.
            logits (Tensor): Class logits, shape (Q, C + 1).
            mask_logits (Tensor, optional): Stride-4 mask logits, shape (Q, h, w).
            embeds (Tensor): Re-id embeddings, shape (Q, E).
            mask_ious (Tensor, optional): The queries' pairwise mask IoUs instead of
                ``mask_logits`` (see :meth:`select_candidates`).
            geometry (Tensor, optional): The queries' mask centroids and areas
                (:func:`~ctvis.models.motion.mask_geometry`, (Q, 3)) instead of ``mask_logits``
                for the motion cue.

        Returns:
            tuple[Tensor, Tensor]: Query indices kept this frame (N,) and their track ids (N,).
        """
        if frame_id == 0:
            self.reset()
        keep, det_scores = self.select_candidates(logits, mask_logits, mask_ious)
        det_embeds = embeds[keep]
        memory_ids = self.memory.track_ids
        det_geometry = None
        if self.motion_weight > 0:
            if geometry is None and mask_logits is None:
                raise ValueError(f'{type(self).__name__}: the motion cue (motion_weight '
                                 f'{self.motion_weight}) needs mask_logits or geometry')
            det_geometry = (mask_geometry(tracker_binary_masks(mask_logits[keep]))
                            if geometry is None else geometry[keep])
        matches = [-1] * len(keep)
        if len(self.memory) > 0:
            scores = self.match_scores(det_embeds, self.memory.embeddings().to(det_embeds))
            if det_geometry is not None:
                support = self.motion.support(memory_ids, det_geometry, frame_id,
                                              self.motion_sigma).to(scores)
                mixed = (1 - self.motion_weight) * scores + self.motion_weight * support
                scores = torch.where(support.isnan(), scores, mixed)
            matches = self.assign(scores, self.memory.num_observations().to(det_embeds))
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
        if det_geometry is not None:
            self.motion.update(track_ids, det_geometry[kept], frame_id)
        self.motion.forget(self.memory.remove_dead(frame_id))
        return keep[kept], torch.as_tensor(track_ids, dtype=torch.long)


@MODELS.register_module()
class RandomIdentityTracker(CTVISTracker):
    """A no-tracking control: the CTVIS tracker with the embedding association replaced by chance.

    Candidates, new-track creation, memory and video output are those of :class:`CTVISTracker`,
    but each frame's detections are given the existing track ids in random order, so any AP gap
    to the real tracker measures what the learned association contributes.

    Args:
        seed (int): Seed of the random assignment, set again at each video's first frame, so a
            video's identities do not depend on the videos tracked before it.
        **kwargs: Arguments of :class:`CTVISTracker`.
    """

    def __init__(self, *args, seed: int = 0, **kwargs) -> None:
        self.seed = seed
        self.generator = torch.Generator()
        super().__init__(*args, **kwargs)

    def reset(self) -> None:
        super().reset()
        self.generator.manual_seed(self.seed)

    def assign(self, scores: Tensor, track_frames: Tensor) -> List[int]:
        num_dets, num_tracks = scores.shape
        order = torch.randperm(num_tracks, generator=self.generator).tolist()
        return [order[i] if i < num_tracks else -1 for i in range(num_dets)]
