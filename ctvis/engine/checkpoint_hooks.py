"""Hooks that keep checkpoints usable: refuse loaded weights that do not fit the model (or a
resume from weights alone), finish the validation that a resumed run may have been killed in,
and stop a training whose weights turned non-finite before they are saved."""
import logging
import math

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop

from mmdet.registry import HOOKS
from ..utils.checkpoint import weights_problem
from ..utils.tool_config import ConfigError


@HOOKS.register_module()
class CheckpointFitsModel(Hook):
    """Refuse a checkpoint, before its weights are loaded, when it cannot give the model all of
    them, finite (:func:`ctvis.utils.weights_problem`).

    mmengine loads it with only a warning: a test would evaluate a partly random model, and a
    resumed training would step an optimizer whose state has the old shapes (with the fused
    AdamW that grew the memory until the kernel killed the process).

    Args:
        checkpoint (str): The file, for the message.
        action (str): What was not done, for the message.
        resuming (bool): The checkpoint must also hold a training state (mmengine's ``meta``
            with the iteration): a resume from weights alone failed with ``KeyError: 'meta'``.
    """

    priority = 'VERY_HIGH'

    def __init__(self, checkpoint: str, action: str = 'nothing was run',
                 resuming: bool = False) -> None:
        self.checkpoint = checkpoint
        self.action = action
        self.resuming = resuming

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if self.resuming and not isinstance(checkpoint.get('meta'), dict):
            raise ConfigError(
                f'{self.checkpoint}: holds weights only, no training state to resume (an '
                'official or converted checkpoint, or one saved without it); to train from '
                f'these weights, start a new run with --cfg-options load_from={self.checkpoint} '
                f'instead of --resume ({self.action})')
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        problem = weights_problem(model, checkpoint)
        if problem is not None:
            raise ConfigError(f'{self.checkpoint}: {problem} ({self.action})')


@HOOKS.register_module()
class ValidateResumedCheckpoint(Hook):
    """Run the validation of the iteration (or epoch) a run resumes at, when one was due there.

    mmengine saves a checkpoint before that iteration's validation, so a run killed during the
    validation resumes after it and never validates it (at the last iteration: exits with no
    metrics at all). Whether the killed run finished it is not recorded, so it runs again.
    """

    priority = 'LOW'

    def before_train(self, runner) -> None:
        loop = runner.train_loop
        if runner.val_loop is None or not hasattr(loop, 'val_interval'):
            return
        if isinstance(loop, EpochBasedTrainLoop):
            unit, done, last = 'epoch', runner.epoch, loop.max_epochs
        else:
            unit, done, last = 'iteration', runner.iter, loop.max_iters
        if done > 0 and done >= loop.val_begin and (done % loop.val_interval == 0
                                                    or done == last):
            print_log(f'resumed at {unit} {done}, where a validation was due: running it (the '
                      'checkpoint is saved before the validation, which the interrupted run may '
                      'not have finished)', logger='current')
            runner.val_loop.run()


def _scalar(value) -> float:
    """A logged loss as a float (mmengine hands the total loss over still attached to the graph:
    ``float`` of it warns at every iteration)."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


@HOOKS.register_module()
class StopOnNonFiniteWeights(Hook):
    """Stop training, before the weights are saved, when an update made them non-finite.

    mmengine trains on after a NaN loss: the NaN weights were saved as the newest checkpoint,
    validated (AP 0) and recorded as the one to resume, and the run failed one iteration later
    inside the Hungarian matching with ``matrix contains invalid numeric entries``. The weights
    are checked only after a non-finite loss (one scalar read per iteration otherwise); when they
    stayed finite (a step the fp16 loss scaler skipped) the run goes on with a warning.
    """

    priority = 'ABOVE_NORMAL'  # before the CheckpointHook (VERY_LOW) and the validation

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if not outputs or 'loss' not in outputs or math.isfinite(_scalar(outputs['loss'])):
            return
        iteration = runner.iter + 1
        terms = [key for key in outputs if 'loss' in key and key != 'loss'] or ['loss']
        losses = ', '.join(f'{key} {_scalar(outputs[key]):g}' for key in terms
                           if not math.isfinite(_scalar(outputs[key])))
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        broken = [name for name, parameter in model.named_parameters()
                  if not torch.isfinite(parameter).all()]
        if not broken:
            print_log(f'iteration {iteration}: non-finite loss ({losses}); the weights stayed '
                      'finite (the step was skipped), training goes on', logger='current',
                      level=logging.WARNING)
            return
        raise RuntimeError(
            f'iteration {iteration}: non-finite loss ({losses}), and the update made '
            f'{len(broken)} parameters non-finite (e.g. {broken[0]}): training stopped before '
            'saving them. Resume from the last checkpoint (--resume), with a lower learning '
            'rate or stronger gradient clipping if it happens again.')
