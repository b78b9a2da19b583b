# CTVIS, ResNet-50 backbone, 100 queries (spec §1, §2.3, §2.4, §4.2).
num_classes = 40
num_queries = 100

model = dict(
    type='CTVIS',
    data_preprocessor=dict(
        type='CTVISDataPreprocessor',  # mmdet's TrackDataPreprocessor, no copies on the CPU
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
        pad_mask=True),
    backbone=dict(
        type='FusedResNet',  # mmdet's ResNet; conv + BN + ReLU fused in CPU inference
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=False),  # frozen BN, as detectron2's FrozenBN
        norm_eval=True,
        style='pytorch',
        init_cfg=None),
    track_head=dict(
        type='CTVISHead',
        in_channels=[256, 512, 1024, 2048],
        strides=[4, 8, 16, 32],
        feat_channels=256,
        out_channels=256,
        num_things_classes=num_classes,
        num_stuff_classes=0,
        num_queries=num_queries,
        num_transformer_feat_level=3,
        num_reid_layers=3,
        pixel_decoder=dict(
            type='FusedMSDeformAttnPixelDecoder',  # mmdet's, with ctvis' CPU kernel
            num_outs=3,
            norm_cfg=dict(type='GN', num_groups=32),
            act_cfg=dict(type='ReLU'),
            encoder=dict(
                num_layers=6,
                layer_cfg=dict(
                    self_attn_cfg=dict(
                        embed_dims=256, num_heads=8, num_levels=3, num_points=4,
                        dropout=0.0, batch_first=True),
                    ffn_cfg=dict(
                        embed_dims=256, feedforward_channels=1024, num_fcs=2,
                        ffn_drop=0.0, act_cfg=dict(type='ReLU', inplace=True)))),
            positional_encoding=dict(num_feats=128, normalize=True)),
        enforce_decoder_input_project=False,
        positional_encoding=dict(num_feats=128, normalize=True),
        transformer_decoder=dict(
            return_intermediate=True,
            num_layers=9,
            layer_cfg=dict(
                self_attn_cfg=dict(
                    embed_dims=256, num_heads=8, attn_drop=0.0, proj_drop=0.0, batch_first=True),
                cross_attn_cfg=dict(
                    embed_dims=256, num_heads=8, attn_drop=0.0, proj_drop=0.0, batch_first=True),
                ffn_cfg=dict(
                    embed_dims=256, feedforward_channels=2048, num_fcs=2, ffn_drop=0.0,
                    act_cfg=dict(type='ReLU', inplace=True))),
            init_cfg=None),
        loss_cls=dict(
            type='CrossEntropyLoss',
            use_sigmoid=False,
            loss_weight=2.0,
            reduction='mean',
            class_weight=[1.0] * num_classes + [0.1]),
        loss_mask=dict(
            type='CrossEntropyLoss', use_sigmoid=True, reduction='mean', loss_weight=5.0),
        loss_dice=dict(
            type='DiceLoss', use_sigmoid=True, activate=True, reduction='mean',
            naive_dice=True, eps=1.0, loss_weight=5.0),
        train_cfg=dict(
            num_points=12544,
            oversample_ratio=3.0,
            importance_sample_ratio=0.75,
            assigner=dict(
                type='HungarianAssigner',
                match_costs=[
                    dict(type='ClassificationCost', weight=2.0),
                    dict(type='CrossEntropyLossCost', weight=5.0, use_sigmoid=True),
                    dict(type='DiceCost', weight=5.0, pred_act=True, eps=1.0)
                ]),
            sampler=dict(type='MaskPseudoSampler'))),
    contrastive_loss=dict(
        type='ConsistentContrastiveLoss',
        # The paper's items; the released code's are negatives='prev_queries', noise_prob=0.
        # On the synthetic sets neither is measurably better (docs/ablation.md), so the paper's stay
        negatives='memory',
        noise_prob=0.05,
        memory_positive_prob=0.5,
        max_cache=10,
        loss_weight=2.0,
        aux_loss_weight=3.0),
    tracker=dict(
        type='CTVISTracker',
        num_classes=num_classes,
        score_thr=0.01,
        init_score_thr=0.01,
        mask_nms_thr=0.6,
        match_score_thr=0.3,
        match_metric='bisoftmax',
        frame_weight=True,
        max_cache=10,
        num_dead_frames=20,
        noise_frame_num=8,
        none_frame_num=2,
        suppress_frame_num=3),
    test_cfg=dict(max_per_video=num_classes, chunk_size=5),
    init_cfg=None)
