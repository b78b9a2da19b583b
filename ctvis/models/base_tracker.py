"""The tracker interface the CTVIS model relies on.

A tracker is built from the ``tracker`` config of :class:`~ctvis.models.CTVIS`. Per frame, the
model calls :meth:`BaseVideoTracker.track`, resizes the kept queries' masks to the original frame
and records them with ``tracker.video.add_frame``; at the end of the video it reads
``tracker.video.video_predictions``. Nothing else of a tracker is used, so another association
(Hungarian, MinVIS-style, ...) is a new file with a registered subclass and a config.
"""
from abc import ABCMeta, abstractmethod
from typing import Tuple

from torch import Tensor

from .video_tracks import VideoTracks


class BaseVideoTracker(metaclass=ABCMeta):
    """Base class of online trackers.

    Attributes:
        num_classes (int): Number of object classes C.
        video (VideoTracks): The video-level records of the current video (or a subclass that
            scores them differently); a new one after every :meth:`reset`.
    """

    num_classes: int
    video: VideoTracks

    @abstractmethod
    def reset(self) -> None:
        """Forget the current video, ``video`` included; :meth:`track` calls it at frame 0."""

    @abstractmethod
    def track(self, frame_id: int, logits: Tensor, mask_logits: Tensor,
              embeds: Tensor) -> Tuple[Tensor, Tensor]:
        """Associate one frame's queries with the tracks seen so far.

        Args:
            frame_id (int): Index of the frame in the video; 0 starts a new video.
            logits (Tensor): Class logits, shape (Q, C + 1).
            mask_logits (Tensor): Stride-4 mask logits, shape (Q, h, w).
            embeds (Tensor): Re-id embeddings, shape (Q, E).

        Returns:
            tuple[Tensor, Tensor]: The queries kept this frame (N,) (long, on the input device)
            and their track ids (N,) (long, CPU).
        """
