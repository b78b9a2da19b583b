"""Batched Hungarian targets of CTVISHead equal mmdet's per-frame Mask2Former targets exactly."""
from unittest import mock

import pytest
import torch
from mmcv.ops import point_sample
from mmengine.structures import InstanceData

from conftest import build_tiny_model
from mmdet.models.dense_heads import Mask2FormerHead, MaskFormerHead
from mmdet.registry import TASK_UTILS
from mmdet.structures.mask import BitmapMasks

NUM_QUERIES, NUM_CLASSES = 6, 3  # the tiny model's
META = dict(img_shape=(32, 40))


def frame_inputs(gt_counts, seed=0, mask_sizes=None, ties=False):
    """Random logits (B, Q, C + 1), mask logits (B, Q, 8, 10) and ground truth of B frames.

    ``ties``: two identical queries and two identical ground-truth instances in every frame,
    so that several matchings cost exactly the same.
    """
    gen = torch.Generator().manual_seed(seed)
    num_frames = len(gt_counts)
    cls_scores = torch.randn(num_frames, NUM_QUERIES, NUM_CLASSES + 1, generator=gen)
    mask_preds = 3 * torch.randn(num_frames, NUM_QUERIES, 8, 10, generator=gen)
    gts = []
    for b, count in enumerate(gt_counts):
        size = mask_sizes[b] if mask_sizes else (32, 40)
        labels = torch.randint(NUM_CLASSES, (count, ), generator=gen)
        masks = torch.rand(count, *size, generator=gen) > 0.6
        if ties and count >= 2:
            labels[1], masks[1] = labels[0], masks[0]
        gts.append(InstanceData(labels=labels, masks=masks))
    if ties:
        cls_scores[:, 1], mask_preds[:, 1] = cls_scores[:, 0], mask_preds[:, 0]
    return cls_scores, mask_preds, gts


def mmdet_targets(head, cls_scores, mask_preds, gts):
    """mmdet's per-frame ``get_targets`` on the same head."""
    return MaskFormerHead.get_targets(head, list(cls_scores), list(mask_preds), gts,
                                      [META] * len(gts))


def mmdet_frame_costs(head, cls_score, mask_pred, gt, coords):
    """The cost matrix mmdet's HungarianAssigner builds for one frame at points ``coords``."""
    preds = InstanceData(scores=cls_score, masks=point_sample(
        mask_pred.unsqueeze(1), coords.repeat(len(mask_pred), 1, 1)).squeeze(1))
    gt_points = InstanceData(labels=gt.labels, masks=point_sample(
        gt.masks.unsqueeze(1).float(), coords.repeat(len(gt), 1, 1)).squeeze(1))
    return torch.stack([cost(preds, gt_points, META)
                        for cost in head.assigner.match_costs]).sum(0)


@pytest.fixture(scope='module')
def head():
    return build_tiny_model().track_head


CASES = {
    'mixed': dict(gt_counts=[2, 0, 5, 1]),
    'more_gt_than_queries': dict(gt_counts=[NUM_QUERIES + 3, 2]),
    'ties': dict(gt_counts=[3, 2, 4], ties=True),
    'no_gt_at_all': dict(gt_counts=[0, 0]),
    'unpadded_masks': dict(gt_counts=[2, 3], mask_sizes=[(32, 40), (24, 40)]),
}


def test_one_draw_gives_the_per_frame_draws():
    """On the CPU one (B, P, 2) draw yields mmdet's B per-frame (1, P, 2) draws."""
    torch.manual_seed(3)
    batched = torch.rand((4, 64, 2))
    torch.manual_seed(3)
    assert torch.equal(batched, torch.cat([torch.rand((1, 64, 2)) for _ in range(4)]))


@pytest.mark.parametrize('case', CASES)
def test_targets_equal_mmdet(head, case):
    cls_scores, mask_preds, gts = frame_inputs(**CASES[case])
    assert head.batched_matching_unsupported() is None
    torch.manual_seed(1)
    expected = mmdet_targets(head, cls_scores, mask_preds, gts)
    torch.manual_seed(1)
    batched = head.get_targets(list(cls_scores), list(mask_preds), gts, [META] * len(gts))
    assert batched[4] == expected[4]  # avg_factor: sum over frames of max(num_pos, 1)
    for ours, theirs in zip(batched[:4], expected[:4]):
        assert len(ours) == len(theirs) == len(gts)
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype and torch.equal(a, b)
    # the same random stream was used up: what is drawn next is the same too
    torch.manual_seed(1)
    mmdet_targets(head, cls_scores, mask_preds, gts)
    after_mmdet = torch.rand(3)
    torch.manual_seed(1)
    head.get_targets(list(cls_scores), list(mask_preds), gts, [META] * len(gts))
    assert torch.equal(torch.rand(3), after_mmdet)


