"""Consistent contrastive learning: the items and losses of ``ConsistentContrastiveLoss``.

``official_items`` / ``official_losses`` below transcribe, in plain Python and independently of
``ctvis.models``, the rules of the official plugin (KainingYing/CTVIS,
``ctvis/modeling/cl_plugin/ct_cl_plugin.py``, read for its facts at 05f7260 and at the first
release 1824249, whose item rules are the same): per clip, each instance slot
records per frame its matched query's embedding (or nothing), the other queries of that frame
as its negatives, and its similarity-guided fused memory; then every slot present at a frame
t >= 1 is an anchor whose positive is its memory after t-1 or its latest earlier embedding (50/50),
or its first later embedding when it has none earlier, and whose negatives are those recorded at
t-1. ``negatives='prev_queries'`` with the noise off must give the same items and losses, except
where the official ``exist_after`` check is wrong (see ``official_items`` and docs/method.md).
"""
import math
from typing import Callable, List, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.dataset import pseudo_collate

from conftest import build_tiny_model
from ctvis.datasets.synthetic import square_clip
from ctvis.models import ConsistentContrastiveLoss
from ctvis.models.contrastive_loss import ContrastiveItem
from ctvis.models.ctvis import clip_slot_queries

OFFICIAL_WEIGHTS = (2.0, 3.0)  # REID_WEIGHT, AUX_REID_WEIGHT of every official config
OFFICIAL_POSITIVE_PROB = 0.5  # np.random.rand() > 0.5 picks the memory (MOMENTUM_EMBED True)


# --------------------------------------------------------------------------------------------
# Independent transcription of the official rules
# --------------------------------------------------------------------------------------------
class OfficialItem(NamedTuple):
    frame: int
    slot: int
    kind: str  # 'memory', 'last' or 'future': where the positive comes from
    anchor: torch.Tensor
    positive: torch.Tensor
    negatives: torch.Tensor


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v) / (float(u.norm()) * float(v.norm()))


def official_items(embeds: torch.Tensor, slot_queries: List[List[int]],
                   memory_positive: Callable[[], bool],
                   exist_after_bug: bool = True) -> List[OfficialItem]:
    """The official contrastive items of one clip, noise off.

    Args:
        embeds: (T, Q, E) embeddings of the clip's frames.
        slot_queries: per frame, per slot, the matched query or -1 (absent).
        memory_positive: called once per anchor seen before (frame then slot order); True picks
            the fused memory as the positive, False the latest earlier embedding.
        exist_after_bug: reproduce the official ``exist_after(t)``, which compares the number of
            absent frames after t with t itself instead of with the number of frames after t.
    """
    num_frames, num_queries = embeds.shape[:2]
    num_slots = len(slot_queries[0]) if num_frames else 0
    # Step 1: per slot and frame, the raw embedding (None if absent), the negatives stored for
    # that frame and the fused memory after that frame (carried over while absent).
    raw = [[None] * num_frames for _ in range(num_slots)]
    stored_negatives = [[None] * num_frames for _ in range(num_slots)]
    memory_after = [[None] * num_frames for _ in range(num_slots)]
    for i in range(num_slots):
        memory = None
        for t in range(num_frames):
            q = slot_queries[t][i]
            if q >= 0:
                e = embeds[t, q]
                stored_negatives[i][t] = embeds[t, [k for k in range(num_queries) if k != q]]
                seen = [r for r in raw[i][:t] if r is not None]
                if not seen:
                    memory = e
                else:  # similarity-guided fusion over every earlier observation (no cache cap)
                    beta = max(0.0, sum(_cos(r, e) for r in seen) / len(seen))
                    memory = (1 - beta) * memory + beta * e
                raw[i][t] = e
            else:
                stored_negatives[i][t] = embeds[t]
            memory_after[i][t] = memory
    # Step 2: anchors from frame 1 on.
    items = []
    for t in range(1, num_frames):
        for i in range(num_slots):
            if raw[i][t] is None:
                continue
            positive, kind = None, None
            absent_before = sum(r is None for r in raw[i][:t])
            if t != absent_before:  # exist_before
                if memory_positive():
                    positive, kind = memory_after[i][t - 1], 'memory'
                else:
                    positive = [r for r in raw[i][:t] if r is not None][-1]
                    kind = 'last'
            else:
                after = raw[i][t + 1:]
                absent_after = sum(r is None for r in after)
                if exist_after_bug:
                    exist_after = t != absent_after
                else:
                    exist_after = len(after) != absent_after
                later = [r for r in after if r is not None]
                if exist_after and later:
                    positive, kind = later[0], 'future'
            if positive is None:
                continue
            items.append(OfficialItem(t, i, kind, raw[i][t], positive,
                                      stored_negatives[i][t - 1]))
    return items


