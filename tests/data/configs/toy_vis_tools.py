# Tiny video-instance-segmentation config for the tool tests
# (tests/test_tools/test_train_test_tools.py): a 1x1-conv per-pixel "segmenter" on synthetic 16x16
# videos, trained for a few iterations on the CPU. The model and dataset are registered by that test
# module (custom_imports); the tests point the dataset and evaluator at their temporary data with
# --cfg-options.
default_scope = 'mmdet'
custom_imports = dict(imports=['test_train_test_tools'], allow_failed_imports=False)

model = dict(type='ToolsTestPixelVIS')

train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ToolsTestVideos', data_root='', ann_file='annotations.json'))
test_dataloader = dict(
    batch_size=1,
    num_workers=0,
    # round_up=False: no padded duplicates across ranks (YTVISMetric counts each video once)
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=False),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(type='ToolsTestVideos', data_root='', ann_file='annotations.json',
                 test_mode=True))
test_evaluator = dict(type='YTVISMetric', ann_file='annotations.json')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.5, momentum=0.9))
param_scheduler = [dict(type='MultiStepLR', milestones=[3], by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=1000)
auto_scale_lr = dict(enable=False, base_batch_size=2)

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='ToolsTestRankMarker')]  # each rank reports when training is done
# nccl on purpose, as in the real configs: the tools switch to gloo where there is no CUDA.
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='nccl'))
visualizer = dict(type='TrackLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
log_processor = dict(type='LogProcessor', window_size=1, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
