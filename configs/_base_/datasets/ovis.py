# OVIS with COCO pseudo-videos: 25 classes, 10-frame clips within +-15 frames, a [1.0, 0.75]
# pseudo/real ratio (about 57 % pseudo-videos).
_base_ = './ytvis19.py'
from ctvis.utils.config_tools import update_step  # after _base_: see its docstring

data_root = 'data/ovis/'

train_dataloader = _base_.train_dataloader
train_dataloader.sampler.ratios = [1.0, 0.75]
pseudo_videos, real_videos = train_dataloader.dataset.datasets
pseudo_videos.target = 'ovis'
real_videos.update(type='OVISDataset', data_root=data_root, ann_file='annotations/train.json',
                   data_prefix=dict(img_path='train/'))
real_videos.pop('dataset_version')
update_step(real_videos.pipeline, 'VideoClipSample', frame_range=15)

val_dataloader = _base_.val_dataloader
val_dataloader.dataset.update(type='OVISDataset', data_root=data_root,
                              ann_file='annotations/valid.json',
                              data_prefix=dict(img_path='valid/'))
val_dataloader.dataset.pop('dataset_version')
test_dataloader = dict(val_dataloader, _delete_=True)  # not merged over the base's 2019 loader
val_evaluator = _base_.val_evaluator
val_evaluator.update(ann_file=data_root + 'annotations/valid.json',
                     outfile_prefix='./work_dirs/ovis_results')
test_evaluator = val_evaluator
