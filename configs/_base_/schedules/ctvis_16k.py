# CTVIS schedule (spec §2.5): AdamW 1e-4, weight decay 0.05, backbone lr x0.1, gradient
# clipping 0.01, 16k iterations with steps at 6k and 12k, 16 clips per batch (8 GPUs x 2),
# fp16 mixed precision for training and evaluation (fp32 where there is no CUDA, said in the log).
max_iters = 16000

optim_wrapper = dict(
    # AmpOptimWrapper(dtype='float16', loss_scale='dynamic') on CUDA, OptimWrapper elsewhere;
    # fp32 on a GPU: --cfg-options optim_wrapper.type=OptimWrapper val_cfg.type=ValLoop
    # test_cfg.type=TestLoop
    type='AutoAmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05, eps=1e-8, betas=(0.9, 0.999)),
    # The official per-parameter rules, all applied together (ctvis.engine.optim_constructor).
    constructor='CTVISOptimWrapperConstructor',
    paramwise_cfg=dict(
        backbone_lr_mult=0.1,  # every backbone parameter, Swin's norms and tables included
        norm_decay_mult=0.0,  # BN / GN / LN, in the backbone too
        embed_decay_mult=0.0,  # nn.Embedding: the decoder's query_feat, query_embed, level_embed
        no_decay_keys=('relative_position_bias_table', 'absolute_pos_embed'),  # Swin
        # An nn.Embedding in mmdet but a plain (decayed) nn.Parameter in the official decoder.
        decayed_embeddings=('pixel_decoder.level_encoding', )),
    clip_grad=dict(max_norm=0.01, norm_type=2))  # over the whole model, after unscaling

param_scheduler = dict(
    type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[6000, 12000],
    gamma=0.1)

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=2000)
val_cfg = dict(type='AutoAmpValLoop')  # fp16 autocast on CUDA, as the official evaluation
test_cfg = dict(type='AutoAmpTestLoop')

# 16 clips per iteration in total; mmengine rescales the lr with --auto-scale-lr.
auto_scale_lr = dict(enable=False, base_batch_size=16)
