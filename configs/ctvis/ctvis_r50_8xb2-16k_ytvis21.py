# CTVIS, ResNet-50, YouTube-VIS 2021 (+ COCO pseudo-videos). Reported: 50.1 AP on YTVIS21 val.
_base_ = [
    '../_base_/models/ctvis_r50.py', '../_base_/datasets/ytvis21.py',
    '../_base_/schedules/ctvis_16k.py', '../_base_/default_runtime.py'
]
load_from = 'checkpoints/mask2former_r50_coco_ctvis.pth'

# this config's submission files, in a folder of its own (the dataset's other configs write theirs)
val_evaluator = dict(outfile_prefix='./work_dirs/{{fileBasenameNoExtension}}/results')
test_evaluator = val_evaluator
