"""Synthetic data: every generated video, annotation and result set of the project lives here.

``toy``: the built-in toy VIS dataset (frames + YouTube-VIS annotations on disk) used by the
quickstart, the tests and the benchmarks.
``association``: the association set (look-alike instances that cross and occlude each other,
re-appearances after several absent frames) of the tracker ablation (docs/ablation.md).
``squares``: the smallest videos (moving squares), a packed training clip in memory or a
YouTube-VIS set on disk, for unit tests of models and tools.
"""
from .association import make_association_vis, render_association_video
from .squares import square_clip, write_square_videos
from .toy import TOY_CLASSES, make_toy_vis, render_toy_video

__all__ = ['TOY_CLASSES', 'make_association_vis', 'make_toy_vis', 'render_association_video',
           'render_toy_video', 'square_clip', 'write_square_videos']
