# The quickstart recipe shrunk for an end-to-end test: the toy dataset under $CTVIS_TOY_DATA,
# 3-frame clips, 2 iterations, validation at the end.
_base_ = '../../../configs/ctvis/ctvis_quickstart.py'
from ctvis.utils.config_tools import update_step  # after _base_: see its docstring

train_pipeline = _base_.train_pipeline
update_step(train_pipeline, 'VideoClipSample', num_frames=3)

# --- toy shrink: every line from here on is also applied to the MinVIS quickstart by
# tests/test_projects/test_minvis.py (after its own `train_pipeline = _base_.train_pipeline`).
data_root = '{{$CTVIS_TOY_DATA:data/toy_vis/}}'
max_iters = 2

train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'valid.json')
test_evaluator = val_evaluator

param_scheduler = []
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(checkpoint=dict(interval=max_iters), logger=dict(interval=1))
