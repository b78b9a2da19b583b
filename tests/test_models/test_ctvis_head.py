"""CTVISHead decoding: the training forward is mmdet's (its mask projection folded into the
queries), the inference path its final stage."""
import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmengine.registry import init_default_scope

from conftest import build_tiny_model, tiny_model_cfg
from ctvis.models import ctvis_head
from mmcv.cnn import Conv2d as MMCVConv2d
from mmdet.models.dense_heads import Mask2FormerHead
from mmdet.models.layers import MSDeformAttnPixelDecoder
from mmdet.registry import MODELS


@pytest.fixture(scope='module')
def eval_model():
    model = build_tiny_model(num_queries=8).eval()
    with torch.no_grad():  # larger mask embeddings: attention masks with both values everywhere
        model.track_head.mask_embed[-1].weight.mul_(30)
    return model


def features(model, seed=0, size=(72, 104), batch=2):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return model.backbone(torch.randn(batch, 3, *size, generator=generator))


@pytest.mark.parametrize('seed', [0, 1])
def test_forward_equals_mmdet_mask2former(eval_model, seed, monkeypatch):
    """Bit for bit with the mask projection applied to the features (mmdet's order); to float
    rounding with it folded into the queries (ctvis' default)."""
    head = eval_model.track_head
    feats = features(eval_model, seed)
    with torch.no_grad():
        ref_cls, ref_mask = Mask2FormerHead.forward(head, feats, [])
        folded = head(feats, [])
        monkeypatch.setattr(ctvis_head, 'foldable', lambda projection: False)
        projected = head(feats, [])
    assert len(folded[0]) == len(ref_cls) == head.num_transformer_decoder_layers + 1
    for ours, ref in zip(projected[0] + projected[1], ref_cls + ref_mask):
        assert torch.equal(ours, ref)
    for ours, ref in zip(folded[0] + folded[1], ref_cls + ref_mask):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    assert not torch.equal(folded[1][-1], ref_mask[-1])  # the fold did run


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('with_projection', [False, True])
def test_mask_logits_equal_the_einsum_forward_and_backward(channels_last, with_projection):
    generator = torch.Generator().manual_seed(0)
    embed = torch.randn(2, 5, 8, generator=generator, dtype=torch.float64, requires_grad=True)
    feats = torch.randn(2, 6 if with_projection else 8, 7, 9, generator=generator,
                        dtype=torch.float64)
    if channels_last:
        feats = feats.contiguous(memory_format=torch.channels_last)
    feats.requires_grad_()
    projection = torch.nn.Conv2d(6, 8, 1).double() if with_projection else None
    ours = ctvis_head.mask_logits(embed, feats, projection)
    theirs = torch.einsum('bqc,bchw->bqhw', embed,
                          projection(feats) if with_projection else feats)
    torch.testing.assert_close(ours, theirs)
    grad = torch.randn(ours.shape, generator=generator, dtype=torch.float64)
    inputs = (embed, feats) + (tuple(projection.parameters()) if with_projection else ())
    our_grads = torch.autograd.grad(ours, inputs, grad)
    for a, b in zip(our_grads, torch.autograd.grad(theirs, inputs, grad)):
        torch.testing.assert_close(a, b)
    # the features' gradient keeps their layout (no copy back to channels-last)
    assert our_grads[1].is_contiguous(memory_format=torch.channels_last) == channels_last
    assert torch.autograd.gradcheck(ctvis_head._MaskProduct.apply,
                                    (embed[:1, :2, :3].detach().requires_grad_(),
                                     torch.randn(1, 3, 2, 3, dtype=torch.float64,
                                                 requires_grad=True)))


