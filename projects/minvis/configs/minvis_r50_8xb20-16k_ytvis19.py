# MinVIS, ResNet-50, YouTube-VIS 2019: the CTVIS R50 recipe (configs/ctvis/
# ctvis_r50_8xb2-16k_ytvis19.py) with every training clip replaced by independent single frames
# (8 GPUs x 20 frames, the 8 x 2 clips x 10 frames of CTVIS), no re-id head, no contrastive loss,
# and MinVIS's frame-to-frame Hungarian tracker. Same data (YTVIS19 + COCO images, which become
# one augmented frame each instead of a pseudo-video), augmentation, schedule and initialisation
# (the Mask2Former R50 COCO weights converted for the CTVIS config load as they are: they have no
# re-id head).
# Not MinVIS's own recipe (32 single frames per iteration), whose released R50 checkpoint scores
# 47.3 AP on YTVIS19 val (MinVIS model zoo). Not trained here (no GPU, no data).
_base_ = ['../../../configs/ctvis/ctvis_r50_8xb2-16k_ytvis19.py']
from ctvis.utils.config_tools import update_step  # after _base_: see its docstring
custom_imports = dict(imports=['ctvis', 'projects.minvis.minvis'], allow_failed_imports=False)

frames_per_gpu = 20  # the CTVIS recipe's 2 clips x 10 frames

model = dict(
    track_head=dict(num_reid_layers=0),
    contrastive_loss=dict(loss_weight=0.0, aux_loss_weight=0.0),
    tracker=dict(_delete_=True, type='MinVISTracker', num_classes=_base_.num_classes),
    test_cfg=dict(max_per_video=10))

# the base's two training pipelines, cut to one frame
real_video_pipeline = _base_.real_video_pipeline
update_step(real_video_pipeline, 'VideoClipSample', num_frames=1)
pseudo_video_pipeline = _base_.pseudo_video_pipeline
# one rotation, crop and flip of the image
update_step(pseudo_video_pipeline, 'PseudoVideoFromImage', num_frames=1)
train_datasets = _base_.train_dataloader.dataset.datasets
train_datasets[0].pipeline = pseudo_video_pipeline
train_datasets[1].pipeline = real_video_pipeline
train_dataloader = dict(batch_size=frames_per_gpu, dataset=dict(datasets=train_datasets))

# this config's submission files, in a folder of its own (the dataset's other configs write theirs)
val_evaluator = dict(outfile_prefix='./work_dirs/{{fileBasenameNoExtension}}/results')
test_evaluator = val_evaluator
auto_scale_lr = dict(base_batch_size=8 * frames_per_gpu)
