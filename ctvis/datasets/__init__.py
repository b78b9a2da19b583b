"""ctvis.datasets."""
from .transforms import DropEmptyMaskInstances, VideoClipSample  # noqa: F401,E402
from .ytvis import DatasetFormatError, MissingFrameError, OVISDataset, YTVISDataset  # noqa: F401,E402,E501