def test_sampling_results_asked_for_come_from_mmdet(head):
    """Only mmdet's per-frame path builds sampling results."""
    cls_scores, mask_preds, gts = frame_inputs([2, 0, 3])
    args = (list(cls_scores), list(mask_preds), gts, [META] * 3)
    with mock.patch.object(MaskFormerHead, 'get_targets', return_value='mmdet') as mmdet:
        assert head.get_targets(*args, return_sampling_results=True) == 'mmdet'
        mmdet.assert_called_once_with(*args, True)
        assert head.get_targets(*args) != 'mmdet'


@pytest.mark.parametrize('case', CASES)
def test_matching_and_costs_equal_mmdet_at_the_same_points(head, case):
    """Costs bit for bit, and the matched / unmatched queries of mmdet's sampling results."""
    cls_scores, mask_preds, gts = frame_inputs(**CASES[case])
    coords = torch.rand((len(gts), head.num_points, 2), generator=torch.Generator().manual_seed(2))
    costs = head._matching_costs(cls_scores, mask_preds, gts, coords)
    assigned = head.hungarian_match(cls_scores, mask_preds, gts, coords)
    assert assigned.shape == (len(gts), NUM_QUERIES) and assigned.dtype == torch.long
    for b, gt in enumerate(gts):
        assert costs[b].shape == (NUM_QUERIES, len(gt))
        if len(gt):
            assert torch.equal(costs[b], mmdet_frame_costs(head, cls_scores[b], mask_preds[b], gt,
                                                           coords[b:b + 1]))
        with mock.patch('torch.rand', return_value=coords[b:b + 1]):
            *_, pos_inds, neg_inds, sampling = Mask2FormerHead._get_targets_single(
                head, cls_scores[b], mask_preds[b], gt, META)
        assert torch.equal(torch.nonzero(assigned[b] >= 0).squeeze(1), pos_inds)
        assert torch.equal(torch.nonzero(assigned[b] < 0).squeeze(1), neg_inds)
        assert torch.equal(assigned[b, pos_inds], sampling.pos_assigned_gt_inds)
        assert len(pos_inds) == min(len(gt), NUM_QUERIES)


@pytest.mark.parametrize('match_costs', [
    [dict(type='ClassificationCost', weight=1.0),
     dict(type='DiceCost', weight=3.0, pred_act=False, naive_dice=False, eps=1e-3)],
    [dict(type='DiceCost', weight=2.0, pred_act=True, naive_dice=True, eps=0.5),
     dict(type='CrossEntropyLossCost', weight=0.5, use_sigmoid=True)],
])
def test_configured_costs_are_read_from_the_assigner(match_costs):
    head = build_tiny_model().track_head
    head.assigner = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=match_costs))
    cls_scores, mask_preds, gts = frame_inputs([3, 1, 4], seed=5)
    coords = torch.rand((3, head.num_points, 2), generator=torch.Generator().manual_seed(4))
    for b, cost in enumerate(head._matching_costs(cls_scores, mask_preds, gts, coords)):
        assert torch.equal(cost, mmdet_frame_costs(head, cls_scores[b], mask_preds[b], gts[b],
                                                   coords[b:b + 1]))


def test_losses_equal_mmdet(head):
    cls_scores, mask_preds, gts = frame_inputs([2, 0, 5, 1], seed=7)
    stages = [(cls_scores + i, mask_preds - i) for i in range(3)]
    all_cls, all_masks = [s[0] for s in stages], [s[1] for s in stages]
    metas = [META] * len(gts)
    torch.manual_seed(0)
    losses = head.loss_by_feat(all_cls, all_masks, gts, metas)
    torch.manual_seed(0)
    with mock.patch.object(type(head), 'get_targets', MaskFormerHead.get_targets):
        expected = head.loss_by_feat(all_cls, all_masks, gts, metas)
    assert losses.keys() == expected.keys()
    for name in losses:
        assert torch.equal(losses[name], expected[name]), name


def per_frame_query_of_gt(head, cls_scores, mask_preds, gts):
    """The query of each ground-truth instance from mmdet's per-frame sampling results (-1 when
    unmatched), frames without ground truth skipped (no points drawn)."""
    query_of_gt = []
    for gt, cls_score, mask_pred in zip(gts, cls_scores, mask_preds):
        queries = torch.full((len(gt), ), -1, dtype=torch.long)
        if len(gt):
            sampling = head._get_targets_single(cls_score, mask_pred, gt, META)[-1]
            queries[sampling.pos_assigned_gt_inds] = sampling.pos_inds
        query_of_gt.append(queries)
    return query_of_gt


