# Runtime shared by every ctvis config: plugin import, hooks, logging, environment.
default_scope = 'mmdet'
custom_imports = dict(imports=['ctvis'], allow_failed_imports=False)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000, max_keep_ckpts=3,
                    save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='TrackVisualizationHook', draw=False))
custom_hooks = [
    dict(type='RNGStateHook'),  # generator states in checkpoints: exact resume
    dict(type='StopOnNonFiniteWeights'),  # a NaN update stops the run before it is saved
]

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))

# add dict(type='TensorboardVisBackend') for TensorBoard
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='TrackLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)

log_level = 'INFO'
load_from = None
resume = False
