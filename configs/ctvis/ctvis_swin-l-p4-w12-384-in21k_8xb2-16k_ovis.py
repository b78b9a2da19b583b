# CTVIS, Swin-L (IN-21k, 384), 200 queries, OVIS, 6-frame clips within +-10 frames.
# Reported: 46.9 AP on OVIS val.
_base_ = [
    '../_base_/models/ctvis_swin-l.py', '../_base_/datasets/ovis.py',
    '../_base_/schedules/ctvis_16k.py', '../_base_/default_runtime.py'
]
from ctvis.utils.config_tools import update_step  # after _base_: see its docstring
num_classes = 25
model = dict(
    track_head=dict(
        num_things_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    tracker=dict(num_classes=num_classes),
    test_cfg=dict(max_per_video=num_classes))
train_cfg = dict(val_interval=4000)  # the official OVIS evaluation period (YTVIS: 2000)

train_dataloader = _base_.train_dataloader
pseudo_videos, real_videos = train_dataloader.dataset.datasets
update_step(pseudo_videos.pipeline, 'PseudoVideoFromImage', num_frames=6)
update_step(real_videos.pipeline, 'VideoClipSample', num_frames=6, frame_range=10)
load_from = 'checkpoints/mask2former_swin-l_coco_ctvis-ovis.pth'

# this config's submission files, in a folder of its own (the dataset's other configs write theirs)
val_evaluator = dict(outfile_prefix='./work_dirs/{{fileBasenameNoExtension}}/results')
test_evaluator = val_evaluator
