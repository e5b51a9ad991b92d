"""The job's configuration: the four sections of the specification's JSON, validated by pydantic.

Every key and default is the specification's (``../shared/spec/odeon-train.rst``); the few keys we
add are marked "extension" in their description and listed in the README. Unknown keys are errors,
so a misspelt key never silently falls back to a default.

The package's face: the names below are what the rest of the job uses; each lives in one module
(``values``: names and shared checks; ``data_source``, ``train_setup``, ``job_config``: the sections;
``upgrades``, ``loading``: from text to a ``JobConfig``; ``wording``: error lines; ``catalog``: the
names of models, losses, optimizers and schedulers).
"""

from odeon_job.config.data_source import BandList, DataSource, NormalizationStats, PixelSize
from odeon_job.config.job_config import DeviceSetup, JobConfig, OutputSetup, count_problem, json_schema
from odeon_job.config.loading import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    STDIN,
    apply_overrides,
    config_from_dict,
    load_config,
    load_predict_config,
    parse_config,
    parse_json,
    read_config_text,
)
from odeon_job.config.predict_config import OutputType, PredictConfig
from odeon_job.config.train_setup import (
    ODEON_U_NETS,
    PRETRAINABLE_ENCODERS,
    REDUCE_LR_ON_PLATEAU_DEFAULTS,
    EarlyStopping,
    LossParams,
    ModelParams,
    OptimizerConfig,
    SchedulerConfig,
    TrainSetup,
)
from odeon_job.config.upgrades import UPGRADES, upgrade_config
from odeon_job.config.values import (
    CONFIG_VERSION,
    DEFAULT_GRACE_PERIOD,
    MAX_ITEM_SIDE,
    MONITOR_MODES,
    SPLITS,
    Augmentation,
    LossName,
    ModelName,
    Monitor,
    OptimizerName,
    Precision,
    SchedulerName,
    Section,
    Split,
    is_folder_name,
    lowercase,
    no_duplicates,
    odeon_error,
    one_or_list,
)
from odeon_job.config.wording import describe_errors

__all__ = [
    "Augmentation",
    "BandList",
    "CONFIG_VERSION",
    "DEFAULT_GRACE_PERIOD",
    "DataSource",
    "DeviceSetup",
    "EarlyStopping",
    "JobConfig",
    "LossName",
    "LossParams",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_ITEM_SIDE",
    "MONITOR_MODES",
    "ModelName",
    "ModelParams",
    "Monitor",
    "NormalizationStats",
    "ODEON_U_NETS",
    "OptimizerConfig",
    "OptimizerName",
    "OutputSetup",
    "PRETRAINABLE_ENCODERS",
    "PixelSize",
    "Precision",
    "REDUCE_LR_ON_PLATEAU_DEFAULTS",
    "SPLITS",
    "STDIN",
    "SchedulerConfig",
    "SchedulerName",
    "Section",
    "Split",
    "TrainSetup",
    "UPGRADES",
    "apply_overrides",
    "config_from_dict",
    "count_problem",
    "describe_errors",
    "is_folder_name",
    "json_schema",
    "load_config",
    "load_predict_config",
    "OutputType",
    "PredictConfig",
    "lowercase",
    "no_duplicates",
    "odeon_error",
    "one_or_list",
    "parse_config",
    "parse_json",
    "read_config_text",
    "upgrade_config",
]
