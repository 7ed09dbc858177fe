"""Precise BN: BatchNorm statistics recomputed with the final weights over
many training batches (detectron2's ``TEST.PRECISE_BN``; mmengine lacks it;
docs/configs_and_training.md)."""
import logging
from itertools import chain, islice, repeat
from typing import Iterable, Optional

import torch
from mmengine.dist import all_reduce
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from .ops import BatchNormBase


def recompute_bn_stats(model: torch.nn.Module,
                       batches: Iterable,
                       num_iters: int,
                       logger: Optional[logging.Logger] = None) -> int:
    """Set the running mean and variance, ``(C,)``, of every BatchNorm that
    trains after ``model.train()`` (an mmengine ``BaseModel``) to their
    average over ``num_iters`` of ``batches`` (dataloader items), as fvcore's
    ``update_bn_stats``; return how many norms changed."""
    was_training = model.training
    model.train()
    norms = [
        m for m in model.modules()
        if isinstance(m, BatchNormBase) and m.training
    ]
    momenta = [m.momentum for m in norms]
    means = [torch.zeros_like(m.running_mean) for m in norms]
    variances = [torch.zeros_like(m.running_var) for m in norms]
    for m in norms:
        m.momentum = 1.0  # running statistics := those of the last batch
    seen = 0
    try:
        with torch.no_grad():
            for seen, data in enumerate(islice(batches, num_iters), 1):
                # BaseModel.train_step's forward, without its update
                model._run_forward(
                    model.data_preprocessor(data, True), mode='loss')
                for m, mean, var in zip(norms, means, variances):
                    mean += (m.running_mean - mean) / seen
                    var += (m.running_var - var) / seen
                if logger is not None and seen % 50 == 0:
                    logger.info(f'PreciseBN: {seen}/{num_iters} batches')
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    if seen < num_iters:
        raise ValueError(f'PreciseBN needs {num_iters} batches, the data '
                         f'gave {seen}; lower num_iters')
    for m, mean, var in zip(norms, means, variances):
        # plain BN under DDP saw its rank's batches only (SyncBN's are global)
        all_reduce(mean, op='mean')
        all_reduce(var, op='mean')
        m.running_mean.copy_(mean)
        m.running_var.copy_(var)
    return len(norms)


@HOOKS.register_module()
class PreciseBNHook(Hook):
    """Recompute BatchNorm statistics over ``num_iters`` training batches at
    the end of training, and every ``interval`` epochs (iterations for an
    iteration-based loop) if ``interval`` > 0."""

    priority = 'ABOVE_NORMAL'  # before CheckpointHook: it saves the new stats

    def __init__(self, num_iters: int = 200, interval: int = 0):
        if num_iters < 1 or interval < 0:
            raise ValueError(
                f'PreciseBNHook needs num_iters >= 1 and interval >= 0, got '
                f'num_iters={num_iters}, interval={interval}')
        self.num_iters = num_iters
        self.interval = interval

    def after_train_epoch(self, runner) -> None:
        if (self.interval and self.every_n_epochs(runner, self.interval)
                or self.is_last_train_epoch(runner)):
            self._recompute(runner)

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None) -> None:
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            return  # after_train_epoch's
        if (self.interval and self.every_n_train_iters(runner, self.interval)
                or self.is_last_train_iter(runner)):
            self._recompute(runner)

    def _recompute(self, runner) -> None:
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        runner.logger.info(f'PreciseBN: recomputing BatchNorm statistics '
                           f'over {self.num_iters} training batches')
        loader = runner.train_dataloader
        if len(loader) == 0:
            raise ValueError('PreciseBN: the training dataloader is empty')
        batches = chain.from_iterable(repeat(loader))  # epoch after epoch
        updated = recompute_bn_stats(model, batches, self.num_iters,
                                     runner.logger)
        runner.logger.info(f'PreciseBN: updated {updated} BatchNorm layers')
