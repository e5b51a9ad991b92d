"""Optimizers and learning-rate schedulers from ``optimizer_config`` / ``scheduler_config``.

Every key other than the name is passed to the torch constructor; an argument the constructor
does not take is an error naming the valid ones.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import Optimizer, lr_scheduler

from odeon_job.config import OptimizerConfig, SchedulerConfig
from odeon_job.errors import ConfigError

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
}

SCHEDULERS: dict[str, type] = {
    "reducelronplateau": lr_scheduler.ReduceLROnPlateau,
}

#: What each scheduler is stepped by, for Lightning: per epoch (on val_loss for plateaus) or per batch.
_STEPPING: dict[str, dict[str, Any]] = {
    "reducelronplateau": {"interval": "epoch", "monitor": "val_loss"},
}


def _construct(cls: type, key: str, name: str, first: Any, arguments: dict[str, Any]) -> Any:
    """``cls(first, **arguments)``, with an unknown or invalid argument reported against ``key``."""
    accepted = [p for p in inspect.signature(cls).parameters if p not in ("self", "params", "optimizer")]
    for argument in arguments:
        if argument not in accepted:
            close = difflib.get_close_matches(argument, accepted, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{key}.{argument}: {name} has no argument {argument!r}{hint}; "
                              f"its arguments: {', '.join(accepted)}")
    try:
        return cls(first, **arguments)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{key}: invalid arguments for {name}: {error}") from error


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: OptimizerConfig | None,
                    lr: float) -> Optimizer:
    """The optimizer of ``config`` (Adam when None) at learning rate ``lr``."""
    config = config or OptimizerConfig()
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"train_setup.optimizer_config.optimizer: {config.optimizer!r} is not supported yet "
                          f"by this version (available: {', '.join(OPTIMIZERS)})")
    return _construct(OPTIMIZERS[config.optimizer], "train_setup.optimizer_config", config.optimizer,
                      parameters, {**config.arguments, "lr": lr})


def build_scheduler(optimizer: Optimizer, config: SchedulerConfig | None) -> dict[str, Any]:
    """Lightning's scheduler configuration for ``config`` (the specification's plateau when None)."""
    config = config or SchedulerConfig()
    if config.scheduler not in SCHEDULERS:
        raise ConfigError(f"train_setup.scheduler_config.scheduler: {config.scheduler!r} is not supported yet "
                          f"by this version (available: {', '.join(SCHEDULERS)})")
    scheduler = _construct(SCHEDULERS[config.scheduler], "train_setup.scheduler_config", config.scheduler,
                           optimizer, config.arguments)
    return {"scheduler": scheduler, **_STEPPING[config.scheduler]}
