"""ctvis.evaluation."""
from .tracking_metrics import TrackingEvaluator, evaluate_tracking  # noqa: F401
from ..datasets.ytvis_format import YTVISFormatError  # noqa: F401
from .ytvis_eval import YTVISEvaluator, evaluate_ytvis  # noqa: F401
from .ytvis_metric import YTVISMetric, dump_results, results2json  # noqa: F401
