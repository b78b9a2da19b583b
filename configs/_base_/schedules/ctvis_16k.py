# CTVIS schedule (spec §2.5): AdamW 1e-4, weight decay 0.05, backbone lr x0.1, gradient
# clipping 0.01, 16k iterations with steps at 6k and 12k, 16 clips per batch (8 GPUs x 2).
max_iters = 16000

optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=0.1, decay_mult=1.0),
            'query_embed': dict(lr_mult=1.0, decay_mult=0.0),
            'query_feat': dict(lr_mult=1.0, decay_mult=0.0),
            'level_embed': dict(lr_mult=1.0, decay_mult=0.0),
            'level_encoding': dict(lr_mult=1.0, decay_mult=0.0),
            'relative_position_bias_table': dict(decay_mult=0.0),
            'absolute_pos_embed': dict(decay_mult=0.0),
        },
        norm_decay_mult=0.0),
    clip_grad=dict(max_norm=0.01, norm_type=2))

param_scheduler = dict(
    type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[6000, 12000],
    gamma=0.1)

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# 16 clips per iteration in total; mmengine rescales the lr with --auto-scale-lr.
auto_scale_lr = dict(enable=False, base_batch_size=16)
