"""ctvis.datasets."""
from .transforms import DropEmptyMaskInstances, VideoClipSample  # noqa: F401,E402
from .ytvis_format import MissingFrameError, YTVISFormatError  # noqa: F401,E402
from .ytvis import OVISDataset, YTVISDataset  # noqa: F401,E402
from .pseudo_video import CocoPseudoVideoDataset  # noqa: F401,E402
from .pseudo_video_transform import PseudoVideoFromImage  # noqa: F401,E402
from .samplers import DatasetRatioSampler, SourceAspectRatioBatchSampler  # noqa: F401,E402
from .synthetic import TOY_CLASSES, make_toy_vis, render_toy_video  # noqa: F401,E402
