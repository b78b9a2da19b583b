# MinVIS on the built-in toy dataset, on a CPU: the CTVIS quickstart recipe
# (configs/ctvis/ctvis_quickstart.py) trained on single frames, without re-id head or contrastive
# loss, tracked by MinVIS's frame-to-frame Hungarian matching of the query embeddings.
#   python tools/misc/make_toy_vis.py data/toy_vis --videos 120 --frames 20 --val-videos 12
#   python tools/train.py projects/minvis/configs/minvis_quickstart.py
# Same detector, data, augmentation, schedule and frames per iteration as the CTVIS quickstart:
# each 5-frame clip becomes 5 independent frames (4 clips x 5 frames -> 20 single frames).
_base_ = ['../../../configs/ctvis/ctvis_quickstart.py']
from ctvis.utils.config_tools import update_step  # after _base_: see its docstring
custom_imports = dict(imports=['ctvis', 'projects.minvis.minvis'], allow_failed_imports=False)

model = dict(
    # no re-id MLP: the tracker matches the decoder's normalised query features, as MinVIS does;
    # every query in every training frame (MinVIS matches the queries frame to frame, and the
    # quickstart's query dropout is not in MinVIS)
    track_head=dict(num_reid_layers=0, query_dropout=0.0),
    # a 1-frame clip yields no contrastive item; zero weights keep it off for longer clips too
    contrastive_loss=dict(loss_weight=0.0, aux_loss_weight=0.0),
    tracker=dict(_delete_=True, type='MinVISTracker', num_classes=_base_.num_classes),
    test_cfg=dict(max_per_video=10))  # MinVIS keeps the top 10 (query, class) pairs per video

train_pipeline = _base_.train_pipeline
update_step(train_pipeline, 'VideoClipSample', num_frames=1)  # one frame of a random video
train_dataloader = dict(
    batch_size=_base_.train_dataloader.batch_size * _base_.num_frames,
    dataset=dict(pipeline=train_pipeline))
