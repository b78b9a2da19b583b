# YouTube-VIS 2019 with COCO pseudo-videos (spec §2.2, §3, §5): joint training on real clips and
# pseudo-videos made from COCO images, 40 % pseudo ([1.0, 1.5] ratio); whole-video evaluation.
data_root = 'data/ytvis_2019/'
coco_root = 'data/coco/'
dataset_type = 'YTVISDataset'
dataset_version = '2019'
pseudo_target = 'ytvis19'
dataset_ratios = [1.0, 1.5]  # (COCO pseudo-videos, real videos)
num_frames = 10  # frames per training clip
frame_range = 20  # frames are drawn within +-frame_range of a reference frame
train_scales = [(768, s) for s in (320, 352, 392, 416, 448, 480, 512, 544, 576, 608, 640)]
test_scale = (1333, 480)
backend_args = None

real_video_pipeline = [
    dict(type='VideoClipSample', num_frames=num_frames, frame_range=frame_range),
    dict(
        type='TransformBroadcaster',
        share_random_params=True,  # one crop window, scale and flip for the whole clip
        transforms=[
            dict(type='LoadImageFromFile', backend_args=backend_args),
            dict(type='LoadTrackAnnotations', with_mask=True),
            dict(
                type='RandomApply',
                prob=0.5,
                transforms=dict(
                    type='RandomCrop',
                    crop_type='absolute_range',
                    crop_size=(384, 600),
                    allow_negative_crop=True,
                    recompute_bbox=True)),
            # Pillow's bilinear resize (antialiased), as the official training and our test
            dict(type='RandomChoiceResize', scales=train_scales, keep_ratio=True,
                 backend='pillow'),
            dict(type='RandomFlip', prob=0.5),
            dict(type='DropEmptyMaskInstances'),
        ]),
    dict(type='PackTrackInputs')
]
pseudo_video_pipeline = [
    dict(type='VideoClipSample', num_frames=1, frame_range=1),
    dict(
        type='TransformBroadcaster',
        transforms=[
            dict(type='LoadImageFromFile', backend_args=backend_args),
            dict(type='LoadTrackAnnotations', with_mask=True),
        ]),
    dict(type='PseudoVideoFromImage', num_frames=num_frames),  # rotation, moving crop, flip
    dict(type='PackTrackInputs')
]
test_pipeline = [
    dict(
        type='TransformBroadcaster',
        transforms=[
            dict(type='LoadImageFromFile', backend_args=backend_args),
            # Pillow's bilinear resize, as the official pre-processing (cv2's differs slightly)
            dict(type='Resize', scale=test_scale, keep_ratio=True, backend='pillow'),
        ]),
    dict(type='PackTrackInputs')
]

train_dataloader = dict(
    batch_size=2,  # clips per GPU; 8 GPUs x 2 = 16 clips per iteration
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DatasetRatioSampler', ratios=dataset_ratios),
    # each batch from one source and of one orientation, as the official joint loader
    batch_sampler=dict(type='SourceAspectRatioBatchSampler'),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(
                type='CocoPseudoVideoDataset',
                target=pseudo_target,
                data_root=coco_root,
                ann_file='annotations/instances_train2017.json',
                data_prefix=dict(img_path='train2017/'),
                pipeline=pseudo_video_pipeline),
            dict(
                type=dataset_type,
                dataset_version=dataset_version,
                data_root=data_root,
                ann_file='train.json',
                data_prefix=dict(img_path='train/JPEGImages/'),
                pipeline=real_video_pipeline),
        ]))
val_dataloader = dict(
    batch_size=1,  # one frame per step: the model is online
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='TrackImgSampler'),  # whole videos per rank, frames in order
    dataset=dict(
        type=dataset_type,
        dataset_version=dataset_version,
        data_root=data_root,
        ann_file='valid.json',
        data_prefix=dict(img_path='valid/JPEGImages/'),
        test_mode=True,
        pipeline=test_pipeline))
test_dataloader = val_dataloader

# The official validation sets have no public masks: write the submission files.
val_evaluator = dict(
    type='YTVISMetric',
    ann_file=data_root + 'valid.json',
    format_only=True,
    outfile_prefix='./work_dirs/ytvis19_results')
test_evaluator = val_evaluator
