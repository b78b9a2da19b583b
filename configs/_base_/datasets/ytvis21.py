# YouTube-VIS 2021 with COCO pseudo-videos: as YTVIS19, with the 2021 classes and a [1.0, 0.8]
# pseudo/real ratio (about 56 % pseudo-videos).
_base_ = './ytvis19.py'

data_root = 'data/ytvis_2021/'

train_dataloader = _base_.train_dataloader
train_dataloader.sampler.ratios = [1.0, 0.8]
pseudo_videos, real_videos = train_dataloader.dataset.datasets
pseudo_videos.target = 'ytvis21'
real_videos.update(dataset_version='2021', data_root=data_root)

val_dataloader = _base_.val_dataloader
val_dataloader.dataset.update(dataset_version='2021', data_root=data_root)
test_dataloader = val_dataloader
val_evaluator = _base_.val_evaluator
val_evaluator.update(ann_file=data_root + 'valid.json',
                     outfile_prefix='./work_dirs/ytvis21_results')
test_evaluator = val_evaluator
