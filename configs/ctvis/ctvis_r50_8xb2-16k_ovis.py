# CTVIS, ResNet-50, OVIS (+ COCO pseudo-videos), 10-frame clips within +-15 frames.
# Reported: 35.5 AP on OVIS val.
_base_ = [
    '../_base_/models/ctvis_r50.py', '../_base_/datasets/ovis.py',
    '../_base_/schedules/ctvis_16k.py', '../_base_/default_runtime.py'
]
num_classes = 25
model = dict(
    track_head=dict(
        num_things_classes=num_classes,
        loss_cls=dict(class_weight=[1.0] * num_classes + [0.1])),
    tracker=dict(num_classes=num_classes),
    test_cfg=dict(max_per_video=num_classes))
train_cfg = dict(val_interval=4000)  # the official OVIS evaluation period (YTVIS: 2000)
load_from = 'checkpoints/mask2former_r50_coco_ctvis-ovis.pth'

# this config's submission files, in a folder of its own (the dataset's other configs write theirs)
val_evaluator = dict(outfile_prefix='./work_dirs/{{fileBasenameNoExtension}}/results')
test_evaluator = val_evaluator
