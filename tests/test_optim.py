from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from odeon_job.config import config_from_dict
from odeon_job.errors import ConfigError
from odeon_job.training.optimizers import build_optimizer, build_scheduler

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
    setup = _setup(optimizer_config={"optimizer": "adam", "betas": [0.8, 0.9], "weight_decay": 1e-4, "amsgrad": True})
    group = build_optimizer(_parameters(), setup.optimizer_config, setup.lr).param_groups[0]
    assert (tuple(group["betas"]), group["weight_decay"], group["amsgrad"]) == ((0.8, 0.9), 1e-4, True)


def test_unknown_argument_names_the_optimizer_and_its_arguments() -> None:
    setup = _setup(optimizer_config={"optimizer": "sgd", "momentun": 0.5})
    with pytest.raises(ConfigError) as caught:
        build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    message = str(caught.value)
    assert message.startswith(
        "train_setup.optimizer_config.momentun: sgd has no argument 'momentun' "
        "(did you mean 'momentum'?); its arguments: "
    )
    assert "momentum" in message and "nesterov" in message and "\n" not in message


def test_invalid_argument_value_is_a_config_error() -> None:
    setup = _setup(optimizer_config={"optimizer": "sgd", "nesterov": True})  # nesterov needs momentum
    with pytest.raises(ConfigError, match="train_setup.optimizer_config: invalid arguments for sgd: .*[Nn]esterov"):
        build_optimizer(_parameters(), setup.optimizer_config, setup.lr)


def test_default_scheduler_is_the_specification_plateau_on_val_loss() -> None:
    setup = _setup()
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    config = build_scheduler(optimizer, setup.scheduler_config, setup.lr, setup.epochs)
    scheduler = config["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    assert (scheduler.mode, scheduler.factor, scheduler.patience, scheduler.min_lrs, scheduler.cooldown) == (
        "min",
        0.5,
        10,
        [1e-7],
        4,
    )
    assert (config["monitor"], config["interval"]) == ("val_loss", "epoch")


def test_the_specification_plateau_example_steps_and_reduces_the_lr() -> None:
    setup = _setup(
        scheduler_config={
            "scheduler": "reducelronplateau",
            "patience": 1,
            "cooldown": 0,
            "factor": 0.5,
            "min_lr": 1e-7,
        },
        lr=0.01,
    )
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    scheduler = build_scheduler(optimizer, setup.scheduler_config, setup.lr, setup.epochs)["scheduler"]
    for _ in range(3):
        scheduler.step(1.0)  # no improvement
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.005)


@pytest.mark.parametrize(
    ("name", "arguments", "cls"),
    [
        ("adam", {"betas": [0.8, 0.95]}, torch.optim.Adam),
        ("adamw", {"weight_decay": 0.05}, torch.optim.AdamW),
        ("radam", {"eps": 1e-6}, torch.optim.RAdam),
        ("adamax", {"betas": [0.9, 0.99]}, torch.optim.Adamax),
        ("sgd", {"momentum": 0.5, "nesterov": True}, torch.optim.SGD),
        ("rmsprop", {"alpha": 0.9, "momentum": 0.1}, torch.optim.RMSprop),
    ],
)
def test_every_optimizer_takes_its_arguments_and_steps(name: str, arguments: dict[str, Any], cls: type) -> None:
    setup = _setup(optimizer_config={"optimizer": name, **arguments}, lr=0.1)
    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = build_optimizer([parameter], setup.optimizer_config, setup.lr)
    assert type(optimizer) is cls and optimizer.param_groups[0]["lr"] == 0.1
    for key, value in arguments.items():
        got = optimizer.param_groups[0][key]
        assert (list(got) if isinstance(value, list) else got) == value
    (parameter**2).sum().backward()
    optimizer.step()
    assert (parameter < 1).all()


def _cosine(t: int, period: int, high: float, low: float = 0.0) -> float:
    return low + (high - low) * (1 + math.cos(math.pi * t / period)) / 2


@pytest.mark.parametrize(
    ("config", "cls", "interval", "expected"),
    [
        # triangular cycle from train_setup.lr (0.01) up to max_lr in 2 steps and back
        (
            {"scheduler": "cycliclr", "max_lr": 0.1, "step_size_up": 2},
            torch.optim.lr_scheduler.CyclicLR,
            "step",
            [0.055, 0.1, 0.055, 0.01],
        ),
        # one half cosine over the run's 4 epochs, down to eta_min
        (
            {"scheduler": "cosineannealinglr", "eta_min": 1e-5},
            torch.optim.lr_scheduler.CosineAnnealingLR,
            "epoch",
            [_cosine(t, 4, 0.01, 1e-5) for t in (1, 2, 3, 4)],
        ),
        # restarts every 2 epochs
        (
            {"scheduler": "cosineannealingwarmrestarts", "T_0": 2},
            torch.optim.lr_scheduler.CosineAnnealingWarmRestarts,
            "epoch",
            [0.005, 0.01, 0.005, 0.01],
        ),
    ],
)
def test_every_scheduler_follows_its_schedule(
    config: dict[str, Any], cls: type, interval: str, expected: list[float]
) -> None:
    setup = _setup(scheduler_config=config, lr=0.01, epochs=4, optimizer_config={"optimizer": "sgd", "momentum": 0.9})
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    built = build_scheduler(optimizer, setup.scheduler_config, setup.lr, setup.epochs)
    assert type(built["scheduler"]) is cls and built["interval"] == interval
    rates = []
    for _ in range(4):
        optimizer.step()
        built["scheduler"].step()
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx(expected, rel=1e-6)


def test_scheduler_defaults_follow_train_setup() -> None:
    setup = _setup(
        scheduler_config={"scheduler": "cycliclr", "max_lr": 0.1},
        lr=0.003,
        optimizer_config={"optimizer": "sgd", "momentum": 0.9},
    )
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    scheduler = build_scheduler(optimizer, setup.scheduler_config, setup.lr, setup.epochs)["scheduler"]
    assert scheduler.base_lrs == [0.003]
    setup = _setup(scheduler_config={"scheduler": "cosineannealinglr"}, epochs=17)
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    scheduler = build_scheduler(optimizer, setup.scheduler_config, setup.lr, setup.epochs)["scheduler"]
    assert scheduler.T_max == 17


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"scheduler": "reducelronplateau", "patiance": 3},
            r"train_setup.scheduler_config.patiance: reducelronplateau has no argument 'patiance' "
            r"\(did you mean 'patience'\?\)",
        ),
        (
            {"scheduler": "cosineannealingwarmrestarts"},
            r"^train_setup.scheduler_config.T_0: cosineannealingwarmrestarts needs this argument$",
        ),
        ({"scheduler": "cycliclr"}, r"^train_setup.scheduler_config.max_lr: cycliclr needs this argument$"),
        (
            {"scheduler": "cycliclr", "max_lr": 0.1, "mode": "sideways"},
            r"^train_setup.scheduler_config: invalid arguments for cycliclr: mode is invalid",
        ),
    ],
)
def test_scheduler_argument_errors(config: dict[str, Any], message: str) -> None:
    setup = _setup(scheduler_config=config)
    optimizer = build_optimizer(_parameters(), setup.optimizer_config, setup.lr)
    with pytest.raises(ConfigError, match=message):
        build_scheduler(optimizer, setup.scheduler_config, setup.lr, setup.epochs)
