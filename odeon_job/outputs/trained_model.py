"""A trained model, wherever a user names it: a run folder, a checkpoint, a ``.pth`` beside its run's ``config.json``,
or an MLflow model URI. What the model was trained on (bands, classes and colours, scaling, resolution, patch size)
comes with it: ``odeon predict`` and ``odeon evaluate`` ask for nothing else."""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Any

from odeon_job import storage
from odeon_job.config import DataSource, upgrade_config
from odeon_job.data.spec import DataSpec, split_resolutions
from odeon_job.errors import ConfigError, OdeonError
from odeon_job.outputs.mlflow_model import MLFLOW_CHECKPOINT
from odeon_job.outputs.run_folder import RunFolder
from odeon_job.storage.model_files import DamagedModelFile, load_plain
from odeon_job.training.models.weights import read_state_dict
from odeon_job.training.segmentation_module import SegmentationModule, load_module, module_arguments

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


@dataclass
class TrainedModel:
    """A model in eval mode and the training's ``data_source`` (how its images were read)."""

    module: SegmentationModule
    source: DataSource
    #: Where it came from, for messages and records.
    url: str

    @property
    def spec(self) -> DataSpec:
        """The data description the model was trained with (bands read, classes, scaling, resolution)."""
        source = self.source
        return DataSpec(
            image_bands=tuple(source.image_bands or range(1, self.module.in_channels + 1)),
            mask_bands=tuple(source.mask_bands or ()),
            class_labels=self.module.class_labels,
            mask_encoding="class_index" if source.mask_bands is not None and len(source.mask_bands) == 1 else "one_hot",
            image_max_value=source.image_max_value,
            resolution=split_resolutions(source),
            mask_nodata=source.mask_nodata,
        )


def load_trained_model(url: str) -> TrainedModel:
    """The model at ``url``; anything that is not a model this job can rebuild is one line naming it."""
    if url.startswith(MLFLOW_SCHEMES):
        return _with_source(load_module(_mlflow_checkpoint(url)), url)
    if url.endswith(".pth"):
        return _from_pth(url)
    if url.endswith(".ckpt"):
        if not storage.exists(url):
            raise ConfigError(f"model: {url} not found")
        return _with_source(_load_checkpoint(url), url)
    best = RunFolder(url.rstrip("/")).best_checkpoint()
    if best is None:
        raise ConfigError(
            f"model: {url} is not a run folder with a val_loss checkpoint (odeon_val_loss_ckpt/*.ckpt), a .ckpt, "
            "a .pth or an MLflow model URI"
        )
    return _with_source(_load_checkpoint(best), best)


def _load_checkpoint(url: str) -> SegmentationModule:
    try:
        return load_module(url)
    except (DamagedModelFile, OdeonError) as error:
        raise ConfigError(f"model: {error}") from error
    except (KeyError, TypeError, RuntimeError) as error:
        raise ConfigError(f"model: {url} is not a checkpoint of an odeon-job model ({error})") from error


def _with_source(module: SegmentationModule, url: str) -> TrainedModel:
    config = upgrade_config(json.loads(module.hparams.get("config_json") or "{}"), url)
    if "data_source" not in config:
        raise ConfigError(
            f"model: {url} does not say how its images were read (a checkpoint without its configuration)"
        )
    return TrainedModel(module, DataSource.model_validate(config["data_source"]), url)


def _from_pth(url: str) -> TrainedModel:
    """A network's weights and the configuration of the run that wrote them (``config.json`` beside the file or in
    the folder above): the number of bands is the first convolution's."""
    for folder in (storage.parent(url), storage.parent(storage.parent(url))):
        config_url = storage.join(folder, "config.json")
        if storage.exists(config_url):
            break
    else:
        raise ConfigError(f"model: {url} is a .pth without its run's config.json beside it (or in the folder above)")
    config: dict[str, Any] = json.loads(storage.read_text(config_url))
    state = read_state_dict(url, "model")
    convolutions = [tensor for tensor in state.values() if tensor.ndim == 4]
    if not convolutions:
        raise ConfigError(f"model: {url} holds no convolution weights")
    source = DataSource.model_validate(config["data_source"])
    labels = source.class_labels or [f"class {i}" for i in range(1, convolutions[-1].shape[0] + 1)]
    spec = {
        "image_bands": source.image_bands or list(range(1, convolutions[0].shape[1] + 1)),
        "mask_bands": source.mask_bands or list(range(1, len(labels) + 1)),
        "class_labels": labels,
        "mask_encoding": "one_hot",
        "image_max_value": source.image_max_value,
        "resolution": split_resolutions(source),
    }
    module = SegmentationModule(**module_arguments(config, spec))
    try:
        module.model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(f"model: {url} does not fit the model of {config_url}: {error}") from error
    return TrainedModel(module.eval(), source, url)


def _mlflow_checkpoint(uri: str) -> str:
    """The checkpoint inside the MLflow model ``uri``, downloaded (a model is a few files)."""
    import mlflow

    try:
        folder = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as error:  # noqa: BLE001 - MLflow raises its own and its stores' errors
        raise ConfigError(f"model: {uri}: {str(error).splitlines()[0]}") from error
    found = glob.glob(os.path.join(folder, "**", MLFLOW_CHECKPOINT), recursive=True)
    if not found:
        raise ConfigError(
            f"model: {uri} holds no {MLFLOW_CHECKPOINT} (a model logged by an earlier odeon-job): predict from its "
            "run folder or its checkpoint"
        )
    try:
        load_plain(found[0])
    except DamagedModelFile as error:
        raise ConfigError(f"model: {uri}: {error}") from error
    return found[0]
