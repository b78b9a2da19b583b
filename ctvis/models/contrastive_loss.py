"""Consistent contrastive learning: contrastive items built from the tracker's own memory bank."""
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from mmdet.registry import MODELS
from .memory_bank import TrackMemory


class ContrastiveItem(NamedTuple):
    """One anchor with its single positive and its negatives."""
    anchor: Tensor  # (E,)
    positive: Tensor  # (E,)
    negatives: Tensor  # (K, E)


@MODELS.register_module()
class ConsistentContrastiveLoss(nn.Module):
    """Contrastive loss on re-id embeddings, with items built as the tracker uses them (spec §2.4).

    For every clip, a memory bank is filled frame by frame in temporal order with the same
    :class:`~ctvis.models.memory_bank.TrackMemory` (similarity-guided fusion) the inference tracker
    uses. An instance's query at frame t (t >= 1) is an anchor; its positive is, with probability
    ``memory_positive_prob``, its fused memory after frame t-1, otherwise its most recent earlier
    embedding (its first later embedding when it has not appeared before).

    Negatives (``negatives``):
        - ``'memory'`` (the paper, default): the fused memories of the other instances after frame
          t-1 plus the background queries (matched to no instance) of frame t-1.
        - ``'prev_queries'`` (the released code): all queries of frame t-1 except the one matched to
          the anchor's instance.

    Noise (``noise_prob``): when an instance already in memory is absent from a frame, with this
    probability its memory is updated with a random query embedding of that frame, mimicking a
    tracking error so the model learns to recover from polluted memories. The noisy embedding only
    enters the memory (as a wrong tracker update would), never serves as an anchor or raw positive.

    Loss per item: ``log(1 + sum_k exp(a.n_k - a.p))`` on raw dot products (weight ``loss_weight``)
    plus ``mean((cos(a, k) - y_k)^2)`` over the positive (y=1) and negatives (y=0) (weight
    ``aux_loss_weight``), both averaged over the items of the batch.

    Cross-clip negatives (``cross_clip_negatives``, not in the paper or the released code): the
    queries matched to instances at frame t-1 of the batch's other clips join every anchor's
    negatives. Within one clip an instance usually keeps its query from frame to frame, so the
    within-clip items are met by an embedding that says which query it came from; another clip's
    instance on the same query is a negative that only the object's appearance can tell apart.

    With ``negatives='prev_queries'`` and no noise, the items are those of the released code
    except two points (docs/method.md): an instance first seen at t >= 1 always gets its future
    positive (the released ``exist_after`` check drops some), and the fusion looks at the last
    ``max_cache`` observations as the tracker does (the released training code at all of them;
    the same for clips of up to ``max_cache + 1`` frames).

    Args:
        negatives (str): ``'memory'`` or ``'prev_queries'``.
        noise_prob (float): Probability of a noisy memory update for an absent instance.
        memory_positive_prob (float): Probability that the positive is the fused memory.
        max_cache (int): Raw embeddings the fusion looks at (same as the tracker's).
        loss_weight (float): Weight of the log-sum-exp term.
        aux_loss_weight (float): Weight of the cosine term.
        cross_clip_negatives (bool): Add the other clips' matched queries to the negatives.
    """

    def __init__(self, negatives: str = 'memory', noise_prob: float = 0.05,
                 memory_positive_prob: float = 0.5, max_cache: int = 10,
                 loss_weight: float = 2.0, aux_loss_weight: float = 3.0,
                 cross_clip_negatives: bool = False) -> None:
        super().__init__()
        if negatives not in ('memory', 'prev_queries'):
            raise ValueError(f"negatives must be 'memory' or 'prev_queries', got {negatives!r}")
        if not 0 <= noise_prob <= 1 or not 0 <= memory_positive_prob <= 1:
            raise ValueError('noise_prob and memory_positive_prob must be probabilities')
        self.negatives = negatives
        self.noise_prob = noise_prob
        self.memory_positive_prob = memory_positive_prob
        self.max_cache = max_cache
        self.loss_weight = loss_weight
        self.aux_loss_weight = aux_loss_weight
        self.cross_clip_negatives = cross_clip_negatives

    def build_items(self, embeds: Tensor, slot_queries: Tensor,
                    extra_negatives: Optional[Sequence[Tensor]] = None) -> List[ContrastiveItem]:
        """Build the contrastive items of one clip.

        Args:
            embeds (Tensor): Re-id embeddings of the clip's frames, shape (T, Q, E).
            slot_queries (Tensor): For every frame and instance slot, the query matched to that
                instance, or -1 where the instance is absent, shape (T, S).
            extra_negatives (Sequence[Tensor], optional): Per frame t, embeddings (K_t, E) that
                join the negatives of the anchors at frame t + 1.

        Returns:
            list[ContrastiveItem]: The items, in frame then slot order.
        """
        num_frames, num_queries = embeds.shape[:2]
        num_slots = slot_queries.shape[1]
        slot_queries = slot_queries.tolist()
        memories = [TrackMemory(self.max_cache) for _ in range(num_slots)]
        observed: List[List[tuple]] = [[] for _ in range(num_slots)]  # (frame, embed) per slot
        for t in range(num_frames):
            for i, q in enumerate(slot_queries[t]):
                if q >= 0:
                    observed[i].append((t, embeds[t, q]))

        items: List[ContrastiveItem] = []
        prev_memory: List[Optional[Tensor]] = [None] * num_slots
        for t in range(num_frames):
            if t > 0:
                frame_items = self._frame_items(embeds, slot_queries, observed, prev_memory, t)
                if extra_negatives is not None and t - 1 < len(extra_negatives):
                    frame_items = [item._replace(negatives=torch.cat(
                        [item.negatives, extra_negatives[t - 1]])) for item in frame_items]
                items.extend(frame_items)
            for i, q in enumerate(slot_queries[t]):
                if q >= 0:
                    memories[i].update(embeds[t, q], t)
                elif (memories[i].embed is not None and self.noise_prob > 0
                      and float(torch.rand(())) < self.noise_prob):
                    noise = int(torch.randint(num_queries, ()))
                    memories[i].update(embeds[t, noise], t)
            prev_memory = [m.embed for m in memories]
        return items

    def _frame_items(self, embeds: Tensor, slot_queries: List[List[int]],
                     observed: List[List[tuple]], prev_memory: List[Optional[Tensor]],
                     t: int) -> List[ContrastiveItem]:
        """Items whose anchors are the instances present at frame ``t`` (>= 1)."""
        prev_matched = {q for q in slot_queries[t - 1] if q >= 0}
        background = [q for q in range(embeds.shape[1]) if q not in prev_matched]
        items = []
        for i, q in enumerate(slot_queries[t]):
            if q < 0:
                continue
            earlier = [e for s, e in observed[i] if s < t]
            later = [e for s, e in observed[i] if s > t]
            if earlier:
                use_memory = float(torch.rand(())) < self.memory_positive_prob
                positive = prev_memory[i] if use_memory else earlier[-1]
            elif later:
                positive = later[0]
            else:
                continue
            if self.negatives == 'prev_queries':
                own = slot_queries[t - 1][i]
                negatives = embeds[t - 1, [k for k in range(embeds.shape[1]) if k != own]]
            else:
                others = [m for j, m in enumerate(prev_memory) if j != i and m is not None]
                negatives = torch.cat(([torch.stack(others)] if others else []) +
                                      [embeds[t - 1, background]])
            items.append(ContrastiveItem(embeds[t, q], positive, negatives))
        return items

    @staticmethod
    def _cross_clip_negatives(clip_embeds: Sequence[Tensor],
                              clip_slot_queries: Sequence[Tensor]) -> List[List[Tensor]]:
        """Per clip and frame t, the matched queries of the other clips' frame t, (K_t, E)."""
        matched = [[embeds[t, slots[t][slots[t] >= 0]] for t in range(embeds.shape[0])]
                   for embeds, slots in zip(clip_embeds, clip_slot_queries)]
        extra = []
        for c, embeds in enumerate(clip_embeds):
            extra.append([
                torch.cat([embeds.new_zeros(0, embeds.shape[-1])] +
                          [frames[t] for d, frames in enumerate(matched) if d != c
                           and t < len(frames)]) for t in range(embeds.shape[0])])
        return extra

    @staticmethod
    def item_losses(items: Sequence[ContrastiveItem]) -> Tuple[Tensor, Tensor]:
        """The log-sum-exp and cosine terms of each item, (N,) each.

        All items in a few operations over their anchors, positives and negatives side by side
        (a segmented log-sum-exp and cosine error): with a dozen operations per item (about 50
        items a quickstart step) the contrastive loss's forward and backward took twice as long
        (docs/benchmarks.md).
        """
        anchors = torch.stack([item.anchor for item in items])
        positives = torch.stack([item.positive for item in items])
        negatives = torch.cat([item.negatives for item in items])
        counts = torch.tensor([len(item.negatives) for item in items], device=anchors.device)
        owner = torch.repeat_interleave(torch.arange(len(items), device=anchors.device), counts)
        # log(1 + sum_k exp(a.n_k - a.p)): a log-sum-exp over 0 and each item's differences
        excess = (negatives * anchors[owner]).sum(-1) - (anchors * positives).sum(-1)[owner]
        peak = excess.new_zeros(len(items)).scatter_reduce(0, owner, excess.detach(), 'amax')
        sums = (-peak).exp().index_add(0, owner, (excess - peak[owner]).exp())
        embed_losses = peak + sums.log()
        # mean squared error of the cosines against 1 (the positive) and 0 (the negatives)
        errors = (torch.cosine_similarity(anchors, positives, dim=-1) - 1)**2
        errors = errors.index_add(
            0, owner, torch.cosine_similarity(anchors[owner], negatives, dim=-1)**2)
        return embed_losses, errors / (counts + 1)

    def forward(self, clip_embeds: Sequence[Tensor],
                clip_slot_queries: Sequence[Tensor]) -> Dict[str, Tensor]:
        """Contrastive losses of a batch of clips.

        Args:
            clip_embeds (Sequence[Tensor]): Per clip, embeddings (T, Q, E).
            clip_slot_queries (Sequence[Tensor]): Per clip, matched query per frame and
                instance slot, -1 where absent, (T, S).

        Returns:
            dict[str, Tensor]: ``loss_reid`` and ``loss_aux_reid``; zero (still in the graph)
            when the batch has no item.
        """
        extra = (self._cross_clip_negatives(clip_embeds, clip_slot_queries)
                 if self.cross_clip_negatives else [None] * len(clip_embeds))
        items = [item for embeds, slots, negatives in zip(clip_embeds, clip_slot_queries, extra)
                 for item in self.build_items(embeds, slots, negatives)]
        if not items:
            zero = sum(e.sum() for e in clip_embeds) * 0.0
            return dict(loss_reid=zero, loss_aux_reid=zero.clone())
        embed_losses, aux_losses = self.item_losses(items)
        return dict(loss_reid=self.loss_weight * embed_losses.mean(),
                    loss_aux_reid=self.aux_loss_weight * aux_losses.mean())