def official_losses(items: List[OfficialItem]) -> tuple:
    """``(loss_reid, loss_aux_reid)`` of a batch's items, in Python floats; (0, 0) without items.

    Per item, over every (positive, negative) pair: ``log(1 + sum exp(a.n - a.p))`` and
    ``mean over keys of (cos(a, k) - label)^2``; both averaged over items, then weighted.
    """
    if not items:
        return 0.0, 0.0
    embed_total = aux_total = 0.0
    for item in items:
        a, p = item.anchor, item.positive
        pairs = [math.exp(float(a @ n) - float(a @ p)) for n in item.negatives]
        embed_total += math.log(1.0 + sum(pairs))
        keys = [(p, 1.0)] + [(n, 0.0) for n in item.negatives]
        aux_total += sum((_cos(a, k) - label)**2 for k, label in keys) / len(keys)
    return (OFFICIAL_WEIGHTS[0] * embed_total / len(items),
            OFFICIAL_WEIGHTS[1] * aux_total / len(items))


# --------------------------------------------------------------------------------------------
# Random clips
# --------------------------------------------------------------------------------------------
class Clip(NamedTuple):
    embeds: torch.Tensor  # (T, Q, E), float64
    slots: torch.Tensor  # (T, S)


def random_clip(seed: int, max_frames: int = 10, dims: int = 4) -> Clip:
    """A clip with random length, query and slot counts, presence and matching.

    About a third of the frames repeat the previous one (clip frames are drawn with
    replacement, and a repeated image gives the same embeddings and matching).
    """
    rng = np.random.RandomState(seed)
    num_frames = rng.randint(1, max_frames + 1)
    num_queries = rng.randint(1, 7)
    num_slots = rng.randint(0, min(num_queries, 5) + 1)
    presence = rng.rand(num_frames, num_slots) < rng.choice([0.3, 0.6, 0.9])
    embeds = rng.randn(num_frames, num_queries, dims)
    slots = np.full((num_frames, num_slots), -1)
    for t in range(num_frames):
        if t > 0 and rng.rand() < 0.3:
            embeds[t], slots[t] = embeds[t - 1], slots[t - 1]
            continue
        queries = rng.permutation(num_queries)
        for i in range(num_slots):
            slots[t, i] = queries[i] if presence[t, i] else -1
    return Clip(torch.from_numpy(embeds), torch.from_numpy(slots))


def prev_queries_loss(num_frames: int, memory_positive_prob: float) -> ConsistentContrastiveLoss:
    """``negatives='prev_queries'``, noise off; the default fusion window up to 11 frames."""
    return ConsistentContrastiveLoss(negatives='prev_queries', noise_prob=0.0,
                                     memory_positive_prob=memory_positive_prob,
                                     max_cache=max(10, num_frames))


def assert_same_items(ours, official, context):
    assert len(ours) == len(official), context
    for k, (mine, ref) in enumerate(zip(ours, official)):
        where = f'{context}, item {k} (frame {ref.frame}, slot {ref.slot}, {ref.kind})'
        assert torch.equal(mine.anchor, ref.anchor), where
        torch.testing.assert_close(mine.positive, ref.positive, rtol=1e-9, atol=1e-9,
                                   msg=where)
        assert mine.negatives.shape == ref.negatives.shape, where
        assert torch.equal(mine.negatives, ref.negatives), where


NUM_CLIPS = 300
CLIPS = [random_clip(seed) for seed in range(NUM_CLIPS)]
# a few long clips, where the whole-clip fusion of the official code needs max_cache >= T - 1
CLIPS += [random_clip(10_000 + seed, max_frames=14) for seed in range(60)]


def test_random_clips_cover_the_presence_patterns():
    """The random clips exercise every rule (so the parity test below cannot pass vacuously)."""
    counts = dict(absent_at_0=0, absent_in_middle=0, seen_once=0, repeated_frame=0,
                  no_item=0, long=0)
    for clip in CLIPS:
        present = (clip.slots >= 0).numpy()
        counts['long'] += len(present) > 10
        counts['repeated_frame'] += any(
            torch.equal(clip.embeds[t], clip.embeds[t - 1]) for t in range(1, len(present)))
        counts['no_item'] += not official_items(clip.embeds, clip.slots.tolist(), lambda: True)
        for column in present.T:
            seen = np.flatnonzero(column)
            counts['absent_at_0'] += len(seen) > 0 and not column[0]
            counts['seen_once'] += len(seen) == 1
            counts['absent_in_middle'] += len(seen) > 0 and seen[-1] - seen[0] + 1 > len(seen)
    assert all(n >= 10 for n in counts.values()), counts


