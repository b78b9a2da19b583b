"""The memory bank shared by consistent training and the inference tracker.

CTVIS's point is that training builds its contrastive items from the same memory the tracker
matches against at inference. Both therefore use :class:`TrackMemory` below: one momentum-averaged
("similarity-guided fusion") embedding per instance, updated frame by frame in temporal order.
"""
from typing import Dict, Iterable, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor


def similarity_guided_fusion(memory: Tensor, history: Tensor,
                             embed: Tensor) -> Tensor:
    """Fuse a new observation into a memory embedding.

    ``m' = (1 - beta) * m + beta * e`` with ``beta = max(0, mean_k cos(h_k, e))``: an observation
    that agrees with the instance's recent appearance moves the memory more than an outlier does.

    Args:
        memory (Tensor): Current memory embedding, shape (C,).
        history (Tensor): Recent raw embeddings of the instance, shape (K, C), K >= 1.
        embed (Tensor): The new raw embedding, shape (C,).

    Returns:
        Tensor: The fused memory embedding, shape (C,). Differentiable in all inputs.
    """
    beta = F.cosine_similarity(history, embed[None], dim=-1).mean().clamp(min=0)
    return (1 - beta) * memory + beta * embed


class TrackMemory:
    """Memory of one instance: its fused embedding and a bounded cache of raw embeddings.

    Args:
        max_cache (int): How many recent raw embeddings the fusion weight ``beta`` looks at.
    """

    def __init__(self, max_cache: int = 10) -> None:
        self.max_cache = max_cache
        self.history: List[Tensor] = []
        self.embed: Optional[Tensor] = None
        self.num_updates = 0
        self.last_frame = -1

    def update(self, embed: Tensor, frame_id: int = -1) -> Tensor:
        """Fuse ``embed`` (C,) into the memory and return the new memory embedding (C,)."""
        if self.embed is None:
            self.embed = embed
        else:
            self.embed = similarity_guided_fusion(self.embed, torch.stack(self.history), embed)
        self.history.append(embed)
        if len(self.history) > self.max_cache:
            self.history.pop(0)
        self.num_updates += 1
        self.last_frame = frame_id
        return self.embed


class MemoryBank:
    """Per-track memories keyed by track id, with dead-track removal.

    Args:
        max_cache (int): Raw embeddings kept per track for the fusion weight.
        num_dead_frames (int): A track not updated for more than this many frames is dropped.
    """

    def __init__(self, max_cache: int = 10, num_dead_frames: int = 20) -> None:
        self.max_cache = max_cache
        self.num_dead_frames = num_dead_frames
        self.tracks: Dict[int, TrackMemory] = {}

    def __len__(self) -> int:
        return len(self.tracks)

    @property
    def track_ids(self) -> List[int]:
        return list(self.tracks)

    def update(self, track_ids: Iterable[int], embeds: Tensor, frame_id: int) -> None:
        """Update (or create) the memories of ``track_ids`` with ``embeds`` (N, C)."""
        for track_id, embed in zip(track_ids, embeds):
            memory = self.tracks.setdefault(int(track_id), TrackMemory(self.max_cache))
            memory.update(embed, frame_id)

    def embeddings(self) -> Tensor:
        """Memory embeddings of all tracks in :attr:`track_ids` order, shape (M, C)."""
        return torch.stack([m.embed for m in self.tracks.values()])

    def num_observations(self) -> Tensor:
        """How many frames each track was observed in, shape (M,), float."""
        return torch.tensor([float(m.num_updates) for m in self.tracks.values()])

    def remove_dead(self, frame_id: int) -> List[int]:
        """Drop tracks unseen for more than ``num_dead_frames`` frames; return their ids."""
        dead = [i for i, m in self.tracks.items()
                if frame_id - m.last_frame > self.num_dead_frames]
        for i in dead:
            del self.tracks[i]
        return dead
