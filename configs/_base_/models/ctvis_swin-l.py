# CTVIS, Swin-L backbone (ImageNet-21k, 384 px, window 12), 200 queries.
_base_ = './ctvis_r50.py'

num_queries = 200
model = dict(
    backbone=dict(
        _delete_=True,
        type='SwinTransformer',
        pretrain_img_size=384,
        embed_dims=192,
        depths=[2, 2, 18, 2],
        num_heads=[6, 12, 24, 48],
        window_size=12,
        mlp_ratio=4,
        qkv_bias=True,
        drop_path_rate=0.3,
        patch_norm=True,
        out_indices=(0, 1, 2, 3),
        with_cp=False,
        convert_weights=False,
        init_cfg=None),
    track_head=dict(in_channels=[192, 384, 768, 1536], num_queries=num_queries))
