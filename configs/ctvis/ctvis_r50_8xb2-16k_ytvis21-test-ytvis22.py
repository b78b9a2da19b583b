# The YTVIS21 R50 model (ctvis_r50_8xb2-16k_ytvis21.py, same bases and weights) evaluated on
# YouTube-VIS 2022 val (the 2021 videos plus long videos): results.json / results.zip for the
# evaluation server, which scores short and long videos apart.
# Reported: AP 44.9 (AP_S 50.3 short videos, AP_L 39.4 long videos).
# With ground truth of your own: --cfg-options test_evaluator.format_only=False
#   +test_evaluator.long_video_ids=data/ytvis_2022/long_video_ids.json (AP_short / AP_long).
_base_ = [
    '../_base_/models/ctvis_r50.py', '../_base_/datasets/ytvis21.py',
    '../_base_/schedules/ctvis_16k.py', '../_base_/default_runtime.py'
]
load_from = 'checkpoints/mask2former_r50_coco_ctvis.pth'

data_root = 'data/ytvis_2022/'
test_dataloader = dict(
    dataset=dict(dataset_version='2022', data_root=data_root, ann_file='valid.json',
                 data_prefix=dict(img_path='valid/JPEGImages/')))
# this config's submission files, in a folder of its own (YTVIS21 validations in training apart)
val_evaluator = dict(outfile_prefix='./work_dirs/{{fileBasenameNoExtension}}/ytvis21_results')
test_evaluator = dict(ann_file=data_root + 'valid.json',
                      outfile_prefix='./work_dirs/{{fileBasenameNoExtension}}/results')
