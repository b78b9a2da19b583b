"""Synthetic data: every generated video, annotation and result set of the project lives here.

``toy``: the built-in toy VIS dataset (frames + YouTube-VIS annotations on disk) used by the
quickstart, the tests and the benchmarks.
``squares``: the smallest videos (moving squares), a packed training clip in memory or a
YouTube-VIS set on disk, for unit tests of models and tools.
"""
from .squares import square_clip, write_square_videos
from .toy import TOY_CLASSES, make_toy_vis, render_toy_video

__all__ = ['TOY_CLASSES', 'make_toy_vis', 'render_toy_video', 'square_clip',
           'write_square_videos']
