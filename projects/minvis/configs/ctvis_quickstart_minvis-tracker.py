# The CTVIS quickstart model, tracked by MinVIS's frame-to-frame Hungarian matching instead of the
# CTVIS memory tracker: for testing a CTVIS quickstart checkpoint (work_dirs/quickstart/) with the
# other association, on its trained re-id embeddings. Training with it is the CTVIS quickstart.
#   python tools/test.py projects/minvis/configs/ctvis_quickstart_minvis-tracker.py CHECKPOINT
_base_ = ['../../../configs/ctvis/ctvis_quickstart.py']
custom_imports = dict(imports=['ctvis', 'projects.minvis.minvis'], allow_failed_imports=False)

model = dict(tracker=dict(_delete_=True, type='MinVISTracker', num_classes=_base_.num_classes))