@pytest.mark.parametrize('choice', ['memory', 'last', 'draw'])
def test_prev_queries_items_equal_the_official_rules(choice):
    """Every item of every random clip equals the official one (noise off, bug corrected).

    ``memory``/``last`` force the 50/50 positive choice; ``draw`` replays our RNG stream into the
    transcription, which therefore also checks that one draw is made per anchor seen before,
    in frame then slot order, and that ``memory_positive_prob=0.5`` means ``rand < 0.5``.
    """
    prob = dict(memory=1.0, last=0.0, draw=OFFICIAL_POSITIVE_PROB)[choice]
    kinds = dict(memory=0, last=0, future=0)
    for seed, clip in enumerate(CLIPS):
        torch.manual_seed(seed)
        ours = prev_queries_loss(len(clip.embeds), prob).build_items(clip.embeds, clip.slots)
        torch.manual_seed(seed)
        draw = {'memory': lambda: True, 'last': lambda: False,
                'draw': lambda: float(torch.rand(())) < prob}[choice]
        official = official_items(clip.embeds, clip.slots.tolist(), draw, exist_after_bug=False)
        assert_same_items(ours, official, f'clip {seed}')
        for item in official:
            kinds[item.kind] += 1
    assert kinds['future'] > 20, kinds
    if choice == 'draw':
        assert kinds['memory'] > 100 and kinds['last'] > 100, kinds
    else:
        assert kinds['last' if choice == 'memory' else 'memory'] == 0, kinds


def test_prev_queries_losses_equal_the_official_formula():
    """Batches of random clips: both losses equal the official ones to 1e-9 (float64)."""
    batches = [CLIPS[k:k + 3] for k in range(0, len(CLIPS), 3)]
    compared = 0
    for k, clips in enumerate(batches):
        torch.manual_seed(k)
        loss = prev_queries_loss(max(len(c.embeds) for c in clips), OFFICIAL_POSITIVE_PROB)
        out = loss([c.embeds for c in clips], [c.slots for c in clips])
        torch.manual_seed(k)
        official = [item for c in clips for item in official_items(
            c.embeds, c.slots.tolist(), lambda: float(torch.rand(())) < OFFICIAL_POSITIVE_PROB,
            exist_after_bug=False)]
        reid, aux = official_losses(official)
        assert out['loss_reid'].item() == pytest.approx(reid, rel=1e-9, abs=1e-9), k
        assert out['loss_aux_reid'].item() == pytest.approx(aux, rel=1e-9, abs=1e-9), k
        compared += bool(official)
    assert compared > 100


def test_the_official_exist_after_bug_is_the_only_difference():
    """The official ``exist_after`` drops some first-appearance items; nothing else differs.

    An instance first seen at frame t >= 1 gets no item in the official code when the number of
    frames after t where it is absent equals t, even if it is present later. ctvis keeps those
    items (their future positive is valid). On clips where this never happens, the official
    items and losses are reproduced verbatim.
    """
    dropped = clean_clips = 0
    for seed, clip in enumerate(CLIPS):
        corrected = official_items(clip.embeds, clip.slots.tolist(), lambda: True, False)
        buggy = official_items(clip.embeds, clip.slots.tolist(), lambda: True, True)
        lost = {(it.frame, it.slot) for it in corrected} - {(it.frame, it.slot) for it in buggy}
        assert len(corrected) - len(buggy) == len(lost)
        for frame, slot in lost:
            column = [row[slot] for row in clip.slots.tolist()]
            assert all(q < 0 for q in column[:frame]) and any(q >= 0 for q in column[frame + 1:])
            assert sum(q < 0 for q in column[frame + 1:]) == frame
        dropped += len(lost)
        if not lost:
            clean_clips += 1
            ours = prev_queries_loss(len(clip.embeds), 1.0).build_items(clip.embeds, clip.slots)
            assert_same_items(ours, buggy, f'clip {seed}')
    assert dropped >= 10 and clean_clips >= 100, (dropped, clean_clips)


def test_exist_after_bug_example():
    """Present at frames 1 and 3 of 4: the official code makes no item at frame 1, ctvis does."""
    embeds = torch.randn(4, 3, 4, dtype=torch.float64)
    slots = torch.tensor([[-1], [0], [-1], [2]])
    official = official_items(embeds, slots.tolist(), lambda: True)
    assert [(it.frame, it.kind) for it in official] == [(3, 'memory')]
    ours = prev_queries_loss(4, 1.0).build_items(embeds, slots)
    assert len(ours) == 2
    assert torch.equal(ours[0].anchor, embeds[1, 0]) and torch.equal(ours[0].positive,
                                                                      embeds[3, 2])


