# CTVIS, ResNet-50, YouTube-VIS 2019 (+ COCO pseudo-videos), 16 clips x 10 frames, 16k iterations.
# Reported (official release): 55.2 AP on YTVIS19 val.
# Initialisation: Mask2Former R50 COCO instance weights, converted with
#   python tools/model_converters/ctvis_d2_to_mmdet.py model_final_3c8ec9.pkl \
#       checkpoints/mask2former_r50_coco_ctvis.pth --config THIS_CONFIG --init
_base_ = [
    '../_base_/models/ctvis_r50.py', '../_base_/datasets/ytvis19.py',
    '../_base_/schedules/ctvis_16k.py', '../_base_/default_runtime.py'
]
load_from = 'checkpoints/mask2former_r50_coco_ctvis.pth'

# this config's submission files, in a folder of its own (the dataset's other configs write theirs)
val_evaluator = dict(outfile_prefix='./work_dirs/{{fileBasenameNoExtension}}/results')
test_evaluator = val_evaluator
