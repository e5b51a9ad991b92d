"""Optimizers and learning-rate schedulers from ``optimizer_config`` / ``scheduler_config``.

Every key other than the name is passed to the torch constructor; an argument the constructor does
not take, or a required one left out, is an error naming the key and the valid arguments.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.optim import Optimizer, lr_scheduler

from odeon_job.config import OptimizerConfig, SchedulerConfig
from odeon_job.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from pytorch_lightning.utilities.types import LRSchedulerConfigType

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
    "adamax": torch.optim.Adamax,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}

SCHEDULERS: dict[str, type] = {
    "reducelronplateau": lr_scheduler.ReduceLROnPlateau,
    "cycliclr": lr_scheduler.CyclicLR,
    "cosineannealinglr": lr_scheduler.CosineAnnealingLR,
    "cosineannealingwarmrestarts": lr_scheduler.CosineAnnealingWarmRestarts,
}

#: How Lightning steps each scheduler: per epoch (plateaus on val_loss) or per training batch.
STEPPING: dict[str, dict[str, Any]] = {
    "reducelronplateau": {"interval": "epoch", "monitor": "val_loss"},
    "cycliclr": {"interval": "step"},
    "cosineannealinglr": {"interval": "epoch"},
    "cosineannealingwarmrestarts": {"interval": "epoch"},
}


def _construct(cls: type, key: str, name: str, first: Any, arguments: dict[str, Any]) -> Any:
    """``cls(first, **arguments)``; unknown, missing or invalid arguments are reported against ``key``."""
    parameters = list(inspect.signature(cls).parameters.values())[1:]  # after params / optimizer
    accepted = [p.name for p in parameters]
    for argument in arguments:
        if argument not in accepted:
            raise ConfigError(
                f"{key}.{argument}: {name} has no argument {argument!r}"
                f"{did_you_mean(argument, accepted)}; its arguments: {', '.join(accepted)}"
            )
    for parameter in parameters:
        if parameter.default is inspect.Parameter.empty and parameter.name not in arguments:
            raise ConfigError(f"{key}.{parameter.name}: {name} needs this argument")
    try:
        return cls(first, **arguments)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{key}: invalid arguments for {name}: {error}") from error


def build_optimizer(parameters: Iterable[torch.nn.Parameter], config: OptimizerConfig | None, lr: float) -> Optimizer:
    """The optimizer of ``config`` (Adam when None) at learning rate ``lr``."""
    config = config or OptimizerConfig()
    return _construct(
        OPTIMIZERS[config.optimizer],
        "train_setup.optimizer_config",
        config.optimizer,
        parameters,
        {**config.arguments, "lr": lr},
    )


def build_scheduler(
    optimizer: Optimizer, config: SchedulerConfig | None, lr: float, epochs: int
) -> LRSchedulerConfigType:
    """Lightning's scheduler configuration for ``scheduler_config`` (the specification's plateau when None).
    CyclicLR's ``base_lr`` defaults to ``lr`` and CosineAnnealingLR's ``T_max`` to ``epochs``."""
    config = config or SchedulerConfig()
    arguments = config.arguments
    if config.scheduler == "cycliclr":
        arguments.setdefault("base_lr", lr)
    if config.scheduler == "cosineannealinglr":
        arguments.setdefault("T_max", epochs)
    scheduler = _construct(
        SCHEDULERS[config.scheduler], "train_setup.scheduler_config", config.scheduler, optimizer, arguments
    )
    # (Lightning's TypedDict: STEPPING's keys are among its own, which a type checker cannot see through **)
    return cast("LRSchedulerConfigType", {"scheduler": scheduler, **STEPPING[config.scheduler]})