def assert_match_final_layer_is_per_frame(head, cls_scores, mask_preds, gts):
    torch.manual_seed(9)
    query_of_gt = head.match_final_layer(cls_scores, mask_preds, gts, [META] * len(gts))
    torch.manual_seed(9)
    expected = per_frame_query_of_gt(head, cls_scores, mask_preds, gts)
    assert len(query_of_gt) == len(expected)
    for queries, expected_queries in zip(query_of_gt, expected):
        assert torch.equal(queries, expected_queries)
    return query_of_gt


@pytest.mark.parametrize('case', CASES)
def test_match_final_layer_equals_per_frame_matching(head, case):
    """Random points drawn for the frames with ground truth only, as the per-frame matching."""
    query_of_gt = assert_match_final_layer_is_per_frame(head, *frame_inputs(**CASES[case]))
    if case == 'more_gt_than_queries':
        assert (query_of_gt[0] == -1).sum() == 3


def test_unsupported_matcher_falls_back_to_mmdet():
    head = build_tiny_model().track_head
    head.assigner = TASK_UTILS.build(dict(type='HungarianAssigner', match_costs=[
        dict(type='ClassificationCost', weight=2.0), dict(type='FocalLossCost', weight=1.0)]))
    assert 'FocalLossCost' in head.batched_matching_unsupported()
    cls_scores, mask_preds, gts = frame_inputs([2, 0, NUM_QUERIES + 1])
    with mock.patch.object(type(head), 'hungarian_match', side_effect=AssertionError):
        targets = head.get_targets(list(cls_scores), list(mask_preds), gts, [META] * 3)
        assert_match_final_layer_is_per_frame(head, cls_scores, mask_preds, gts)
    assert targets[4] == 2 + 1 + NUM_QUERIES
    head.assigner.match_costs[1] = TASK_UTILS.build(
        dict(type='CrossEntropyLossCost', use_sigmoid=False))
    assert 'without sigmoid' in head.batched_matching_unsupported()
    head.assigner.match_costs[1].use_sigmoid = True
    assert head.batched_matching_unsupported() is None
    head.sampler = TASK_UTILS.build(dict(type='PseudoSampler'))
    assert 'PseudoSampler' in head.batched_matching_unsupported()


def test_costs_are_float32_with_autocast_off(head):
    """As the per-frame path: the official matcher's costs are computed in float32."""
    cls_scores, mask_preds, gts = frame_inputs([2, 3], seed=11)
    seen = []
    matching_costs = head._matching_costs

    def recording(cls, masks, *args):
        costs = matching_costs(cls, masks, *args)
        seen.append((cls.dtype, masks.dtype, costs[0].dtype, torch.is_autocast_enabled('cpu')))
        return costs

    coords = torch.rand((2, head.num_points, 2))
    with mock.patch.object(head, '_matching_costs', recording), \
            torch.autocast('cpu', dtype=torch.bfloat16):
        head.hungarian_match(cls_scores.bfloat16(), mask_preds.bfloat16(), gts, coords)
    assert seen == [(torch.float32, torch.float32, torch.float32, False)]


def test_float_ground_truth_masks_give_mmdets_targets_and_losses(head):
    """preprocess_gt keeps the masks in float32 (mmdet: int64), which every consumer converts
    to anyway: the same targets and losses, bit for bit."""
    cls_scores, mask_preds, gts = frame_inputs([3, 0, 2, 4], seed=11)
    samples = [InstanceData(labels=gt.labels, masks=BitmapMasks(gt.masks.numpy(), 32, 40))
               for gt in gts]
    ours = head.preprocess_gt(samples, [None] * len(samples))
    theirs = Mask2FormerHead.preprocess_gt(head, samples, [None] * len(samples))
    for a, b in zip(ours, theirs):
        assert a.masks.dtype == torch.float32 and b.masks.dtype == torch.int64
        assert torch.equal(a.masks, b.masks.float()) and torch.equal(a.labels, b.labels)
    stages = [(cls_scores + i, mask_preds - i) for i in range(3)]
    metas = [META] * len(gts)
    results = []
    for batch in (ours, theirs):
        torch.manual_seed(0)
        results.append(head.loss_by_feat([s[0] for s in stages], [s[1] for s in stages], batch,
                                         metas))
    for name in results[0]:
        assert torch.equal(results[0][name], results[1][name]), name
