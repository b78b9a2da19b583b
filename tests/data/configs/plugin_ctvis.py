# A config of "another mm* project": only mmdet bases, ctvis brought in by custom_imports.
_base_ = ['mmdet::_base_/default_runtime.py']
custom_imports = dict(imports=['ctvis'], allow_failed_imports=False)

model = dict(
    type='CTVIS',
    data_preprocessor=dict(type='TrackDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1],
                           bgr_to_rgb=True, pad_size_divisor=32, pad_mask=True),
    backbone=dict(type='ResNet', depth=18, base_channels=16, out_indices=(0, 1, 2, 3)),
    track_head=dict(
        type='CTVISHead',
        in_channels=[16, 32, 64, 128],
        strides=[4, 8, 16, 32],
        feat_channels=32,
        out_channels=32,
        num_things_classes=2,
        num_stuff_classes=0,
        num_queries=4,
        pixel_decoder=dict(
            type='MSDeformAttnPixelDecoder',
            encoder=dict(
                num_layers=1,
                layer_cfg=dict(
                    self_attn_cfg=dict(embed_dims=32, num_heads=2, num_levels=3, num_points=2,
                                       batch_first=True),
                    ffn_cfg=dict(embed_dims=32, feedforward_channels=64))),
            positional_encoding=dict(num_feats=16, normalize=True)),
        positional_encoding=dict(num_feats=16, normalize=True),
        transformer_decoder=dict(
            num_layers=1,
            return_intermediate=True,
            layer_cfg=dict(
                self_attn_cfg=dict(embed_dims=32, num_heads=2, batch_first=True),
                cross_attn_cfg=dict(embed_dims=32, num_heads=2, batch_first=True),
                ffn_cfg=dict(embed_dims=32, feedforward_channels=64))),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=2.0,
                      class_weight=[1.0, 1.0, 0.1]),
        loss_mask=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=5.0),
        loss_dice=dict(type='DiceLoss', use_sigmoid=True, activate=True, naive_dice=True,
                       eps=1.0, loss_weight=5.0)),
    contrastive_loss=dict(type='ConsistentContrastiveLoss'),
    tracker=dict(type='CTVISTracker', num_classes=2))