def test_mask_logits_under_autocast_keep_the_inputs_dtypes_in_their_gradients():
    embed = torch.randn(2, 5, 8, requires_grad=True)
    feats = torch.randn(2, 6, 4, 5).contiguous(memory_format=torch.channels_last)
    feats.requires_grad_()
    projection = torch.nn.Conv2d(6, 8, 1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        logits = ctvis_head.mask_logits(embed, feats, projection)
    assert logits.dtype == torch.bfloat16
    logits.float().square().sum().backward()
    assert embed.grad.dtype == feats.grad.dtype == projection.weight.grad.dtype == torch.float32
    reference = torch.einsum('bqc,bchw->bqhw', embed, projection(feats))
    torch.testing.assert_close(logits.float(), reference, atol=0.1, rtol=0.02)


class _ScaledConv(torch.nn.Conv2d):
    def forward(self, x):
        return 2 * super().forward(x)


@pytest.mark.parametrize('projection, expected', [
    (torch.nn.Conv2d(4, 6, 1), True),
    (MMCVConv2d(4, 6, 1), True),  # what mmdet's pixel decoder builds
    (torch.nn.Conv2d(4, 6, 3, padding=1), False),
    (torch.nn.Conv2d(4, 6, 1, stride=2), False),
    (torch.nn.Conv2d(4, 6, 1, padding=1), False),
    (torch.nn.Conv2d(4, 6, 1, dilation=2), False),
    (torch.nn.Conv2d(4, 6, 1, groups=2), False),
    (_ScaledConv(4, 6, 1), False),  # a forward of its own
    (torch.nn.Sequential(torch.nn.Conv2d(4, 6, 1)), False),
    (None, False),
])
def test_only_a_plain_1x1_projection_is_folded(projection, expected):
    assert ctvis_head.foldable(projection) is expected


def test_ctvis_pixel_decoder_leaves_the_projection_to_the_head_any_other_applies_it(eval_model):
    head = copy.deepcopy(eval_model.track_head)
    feats = features(eval_model, 4)
    with torch.no_grad():
        unprojected, _, projection = head._pixel_features(feats)
        assert projection is head.pixel_decoder.mask_feature
        assert torch.equal(projection(unprojected), head.pixel_decoder(feats)[0])
        head.pixel_decoder.__class__ = MSDeformAttnPixelDecoder
        mask_features, _, projection = head._pixel_features(feats)
        assert projection is None
        expected, _ = eval_model.track_head.pixel_decoder(feats)
    torch.testing.assert_close(mask_features, expected)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_predict_final_equals_forward_final_stage(eval_model, seed):
    head = eval_model.track_head
    feats = features(eval_model, seed, size=(56 + 8 * seed, 88))
    with torch.no_grad():
        cls_list, mask_list, embeds, _ = head(feats, [])
        cls, mask, final_embeds = head.predict_final(feats)
    assert torch.allclose(cls, cls_list[-1], atol=1e-5)
    assert torch.allclose(mask, mask_list[-1], atol=1e-4)
    assert torch.allclose(final_embeds, embeds, atol=1e-5)
    assert (mask > 0).eq(mask_list[-1] > 0).float().mean() > 0.999


def test_attention_mask_thresholds_probability_half_and_frees_fully_hidden_queries(eval_model):
    head = eval_model.track_head
    logits = torch.tensor([[[[-1.0, 0.0], [2.0, -3.0]],     # sigmoid(0) = 0.5 is attended
                            [[-1.0, -2.0], [-0.5, -4.0]]]])  # hides everything
    mask = head._attention_mask(logits)
    assert mask.shape == (head.num_heads, 2, 4) and mask.dtype == torch.bool
    assert mask[:, 0].tolist() == [[True, False, False, True]] * head.num_heads
    assert not mask[:, 1].any()  # a query hiding every pixel attends everywhere
    # the smallest negative logits whose probability rounds to 0.5 are attended, as in mmdet
    tiny = torch.tensor([[[[-1e-9, -1.0]]]])
    assert head._attention_mask(tiny)[0, 0].tolist() == [False, True]
    # one mask shared by the heads (the fused attention's form): the same values
    shared = head._attention_mask(logits, per_head=False)
    assert shared.shape == (1, 1, 2, 4)
    assert torch.equal(shared.expand(1, head.num_heads, 2, 4).reshape(-1, 2, 4), mask)


def test_resizing_commutes_with_the_mask_product():
    generator = torch.Generator().manual_seed(0)
    embed = torch.randn(1, 5, 16, generator=generator, dtype=torch.float64)
    feats = torch.randn(1, 16, 40, 56, generator=generator, dtype=torch.float64)
    full = F.interpolate(torch.einsum('bqc,bchw->bqhw', embed, feats), (9, 13), mode='bilinear',
                         align_corners=False)
    small = torch.einsum('bqc,bchw->bqhw', embed,
                         F.interpolate(feats, (9, 13), mode='bilinear', align_corners=False))
    assert torch.allclose(full, small, atol=1e-12)


def test_predict_final_with_mmcvs_attention_modules(eval_model):
    """Decoder layers left as mmcv's MultiheadAttention get per-head masks (no shared ones)."""
    head = copy.deepcopy(eval_model.track_head)
    for layer in head.transformer_decoder.layers:
        layer.cross_attn.__class__ = MultiheadAttention
    feats = features(eval_model, 3)
    with torch.no_grad():
        cls, mask, embeds = head.predict_final(feats)
        expected = eval_model.track_head.predict_final(feats)
    for ours, theirs in zip((cls, mask, embeds), expected):
        torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


def test_a_misspelled_train_cfg_key_is_refused():
    """mmdet's head reads its train_cfg keys with defaults: num_point=... left 12544 points."""
    from mmengine.registry import init_default_scope

    from conftest import tiny_model_cfg
    from mmdet.registry import MODELS
    head = tiny_model_cfg().track_head
    head.train_cfg['num_point'] = 64
    init_default_scope('mmdet')
    with pytest.raises(ValueError, match=r"CTVISHead: train_cfg has unknown keys \['num_point'\]; "
                       'it takes assigner, sampler, num_points'):
        MODELS.build(head)


@pytest.fixture(scope='module')
def prior_model():
    init_default_scope('mmdet')
    torch.manual_seed(0)
    cfg = tiny_model_cfg(num_queries=8)
    cfg.track_head.position_prior = True
    model = MODELS.build(cfg)
    model.init_weights()
    with torch.no_grad():
        model.track_head.mask_embed[-1].weight.mul_(30)
    return model.eval()


def test_position_prior_centres_on_the_previous_mask_and_scales_with_sigma(prior_model):
    """-d^2 / (2 sigma^2) around the centroid of the previous mask's pixels above probability
    0.5 (weighted by the excess), sigma from the query; the frame's centre for a mask with none."""
    head = prior_model.track_head
    with torch.no_grad():
        head.prior_scale.weight.zero_()
        head.prior_scale.bias.fill_(float(np.log(0.25)))
    masks = torch.full((1, 2, 8, 8), -10.0)
    masks[0, 0, 2:4, 4:6] = 10.0  # query 0: a 2x2 blob, centre (x, y) = (5 / 8, 3 / 8)
    masks[0, 1] = 0.0  # query 1: probability exactly 0.5 everywhere: no pixel counts
    queries = torch.randn(1, 2, head.decoder_embed_dims)
    bias = head.position_bias(queries, masks)
    coords = (torch.arange(8) + 0.5) / 8
    for q, (cx, cy) in enumerate([(0.625, 0.375), (0.5, 0.5)]):
        expected = -((coords[:, None] - cy) ** 2 + (coords[None] - cx) ** 2) / (2 * 0.25 ** 2)
        assert torch.allclose(bias[0, q], expected, atol=1e-3)  # the 1e-6 floor
    assert bias[0, 0, 2:4, 4:6].max() > -0.1 and bias[0, 0].min() < -4
    masks[0, 1, 6, 1] = 0.1  # one pixel just above probability 0.5 moves the centre to it
    bias = head.position_bias(queries, masks)
    assert bias[0, 1].argmax() == 6 * 8 + 1


def test_position_prior_starts_at_stage_1_trains_sigma_and_inference_matches_training(prior_model):
    head = prior_model.track_head
    feats = features(prior_model, 0, size=(56, 88))
    cls_list, mask_list, embeds, _ = head(feats, [])
    with torch.no_grad():  # stage 0 has no prior: the product alone, as mmdet's head
        plain = copy.deepcopy(head)
        plain.prior_scale = None
        plain_masks = plain(feats, [])[1]
        assert torch.equal(plain_masks[0], mask_list[0])
        assert not torch.allclose(plain_masks[-1], mask_list[-1])
        cls, mask, final_embeds = head.predict_final(feats)
    assert torch.allclose(cls, cls_list[-1], atol=1e-5)
    assert torch.allclose(mask, mask_list[-1], atol=1e-4)
    assert torch.allclose(final_embeds, embeds, atol=1e-5)
    mask_list[-1].sum().backward()
    assert head.prior_scale.weight.grad.abs().sum() > 0


def test_position_prior_refuses_a_scale_that_is_not_positive():
    cfg = tiny_model_cfg()
    cfg.track_head.update(position_prior=True, prior_sigma=0.0)
    with pytest.raises(ValueError, match='prior_sigma must be > 0, got 0.0'):
        MODELS.build(cfg)


def test_query_dropout_leaves_a_random_subset_of_queries_out_of_each_training_frame():
    """Each frame in training decodes its own random subset (p * Q left out) of the
    learned queries, so an instance is held by different queries within a clip; inference keeps
    them all."""
    cfg = tiny_model_cfg(num_queries=8)
    cfg.track_head.query_dropout = 0.3  # round(2.4) = 2 of 8 left out
    init_default_scope('mmdet')
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    head = model.track_head
    feats = features(model, 0, size=(56, 88), batch=6)
    with torch.no_grad():
        model.eval()
        all_cls = head(feats, [])[0][0]  # stage 0: the learned queries alone
        model.train()
        torch.manual_seed(1)
        cls_list, mask_list, embeds, queries = head(feats, [])
    assert all_cls.shape[:2] == (6, 8)
    assert cls_list[-1].shape[:2] == mask_list[-1].shape[:2] == embeds.shape[:2] == (6, 6)
    kept = []
    for b in range(6):  # every kept stage-0 row is one learned query's, each at most once
        distances = (cls_list[0][b, :, None] - all_cls[b, None]).abs().amax(-1)
        assert torch.all(distances.min(1).values < 1e-5)
        rows = distances.argmin(1)
        assert len(set(rows.tolist())) == 6 and torch.equal(rows, rows.sort()[0])
        kept.append(tuple(rows.tolist()))
    assert len(set(kept)) > 1  # frames draw their own subsets
    cfg.track_head.query_dropout = 0.0
    torch.manual_seed(1)
    plain = MODELS.build(cfg).train()
    assert plain.track_head(feats, [])[0][-1].shape[1] == 8


@pytest.mark.parametrize('rate, num_queries, dropped', [
    (0.25, 10, 3), (0.24, 10, 2), (0.05, 10, 1), (0.04, 10, 0), (0.5, 3, 2)])
def test_query_dropout_rounds_half_up(rate, num_queries, dropped):
    cfg = tiny_model_cfg(num_queries=num_queries)
    cfg.track_head.query_dropout = rate
    init_default_scope('mmdet')
    assert MODELS.build(cfg).track_head.num_dropped_queries == dropped


@pytest.mark.parametrize('rate, num_queries, message', [
    (-0.1, 6, r'query_dropout must be in \[0, 1\), got -0.1'),
    (1.0, 6, r'query_dropout must be in \[0, 1\), got 1.0'),
    (0.5, 1, 'query_dropout=0.5 leaves no query of 1 in a training frame')])
def test_query_dropout_that_leaves_no_query_is_refused(rate, num_queries, message):
    cfg = tiny_model_cfg(num_queries=num_queries)
    cfg.track_head.query_dropout = rate
    init_default_scope('mmdet')
    with pytest.raises(ValueError, match=message):
        MODELS.build(cfg)


def test_the_reid_mlp_is_the_officials_without_an_output_activation():
    """Linear layers with ReLU between and none after the last: the tracker's raw dot products
    need embeddings of either sign (a ReLU at the end made every product non-negative)."""
    from ctvis.models.ctvis_head import build_mlp
    types = [type(m).__name__ for m in build_mlp(8, 3)]
    assert types == ['Linear', 'ReLU', 'Linear', 'ReLU', 'Linear']
    assert type(build_mlp(8, 0)).__name__ == 'Identity'
    torch.manual_seed(0)
    assert (build_mlp(8, 3)(torch.randn(64, 8)) < 0).any()
