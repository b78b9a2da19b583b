"""A motion cue for the tracker (not in CTVIS): where each track's mask should be in this frame.

Look-alike instances that cross can only be told apart by where they are going: their re-id
embeddings are alike, and at a crossing the detector's query may move from one to the other
with the embedding going along (docs/benchmarks.md). :class:`MotionHistory` keeps the centroids of
each track's last masks, extrapolates them along a least-squares line to the current frame, and
scores each detection by how close its centroid lands, in units of the track's size.
"""
import math
from collections import deque
from typing import Deque, Dict, Iterable, List, Optional, Tuple

import torch
from torch import Tensor

from .mask_utils import mask_centroids


def mask_geometry(masks: Tensor) -> Tensor:
    """Centroid and area of each binary mask, in cells of the mask grid.

    Args:
        masks (Tensor): Binary masks (:func:`~ctvis.models.mask_utils.tracker_binary_masks`,
            as the mask NMS sees them), shape (N, h, w).

    Returns:
        Tensor: (N, 3) float32 ``(x, y, area)``; x and y are NaN for an empty mask.
    """
    binary = masks.float()
    return torch.cat([mask_centroids(binary), binary.sum((-2, -1))[:, None]], 1)


class MotionHistory:
    """The recent mask centroids of each track and their extrapolation.

    Args:
        history (int): Observations kept per track; the prediction is the least-squares line
            through them (one observation: that position).
    """

    def __init__(self, history: int) -> None:
        self.history = history
        # track id -> (frame, x, y, radius) of its last non-empty masks, oldest first
        self.tracks: Dict[int, Deque[Tuple[int, float, float, float]]] = {}

    def update(self, track_ids: Iterable[int], geometry: Tensor, frame_id: int) -> None:
        """Record this frame's masks (``geometry`` (N, 3) of :func:`mask_geometry`, one row per
        track id); empty masks say nothing about where a track is and are skipped."""
        for track_id, (x, y, area) in zip(track_ids, geometry.tolist()):
            if area > 0:
                observations = self.tracks.setdefault(int(track_id), deque(maxlen=self.history))
                observations.append((frame_id, x, y, max(math.sqrt(area / math.pi), 1.0)))

    def forget(self, track_ids: Iterable[int]) -> None:
        for track_id in track_ids:
            self.tracks.pop(track_id, None)

    def predict(self, track_id: int, frame_id: int) -> Optional[Tuple[float, float, float]]:
        """Where the track's centroid should be at ``frame_id``, and its last radius (the radius
        of a disc of its mask's area); None for a track never seen with a non-empty mask."""
        observations = self.tracks.get(track_id)
        if not observations:
            return None
        frames = [o[0] for o in observations]
        radius = observations[-1][3]
        mean_frame = sum(frames) / len(frames)
        spread = sum((f - mean_frame) ** 2 for f in frames)
        position = []
        for axis in (1, 2):
            mean = sum(o[axis] for o in observations) / len(observations)
            velocity = 0.0 if spread == 0 else sum(
                (o[0] - mean_frame) * (o[axis] - mean) for o in observations) / spread
            position.append(mean + velocity * (frame_id - mean_frame))
        return position[0], position[1], radius

    def support(self, track_ids: List[int], geometry: Tensor, frame_id: int,
                sigma: float) -> Tensor:
        """How well each detection's centroid fits each track's prediction.

        Args:
            track_ids (list[int]): The M tracks (columns).
            geometry (Tensor): (N, 3) :func:`mask_geometry` of the detections (rows).
            frame_id (int): The current frame.
            sigma (float): The Gaussian's width in units of the track's radius.

        Returns:
            Tensor: (N, M) float32 on CPU, ``exp(-d^2 / (2 (sigma r)^2))`` for a centroid ``d``
            from the prediction of a track of radius ``r``; 0 for an empty detection mask; NaN in
            the columns of tracks with no prediction.
        """
        geometry = geometry.detach().float().cpu()
        support = torch.full((len(geometry), len(track_ids)), float('nan'))
        for column, track_id in enumerate(track_ids):
            prediction = self.predict(track_id, frame_id)
            if prediction is None:
                continue
            x, y, radius = prediction
            distance_sq = (geometry[:, 0] - x) ** 2 + (geometry[:, 1] - y) ** 2
            fit = torch.exp(-distance_sq / (2 * (sigma * radius) ** 2))
            support[:, column] = torch.where(geometry[:, 2] > 0, fit, torch.zeros_like(fit))
        return support
