"""Synthetic data: every generated video, annotation and result set of the project lives here.

``toy``: the built-in toy VIS dataset (frames + YouTube-VIS annotations on disk) used by the
quickstart, the tests and the benchmarks.
"""
from .toy import TOY_CLASSES, make_toy_vis, render_toy_video

__all__ = ['TOY_CLASSES', 'make_toy_vis', 'render_toy_video']
