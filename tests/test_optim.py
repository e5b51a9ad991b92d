from __future__ import annotations

from typing import Any

import pytest
import torch

from odeon_job.config import config_from_dict
from odeon_job.errors import ConfigError
from odeon_job.optim import build_optimizer, build_scheduler

from conftest import make_config


def _setup(**train_setup: Any):  # type: ignore[no-untyped-def]
    return config_from_dict(make_config("x.csv", "o", train_setup=train_setup)).train_setup


def _parameters() -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(torch.ones(3))]


def test_default_optimizer_is_adam_at_train_setup_lr() -> None:
    setup = _setup(lr=0.003)
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 0.003


def test_the_specification_sgd_example_passes_its_arguments() -> None:
    setup = _setup(optimizer_config={"optimizer": "sgd", "momentum": 0.5}, lr=0.01)
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    assert isinstance(optimizer, torch.optim.SGD)
    assert (optimizer.param_groups[0]["momentum"], optimizer.param_groups[0]["lr"]) == (0.5, 0.01)


def test_adam_takes_every_constructor_argument() -> None:
    setup = _setup(optimizer_config={"optimizer": "adam", "betas": [0.8, 0.9], "weight_decay": 1e-4,
                                     "amsgrad": True})
    group = build_optimizer(_parameters(), setup.optimizer_config, setup.lr).param_groups[0]
    assert (tuple(group["betas"]), group["weight_decay"], group["amsgrad"]) == ((0.8, 0.9), 1e-4, True)


def test_unknown_argument_names_the_optimizer_and_its_arguments() -> None:
    setup = _setup(optimizer_config={"optimizer": "sgd", "momentun": 0.5})
    with pytest.raises(ConfigError) as caught:
        build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    message = str(caught.value)
    assert message.startswith("train_setup.optimizer_config.momentun: sgd has no argument 'momentun' "
                              "(did you mean 'momentum'?); its arguments: ")
    assert "momentum" in message and "nesterov" in message and "\n" not in message


def test_invalid_argument_value_is_a_config_error() -> None:
    setup = _setup(optimizer_config={"optimizer": "sgd", "nesterov": True})  # nesterov needs momentum
    with pytest.raises(ConfigError, match="train_setup.optimizer_config: invalid arguments for sgd: .*[Nn]esterov"):
        build_optimizer(_parameters(), setup.optimizer_config, setup.lr)


def test_default_scheduler_is_the_specification_plateau_on_val_loss() -> None:
    setup = _setup()
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    config = build_scheduler(optimizer, setup.scheduler_config)
    scheduler = config["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (scheduler.mode, scheduler.factor, scheduler.patience, scheduler.min_lrs, scheduler.cooldown) == (
        "min", 0.5, 10, [1e-7], 4)
    assert (config["monitor"], config["interval"]) == ("val_loss", "epoch")


def test_the_specification_plateau_example_steps_and_reduces_the_lr() -> None:
    setup = _setup(scheduler_config={"scheduler": "reducelronplateau", "patience": 1, "cooldown": 0,
                                     "factor": 0.5, "min_lr": 1e-7}, lr=0.01)
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    scheduler = build_scheduler(optimizer, setup.scheduler_config)["scheduler"]
    for _ in range(3):
        scheduler.step(1.0)  # no improvement
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


def test_scheduler_unknown_argument() -> None:
    setup = _setup(scheduler_config={"scheduler": "reducelronplateau", "patiance": 3})
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    with pytest.raises(ConfigError, match=r"train_setup.scheduler_config.patiance: reducelronplateau has no "
                                          r"argument 'patiance' \(did you mean 'patience'\?\)"):
        build_scheduler(optimizer, setup.scheduler_config)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("optimizer_config", {"optimizer": "rmsprop"}, r"train_setup.optimizer_config.optimizer: 'rmsprop' is not "
                                                   r"supported yet by this version \(available: adam, sgd\)"),
    ("scheduler_config", {"scheduler": "cycliclr"}, r"train_setup.scheduler_config.scheduler: 'cycliclr' is not "
                                                    r"supported yet by this version \(available: reducelronplateau\)"),
])
def test_names_not_available_yet_are_refused(key: str, value: dict[str, Any], message: str) -> None:
    setup = _setup(**{key: value})
    with pytest.raises(ConfigError, match=message):
        optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
        build_scheduler(optimizer, setup.scheduler_config)
