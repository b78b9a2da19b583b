# CTVIS, Swin-L (IN-21k, 384), 200 queries, YouTube-VIS 2021, 8-frame clips within +-16 frames.
# Reported: 61.2 AP on YTVIS21 val; 53.8 AP on YTVIS22 val (AP_S 61.2, AP_L 46.4).
_base_ = [
    '../_base_/models/ctvis_swin-l.py', '../_base_/datasets/ytvis21.py',
    '../_base_/schedules/ctvis_16k.py', '../_base_/default_runtime.py'
]
from ctvis.utils.config_tools import update_step  # after _base_: see its docstring
train_dataloader = _base_.train_dataloader
pseudo_videos, real_videos = train_dataloader.dataset.datasets
update_step(pseudo_videos.pipeline, 'PseudoVideoFromImage', num_frames=8)
update_step(real_videos.pipeline, 'VideoClipSample', num_frames=8, frame_range=16)
load_from = 'checkpoints/mask2former_swin-l_coco_ctvis.pth'

# this config's submission files, in a folder of its own (the dataset's other configs write theirs)
val_evaluator = dict(outfile_prefix='./work_dirs/{{fileBasenameNoExtension}}/results')
test_evaluator = val_evaluator
