"""The catalog is the one list of names: the configuration accepts exactly the names each builder has."""

from __future__ import annotations

import typing

from odeon_job import config
from odeon_job.config import catalog
from odeon_job.training.losses import LOSSES
from odeon_job.training.models import MODELS
from odeon_job.training.optimizers import OPTIMIZERS, SCHEDULERS


def test_every_name_of_the_catalog_has_a_builder_and_no_builder_is_unnamed() -> None:
    assert set(MODELS) == set(catalog.MODELS) == set(typing.get_args(config.ModelName))
    assert set(LOSSES) == set(catalog.LOSSES) == set(typing.get_args(config.LossName))
    assert set(OPTIMIZERS) == set(catalog.OPTIMIZERS) == set(typing.get_args(config.OptimizerName))
    assert set(SCHEDULERS) == set(catalog.SCHEDULERS) == set(typing.get_args(config.SchedulerName))


def test_every_option_belongs_to_a_section_and_is_used_by_someone() -> None:
    for entries, section in ((catalog.MODELS, config.ModelParams), (catalog.LOSSES, config.LossParams)):
        used = {key for entry in entries.values() for key in entry.params}
        assert used == set(section.model_fields)
