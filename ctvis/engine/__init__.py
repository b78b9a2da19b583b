"""Engine components: the CTVIS optimizer parameter groups, mixed precision that falls back to
fp32 where there is no CUDA, the random-state hook that makes resumed runs exact, the checks of
loaded and resumed checkpoints, a training time budget that scales the schedule, and the
test-time drawing of predicted videos, with the demo's drawing of tracks."""
from .amp import AutoAmpTestLoop, AutoAmpValLoop, amp_available, auto_amp_optim_wrapper
from .checkpoint_hooks import (CheckpointFitsModel, StopOnNonFiniteWeights,
                               ValidateResumedCheckpoint)
from .optim_constructor import CTVISOptimWrapperConstructor
from .rng_state_hook import RNGStateHook
from .time_budget import TrainingTimeBudget, parse_duration
from .track_drawing import draw_tracks, track_color
from .visualization_hook import VideoMaskVisualizationHook

__all__ = ['AutoAmpTestLoop', 'AutoAmpValLoop', 'CTVISOptimWrapperConstructor', 'RNGStateHook',
           'CheckpointFitsModel', 'StopOnNonFiniteWeights', 'ValidateResumedCheckpoint',
           'VideoMaskVisualizationHook',
           'TrainingTimeBudget', 'amp_available', 'auto_amp_optim_wrapper', 'draw_tracks',
           'parse_duration', 'track_color']