def test_fusion_window_is_the_trackers():
    """ctvis fuses over the last ``max_cache`` (10) observations, as its tracker does; the
    official training code averages over every earlier one. They agree up to 11 frames."""
    rng = np.random.RandomState(0)
    embeds = torch.from_numpy(1.0 + 0.5 * rng.randn(13, 2, 4))  # positive cosines: beta > 0
    slots = torch.zeros(13, 1, dtype=torch.long)
    official = official_items(embeds, slots.tolist(), lambda: True, False)
    default = ConsistentContrastiveLoss(negatives='prev_queries', noise_prob=0.0,
                                        memory_positive_prob=1.0).build_items(embeds, slots)
    for mine, ref in zip(default, official):
        # the positive at frame t is the memory after frame t-1; only the fusion of frame 11's
        # observation differs (10 earlier ones instead of 11), so only the positive at frame 12
        same = torch.allclose(mine.positive, ref.positive, atol=1e-9)
        assert same == (ref.frame <= 11), ref.frame


# --------------------------------------------------------------------------------------------
# negatives='memory'
# --------------------------------------------------------------------------------------------
def test_memory_negatives_are_other_instances_fused_memories():
    """The negatives are the other instances' memories after t-1, then frame t-1's background.

    Slots A, B, C; 5 queries; 4 frames:
        frame 0: A q0, B q1          frame 2: A q4, C q0
        frame 1: A q2, B q3          frame 3: A q1, B q2, C q3
    B's memory after frame 1 fuses (1, 0, 0, 0) and (1, 1, 0, 0): beta = cos = 1/sqrt(2), memory
    (1, 1/sqrt(2), 0, 0), which is none of the queries.
    """
    embeds = torch.randn(4, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    embeds[0, 1] = torch.tensor([1., 0., 0., 0.])
    embeds[1, 3] = torch.tensor([1., 1., 0., 0.])
    slots = torch.tensor([[0, 1, -1], [2, 3, -1], [4, -1, 0], [1, 2, 3]])
    loss = ConsistentContrastiveLoss(negatives='memory', noise_prob=0.0, memory_positive_prob=1.0)
    items = loss.build_items(embeds, slots)
    # anchors: (1, A), (1, B), (2, A), (2, C, future positive), (3, A), (3, B), (3, C)
    assert [torch.equal(it.anchor, embeds[t, q]) for it, (t, q) in zip(
        items, [(1, 2), (1, 3), (2, 4), (2, 0), (3, 1), (3, 2), (3, 3)])] == [True] * 7
    memory_b = torch.tensor([1., 2**-0.5, 0., 0.], dtype=torch.float64)
    a0, a1, a2 = embeds[0, 0], embeds[1, 2], embeds[2, 4]
    beta = max(0.0, _cos(a0, a1))
    memory_a1 = (1 - beta) * a0 + beta * a1  # A after frames 0-1
    beta = max(0.0, (_cos(a0, a2) + _cos(a1, a2)) / 2)
    memory_a2 = (1 - beta) * memory_a1 + beta * a2  # A after frames 0-2
    expected = {
        (1, 'A'): [embeds[0, 1]] + [embeds[0, k] for k in (2, 3, 4)],  # B seen once: its query
        (1, 'B'): [embeds[0, 0]] + [embeds[0, k] for k in (2, 3, 4)],
        (2, 'A'): [memory_b] + [embeds[1, k] for k in (0, 1, 4)],  # C not in memory yet
        (2, 'C'): [memory_a1, memory_b] + [embeds[1, k] for k in (0, 1, 4)],
        # B is absent at frame 2: its memory is carried over, its raw queries are gone
        (3, 'A'): [memory_b, embeds[2, 0]] + [embeds[2, k] for k in (1, 2, 3)],
        (3, 'B'): [memory_a2, embeds[2, 0]] + [embeds[2, k] for k in (1, 2, 3)],
        (3, 'C'): [memory_a2, memory_b] + [embeds[2, k] for k in (1, 2, 3)],
    }
    assert len(items) == len(expected)
    for item, (key, vectors) in zip(items, expected.items()):
        torch.testing.assert_close(item.negatives, torch.stack(vectors), rtol=0, atol=1e-12,
                                   msg=str(key))
    # the other instance's raw query of t-1 is not a negative in this mode (it is with
    # 'prev_queries'): at frame 2, B's query of frame 1 is replaced by B's memory
    assert not any(torch.equal(n, embeds[1, 3]) for n in items[2].negatives)
    prev = ConsistentContrastiveLoss(negatives='prev_queries', noise_prob=0.0,
                                     memory_positive_prob=1.0).build_items(embeds, slots)
    assert any(torch.equal(n, embeds[1, 3]) for n in prev[2].negatives)
    # the positives do not depend on the negatives mode
    for mine, other in zip(items, prev):
        assert torch.equal(mine.positive, other.positive)
    torch.testing.assert_close(items[5].positive, memory_b, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------
# Hand examples, noise, zero loss, options
# --------------------------------------------------------------------------------------------
def _embeds(num_frames=4, num_queries=5):
    torch.manual_seed(0)
    return torch.randn(num_frames, num_queries, 8, requires_grad=True)


def test_anchor_positive_negative_choice():
    loss = ConsistentContrastiveLoss(negatives='prev_queries', noise_prob=0.0,
                                     memory_positive_prob=0.0)
    embeds = _embeds()
    slots = torch.tensor([[0, -1], [1, -1], [2, 3], [2, 4]])
    items = loss.build_items(embeds, slots)
    # frame 0 is never an anchor; slot 1 first appears at frame 2 -> future positive
    assert len(items) == 5
    first = items[0]  # frame 1, slot 0: positive = last earlier embedding (frame 0)
    assert torch.equal(first.anchor, embeds[1, 1]) and torch.equal(first.positive, embeds[0, 0])
    assert torch.equal(first.negatives, embeds[0, [1, 2, 3, 4]])  # other queries of frame t-1
    second = items[2]  # frame 2, slot 1: no earlier appearance -> first later one (frame 3)
    assert torch.equal(second.anchor, embeds[2, 3]) and torch.equal(second.positive, embeds[3, 4])
    assert torch.equal(second.negatives, embeds[1])  # absent at t-1: every query of t-1


def test_noise_pollutes_memory_only():
    slots = torch.tensor([[0], [-1], [1]])
    embeds = _embeds(3, 4)
    clean = ConsistentContrastiveLoss(noise_prob=0.0, memory_positive_prob=1.0)
    noisy = ConsistentContrastiveLoss(noise_prob=1.0, memory_positive_prob=1.0)
    clean_item, = clean.build_items(embeds, slots)
    noisy_item, = noisy.build_items(embeds, slots)
    assert torch.equal(clean_item.positive, embeds[0, 0])
    assert not torch.equal(noisy_item.positive, embeds[0, 0])
    assert torch.equal(noisy_item.anchor, embeds[2, 1])
    # before its first appearance an instance has no memory to pollute
    _, second = noisy.build_items(embeds, torch.tensor([[-1], [0], [1]]))
    assert torch.equal(second.positive, embeds[1, 0])
    # a noisy update is no observation: the raw positives skip it (latest earlier, first later)
    noisy_raw = ConsistentContrastiveLoss(noise_prob=1.0, memory_positive_prob=0.0)
    item, = noisy_raw.build_items(embeds, slots)
    assert torch.equal(item.positive, embeds[0, 0])
    items = noisy_raw.build_items(_embeds(4, 4), torch.tensor([[-1], [0], [-1], [1]]))
    assert [torch.equal(it.positive, _embeds(4, 4)[k, q]) for it, (k, q) in
            zip(items, [(3, 1), (1, 0)])] == [True, True]


def test_default_noise_and_positive_rates():
    """By default an absent instance's memory takes a random query with probability 0.05, and
    the positive is the fused memory with probability 0.5."""
    embeds = _embeds(3, 4).detach()
    # every query of frame 1 is close to the instance: any noisy update moves its memory
    embeds[1] = embeds[0, 0] + 0.3 * embeds[1]
    slots = torch.tensor([[0], [-1], [1]])
    loss = ConsistentContrastiveLoss(memory_positive_prob=1.0)
    torch.manual_seed(0)
    trials = 4000
    noisy = sum(not torch.equal(loss.build_items(embeds, slots)[0].positive, embeds[0, 0])
                for _ in range(trials))
    assert 0.035 < noisy / trials < 0.065, noisy / trials  # 0.05 +- 5 standard deviations
    default = ConsistentContrastiveLoss()
    assert default.negatives == 'memory'
    present = torch.tensor([[0], [1], [2]])  # never absent: no noise
    # the item at frame 2 has the memory of frames 0-1 or the raw embedding of frame 1
    memory = sum(not torch.equal(default.build_items(embeds, present)[1].positive, embeds[1, 1])
                 for _ in range(trials // 4))
    assert 0.4 < memory / (trials // 4) < 0.6, memory  # 0.5 +- 6 standard deviations


def test_no_items_gives_zero_loss_in_graph():
    embeds = _embeds(2, 3)
    losses = ConsistentContrastiveLoss()([embeds], [torch.tensor([[0], [-1]])])
    assert official_items(embeds.detach(), [[0], [-1]], lambda: True) == []
    assert losses['loss_reid'].item() == 0 and losses['loss_reid'].requires_grad
    assert losses['loss_aux_reid'].item() == 0
    losses['loss_reid'].backward()
    assert embeds.grad is not None


def test_default_weights_and_single_query():
    """Weights 2.0 / 3.0; with a single query there is no negative and the embedding term is 0."""
    embeds = _embeds(2, 1).detach().double()
    slots = torch.tensor([[0], [0]])
    out = ConsistentContrastiveLoss(negatives='prev_queries', noise_prob=0.0)([embeds], [slots])
    reid, aux = official_losses(official_items(embeds, slots.tolist(), lambda: True))
    assert reid == 0.0 and out['loss_reid'].item() == 0.0
    assert out['loss_aux_reid'].item() == pytest.approx(aux, rel=1e-12)
    assert aux == pytest.approx(3.0 * (1 - _cos(embeds[1, 0], embeds[0, 0]))**2, rel=1e-12)


def _one_item_losses(anchor, positive, negatives):
    """The two terms of one item, one tensor operation at a time (autograd reference)."""
    excess = negatives @ anchor - anchor @ positive
    embed = torch.logsumexp(torch.cat([excess.new_zeros(1), excess]), dim=0)
    keys = torch.cat([positive[None], negatives])
    labels = torch.zeros(len(keys), dtype=keys.dtype)
    labels[0] = 1
    return embed, ((torch.cosine_similarity(anchor[None], keys, dim=-1) - labels)**2).mean()


@pytest.mark.parametrize('scale', [1.0, 60.0])  # 60: dot products of thousands, exp overflows
def test_item_losses_side_by_side_equal_one_item_at_a_time(scale):
    """Items with 0, 1, 3 and 7 negatives: each item's terms and the gradients of their sum
    equal those computed item by item (float64)."""
    gen = torch.Generator().manual_seed(3)
    counts = [3, 0, 1, 7, 3]
    leaves = [torch.randn(2 + k, 16, generator=gen, dtype=torch.float64).mul(scale)
              .requires_grad_() for k in counts]
    items = [ContrastiveItem(v[0], v[1], v[2:]) for v in leaves]
    embed, aux = ConsistentContrastiveLoss.item_losses(items)
    (embed.sum() + aux.sum()).backward()
    grads = [v.grad.clone() for v in leaves]
    for item, v, grad, got_embed, got_aux in zip(items, leaves, grads, embed, aux):
        v.grad = None
        want_embed, want_aux = _one_item_losses(*item)
        assert torch.isfinite(want_embed) and torch.isfinite(got_embed)
        torch.testing.assert_close(got_embed, want_embed, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_aux, want_aux, rtol=1e-12, atol=1e-12)
        (want_embed + want_aux).backward()
        torch.testing.assert_close(grad, v.grad, rtol=1e-10, atol=1e-12)
    assert embed[1] == 0 and aux[1] == (1 - _cos(leaves[1][0], leaves[1][1]))**2


def test_gradients_flow_through_the_fused_memory():
    embeds = _embeds(3, 2)
    slots = torch.tensor([[0], [1], [0]])
    loss = ConsistentContrastiveLoss(negatives='prev_queries', noise_prob=0.0,
                                     memory_positive_prob=1.0)
    items = loss.build_items(embeds, slots)
    loss.item_losses(items[1:2])[0].sum().backward()  # anchor (2, 0); positive: memory of 0-1
    assert embeds.grad[0, 0].abs().sum() > 0 and embeds.grad[1, 1].abs().sum() > 0


def test_cross_clip_negatives():
    """Off by default; on, an anchor at frame t also has as negatives the queries matched to
    instances at frame t-1 of every other clip of the batch (in clip order), gradients included."""
    gen = torch.Generator().manual_seed(0)
    clips = [torch.randn(num_frames, 4, 8, generator=gen, dtype=torch.float64).requires_grad_()
             for num_frames in (3, 3, 2, 1)]
    slots = [torch.tensor([[0, 1], [2, -1], [3, 1]]),
             torch.tensor([[3], [1], [0]]),
             torch.tensor([[-1, 2], [0, 1]]),  # two frames: nothing from it at frame 2
             torch.tensor([[2]])]  # one frame: no item of its own
    options = dict(noise_prob=0.0, memory_positive_prob=1.0)
    assert ConsistentContrastiveLoss().cross_clip_negatives is False
    plain = ConsistentContrastiveLoss(**options)
    crossed = ConsistentContrastiveLoss(cross_clip_negatives=True, **options)
    extra = crossed._cross_clip_negatives(clips, slots)
    expected = [  # per clip, per frame t: the other clips' matched queries of frame t
        [torch.stack([clips[1][0, 3], clips[2][0, 2], clips[3][0, 2]]),
         torch.stack([clips[1][1, 1], clips[2][1, 0], clips[2][1, 1]]),
         torch.stack([clips[1][2, 0]])],
        [torch.stack([clips[0][0, 0], clips[0][0, 1], clips[2][0, 2], clips[3][0, 2]]),
         torch.stack([clips[0][1, 2], clips[2][1, 0], clips[2][1, 1]]),
         torch.stack([clips[0][2, 3], clips[0][2, 1]])],
        [torch.stack([clips[0][0, 0], clips[0][0, 1], clips[1][0, 3], clips[3][0, 2]]),
         torch.stack([clips[0][1, 2], clips[1][1, 1]])],
        [torch.stack([clips[0][0, 0], clips[0][0, 1], clips[1][0, 3], clips[2][0, 2]])],
    ]
    for mine, theirs in zip(extra, expected, strict=True):
        assert len(mine) == len(theirs)
        for got, want in zip(mine, theirs):
            assert torch.equal(got, want)
    reid = aux = 0.0
    num_items = 0
    for c, (embeds, clip_slots) in enumerate(zip(clips, slots)):
        base = plain.build_items(embeds, clip_slots)
        more = crossed.build_items(embeds, clip_slots, extra[c])
        assert len(base) == len(more)
        frames = [t for t in range(1, len(clip_slots)) for q in clip_slots[t].tolist() if q >= 0]
        for item, wider, t in zip(base, more, frames):
            assert torch.equal(wider.anchor, item.anchor)
            assert torch.equal(wider.positive, item.positive)
            assert torch.equal(wider.negatives, torch.cat([item.negatives, extra[c][t - 1]]))
            embed_loss, aux_loss = official_losses([OfficialItem(
                t, 0, 'memory', wider.anchor, wider.positive, wider.negatives)])
            reid, aux = reid + embed_loss / 2.0, aux + aux_loss / 3.0
            num_items += 1
    out = crossed(clips, slots)
    assert out['loss_reid'].item() == pytest.approx(2.0 * reid / num_items, rel=1e-9)
    assert out['loss_aux_reid'].item() == pytest.approx(3.0 * aux / num_items, rel=1e-9)
    assert out['loss_reid'] > plain(clips, slots)['loss_reid']
    out['loss_reid'].backward()
    # the one-frame clip's query is only ever another clip's negative
    assert clips[3].grad[0, 2].abs().sum() > 0
    clips[3].grad = None
    plain(clips, slots)['loss_reid'].backward()
    assert clips[3].grad is None


def test_bad_options():
    with pytest.raises(ValueError, match='negatives'):
        ConsistentContrastiveLoss(negatives='queries')
    with pytest.raises(ValueError, match='probabilities'):
        ConsistentContrastiveLoss(noise_prob=1.5)
    with pytest.raises(ValueError, match='probabilities'):
        ConsistentContrastiveLoss(memory_positive_prob=-0.1)


# --------------------------------------------------------------------------------------------
# From Hungarian matching to the clip slots
# --------------------------------------------------------------------------------------------
def test_slot_table_equals_the_official_assignment():
    """``clip_slot_queries`` gives the official per-frame assignment.

    Officially every frame's matcher returns (query, slot) pairs in any order over all the clip's
    slots, absent ones included; the query of slot i is the query paired with i (``rows[argsort(
    cols)]``), used only where the slot is valid. ctvis matches the present instances only and
    orders slots by instance id; given the same pairs for the present instances, the tables agree.
    """
    rng = np.random.RandomState(0)
    for _ in range(100):
        num_frames, num_queries = rng.randint(1, 6), rng.randint(1, 8)
        num_slots = rng.randint(0, num_queries + 1)
        ids = rng.choice(100, num_slots, replace=False)  # the clip's instance ids, in any order
        valid = rng.rand(num_frames, num_slots) < 0.6
        official, frame_ids, frame_queries = [], [], []
        for t in range(num_frames):
            order = rng.permutation(num_slots)  # matcher output order
            rows = rng.permutation(num_queries)[:num_slots][order]
            cols = np.arange(num_slots)[order]
            gt2query = rows[np.argsort(cols)]
            official.append([int(q) if v else -1 for q, v in zip(gt2query, valid[t])])
            present = [i for i in order if valid[t, i]]  # ctvis: present instances, any order
            frame_ids.append(torch.tensor(ids[present], dtype=torch.long))
            frame_queries.append(torch.tensor([gt2query[i] for i in present], dtype=torch.long))
        table = clip_slot_queries(frame_ids, frame_queries)
        by_id = np.argsort(ids)
        kept = [i for i in by_id if valid[:, i].any()]  # slots never present are not slots
        expected = [[row[i] for i in kept] for row in official]
        assert table.tolist() == expected


# Through the real CTVIS.loss
# Per clip, per frame: the query that holds instance 7 and instance 9
MATCH_PLAN = [
    [{7: 1, 9: 4}, {7: 3, 9: 0}, {7: 5, 9: 2}, {7: 2, 9: 5}],
    [{7: 0, 9: 5}, {7: 4, 9: 1}, {7: 1, 9: 3}, {7: 5, 9: 0}],
]
ABSENT = [{(1, 9), (2, 7)}, {(0, 7)}]  # (frame, instance id) left out of each clip


def _planted_forward(head, plan, embeds):
    """A head forward whose predictions make the Hungarian matching follow ``plan``.

    The planned query of each ground truth predicts its class and mask confidently; every other
    query predicts no object and an empty mask. The embeddings are ``embeds`` (B, Q, E).
    """
    num_stages = head.num_transformer_decoder_layers + 1

    def forward(x, batch_data_samples):
        batch, num_queries = len(batch_data_samples), head.num_queries
        size = x[0].shape[-2:]
        cls = torch.full((batch, num_queries, head.num_classes + 1), -10.)
        cls[..., -1] = 10.
        masks = torch.full((batch, num_queries) + tuple(size), -10.)
        for b, sample in enumerate(batch_data_samples):
            gt = sample.gt_instances
            gt_masks = torch.from_numpy(gt.masks.masks).float()
            for instance_id, label, mask in zip(gt.instances_ids.tolist(), gt.labels.tolist(),
                                                gt_masks):
                q = plan[b][instance_id]
                cls[b, q] = -10.
                cls[b, q, label] = 10.
                inside = F.interpolate(mask[None, None], size=size, mode='area')[0, 0] > 0.5
                masks[b, q][inside] = 10.
        return [cls] * num_stages, [masks] * num_stages, embeds, embeds

    return forward


@pytest.mark.parametrize('negatives', ['prev_queries', 'memory'])
def test_contrastive_items_use_the_hungarian_matched_queries(negatives):
    """CTVIS.loss gives the contrastive loss, per clip slot and frame, the matched query.

    The head's predictions are planted so that the Hungarian matching is known; the slots
    passed to the loss must follow it and ``loss_reid`` must equal the loss of those slots.
    Slots built from other queries (an identity switch, query 0, random ones) give another loss.
    """
    num_frames = 4
    model = build_tiny_model(negatives=negatives, noise_prob=0.0, memory_positive_prob=1.0)
    clips = [square_clip(num_frames, seed=c, absent=ABSENT[c]) for c in range(2)]
    data = model.data_preprocessor(pseudo_collate(clips), True)
    embeds = 0.2 * torch.randn(2 * num_frames, model.track_head.num_queries, 32,
                               generator=torch.Generator().manual_seed(0))
    plan = [frame for clip in MATCH_PLAN for frame in clip]
    model.track_head.forward = _planted_forward(model.track_head, plan, embeds)
    seen = {}
    contrastive_forward = model.contrastive_loss.forward

    def spy(clip_embeds, clip_slots):
        seen.update(embeds=clip_embeds, slots=clip_slots)
        return contrastive_forward(clip_embeds, clip_slots)

    model.contrastive_loss.forward = spy
    losses = model(**data, mode='loss')

    expected = [torch.tensor([[-1 if (t, i) in ABSENT[c] else MATCH_PLAN[c][t][i] for i in (7, 9)]
                              for t in range(num_frames)]) for c in range(2)]
    assert [s.tolist() for s in seen['slots']] == [s.tolist() for s in expected]
    clip_embeds = list(embeds.split(num_frames))
    assert all(torch.equal(a, b) for a, b in zip(seen['embeds'], clip_embeds))
    reference = ConsistentContrastiveLoss(negatives=negatives, noise_prob=0.0,
                                          memory_positive_prob=1.0)
    assert losses['loss_reid'].item() == pytest.approx(
        reference(clip_embeds, expected)['loss_reid'].item(), rel=1e-6)

    # the loss value alone tells wrong slot tables apart
    generator = torch.Generator().manual_seed(1)
    wrong = {
        'instances swapped from frame 2 on': [torch.cat([s[:2], s[2:].flip(1)]) for s in expected],
        'query 0': [torch.where(s >= 0, 0, -1) for s in expected],
        'random queries': [torch.where(s >= 0, torch.randint(6, s.shape, generator=generator), -1)
                           for s in expected],
    }
    for name, slots in wrong.items():
        value = reference(clip_embeds, slots)['loss_reid'].item()
        assert value != pytest.approx(losses['loss_reid'].item(), rel=1e-5), name
