"""Fine-tuning from ``load_from``: say in the log which weights the checkpoint
did not give.

mmengine loads ``load_from`` with ``strict=False``, after the model's own
initialisation. A tensor whose shape differs in the model (a head for other
classes) is skipped whole, as torch never copies part of a tensor, so it keeps
its fresh initialisation; mmengine mentions it only inside a warning about
every mismatch. :class:`FineTuningReportHook` lists those tensors as
re-initialised, next to the model's tensors the checkpoint lacks and the
checkpoint's tensors the model has no place for. tools/train.py adds it to
every run that starts from ``load_from``.
"""
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner.checkpoint import CheckpointLoader


@HOOKS.register_module()
class FineTuningReportHook(Hook):
    """Before training from ``load_from`` (not when resuming), log what the
    checkpoint did not fill; refuse a checkpoint that fills nothing."""

    priority = 'VERY_HIGH'

    def before_train(self, runner):
        path = runner.cfg.get('load_from')
        if path is None or runner.cfg.get('resume'):
            return
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        loaded, report = compare_state_dicts(
            checkpoint_state_dict(path), model.state_dict())
        if not loaded:
            raise ValueError(
                f'load_from {path}: none of its tensors fits the model '
                f'(names and shapes differ), so nothing would be '
                f'fine-tuned. Is it a checkpoint of this architecture?')
        print_log(f'Fine-tuning from {path}: {report}', logger='current')


def checkpoint_state_dict(path):
    """The state dict of a checkpoint file or URL, with the ``module.`` prefix
    of wrapped models removed (as mmengine's loading does)."""
    checkpoint = CheckpointLoader.load_checkpoint(path, map_location='cpu')
    state = checkpoint.get('state_dict', checkpoint)
    return {
        k[len('module.'):] if k.startswith('module.') else k: v
        for k, v in state.items()
    }


def compare_state_dicts(checkpoint, model):
    """What loading ``checkpoint`` into a model with state ``model`` does.

    Returns the names loaded and a report of the rest: the model's tensors
    re-initialised (shape differs: checkpoint shape -> model shape), those
    initialised because the checkpoint lacks them, and the checkpoint's
    tensors left unused.
    """
    loaded = [
        k for k, v in model.items()
        if k in checkpoint and checkpoint[k].shape == v.shape
    ]
    reinit = [
        f'{k} {tuple(checkpoint[k].shape)} -> {tuple(v.shape)}'
        for k, v in model.items()
        if k in checkpoint and checkpoint[k].shape != v.shape
    ]
    absent = [k for k in model if k not in checkpoint]
    unused = [k for k in checkpoint if k not in model]
    report = (f'{len(loaded)} of {len(model)} tensors loaded; '
              f're-initialised, shape differs from the checkpoint: '
              f'{_names(reinit)}; initialised, not in the checkpoint: '
              f'{_names(absent)}; unused from the checkpoint: '
              f'{_names(unused)}')
    return loaded, report


def _names(items):
    return f'{len(items)} ({", ".join(items)})' if items else 'none'
