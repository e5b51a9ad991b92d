"""The configuration's vocabulary: split, monitor and precision names, the limits every section shares, and the
value checks more than one section uses (their errors carry our own wording)."""

from __future__ import annotations

import typing
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

from odeon_job.config import catalog
from odeon_job.errors import quote

Split = Literal["train", "val", "test"]


SPLITS: tuple[Split, ...] = typing.get_args(Split)


Augmentation = Literal["rotation90", "rotation", "radiometry"]


# Derived from the catalog, the one list of names (Literal[...] of a tuple is the union of its values): pydantic
# checks them at run time; to a type checker, built at run time, they are strings.
if typing.TYPE_CHECKING:
    ModelName: typing.TypeAlias = str
    LossName: typing.TypeAlias = str
    OptimizerName: typing.TypeAlias = str
    SchedulerName: typing.TypeAlias = str
else:
    ModelName = Literal[tuple(catalog.MODELS)]
    LossName = Literal[tuple(catalog.LOSSES)]
    OptimizerName = Literal[catalog.OPTIMIZERS]
    SchedulerName = Literal[catalog.SCHEDULERS]


Monitor = Literal["val_loss", "val_miou"]


#: The direction in which each monitored metric improves.
MONITOR_MODES = {"val_loss": "min", "val_miou": "max"}


Precision = Literal["32", "16-mixed", "bf16-mixed"]


#: The format of the configuration (and of the hyperparameters in checkpoints) this version writes.
CONFIG_VERSION = 2


#: The most pixels along a side of what goes through the network in one piece (a window of a scene, or a tile
#: read whole): 8192² pixels already take gigabytes of activations per item in the smallest model, and past
#: 2^31 elements per tensor some convolutions fail outright.
MAX_ITEM_SIDE = 8192


#: Seconds between SIGTERM and the end of the job: below Kubernetes' default terminationGracePeriodSeconds
#: (30), with room to upload what is staged.
DEFAULT_GRACE_PERIOD = 20.0


def odeon_error(message: str, field: str | None = None) -> PydanticCustomError:
    """A validation error with a message of our own; ``field`` names the key below the failing model."""
    return PydanticCustomError("odeon", message, {"field": field} if field else None)


def lowercase(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def no_duplicates(values: list[Any] | None) -> list[Any] | None:
    """The first value listed twice is an error (one pass: a list of millions of labels is checked at once)."""
    if values is not None:
        seen: set[Any] = set()
        for value in values:
            if value in seen:
                raise odeon_error(f"{quote(value)} is listed twice")
            seen.add(value)
    return values


def is_folder_name(value: str) -> bool:
    """One folder name: not empty, no separator, not ``.`` or ``..`` (a run folder stays inside its parent)."""
    return bool(value.strip()) and "/" not in value and "\\" not in value and value not in (".", "..")


def one_or_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
