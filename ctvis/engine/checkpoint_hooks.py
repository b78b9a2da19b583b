"""Hooks around loading checkpoints: refuse weights that do not fit the model, and finish the
validation that a resumed run may have been killed in."""
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
    """

    priority = 'VERY_HIGH'

    def __init__(self, checkpoint: str, action: str = 'nothing was run') -> None:
        self.checkpoint = checkpoint
        self.action = action

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
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
