"""The best model as an MLflow model: raw pixels in, class probabilities out (the scaling the network was trained
with inside it), logged to the training's run and registered when ``output_setup.registered_model_name`` is set.
Packaging, not logging: :class:`~odeon_job.outputs.loggers.mlflow.MlflowOutput` calls it once the run succeeded."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

import odeon_job
from odeon_job.config import CONFIG_VERSION
from odeon_job.training.models.raw_pixels import RawPixelModel
from odeon_job.training.models.weights import CHECKPOINT_PREFIX, read_state_dict
from odeon_job.training.segmentation_module import SOFTMAX_LOSSES

if TYPE_CHECKING:
    from odeon_job.training.segmentation_module import SegmentationModule

#: The checkpoint an MLflow model of this job carries beside the network (``extra_files``).
MLFLOW_CHECKPOINT = "model.ckpt"


def log_model(
    module: SegmentationModule,
    best_model: str,
    tracking_uri: str,
    run_id: str,
    registered_model_name: str | None,
    model_card: str | None = None,
) -> None:
    """The best val_loss model as an MLflow PyTorch model of raw pixels (see
    :class:`~odeon_job.training.models.raw_pixels.RawPixelModel`), registered when a name is configured, the
    run's ``model_card`` (Markdown) as the registered version's description.

    Saved as a pickled module with odeon_job's code beside it (``code_paths``), so it loads wherever
    torch is installed: torch.export (MLflow's default) fixes the U-Nets' input size to the example's.
    """
    import mlflow
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    network = copy.deepcopy(module.model).cpu().eval()
    network.load_state_dict(read_state_dict(best_model, "the best model"))
    scaling = copy.deepcopy(module.scaling("test")).cpu()
    model = RawPixelModel(network, scaling, softmax=module.loss_name in SOFTMAX_LOSSES).eval()
    channels, classes = module.in_channels, module.n_classes
    dtype = torch.empty(0, dtype=module.raw_image_dtype).numpy().dtype
    signature = ModelSignature(
        inputs=Schema([TensorSpec(dtype, (-1, channels, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes, -1, -1))]),
    )
    example = np.zeros((1, channels, 64, 64), dtype=dtype)
    import torchvision

    requirements = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"torchvision=={torchvision.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
    ]
    with (
        _global_tracking_uri(tracking_uri),
        mlflow.start_run(run_id=run_id, log_system_metrics=False),
        tempfile.TemporaryDirectory(prefix="odeon-model-") as folder,
    ):
        checkpoint = os.path.join(folder, MLFLOW_CHECKPOINT)
        torch.save(model_checkpoint(module, network), checkpoint)
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            signature=signature,
            input_example=example,
            serialization_format="pickle",
            pip_requirements=requirements,
            code_paths=[os.path.dirname(odeon_job.__file__)],
            registered_model_name=registered_model_name,
            extra_files=[checkpoint],
            metadata=model_metadata(module),
        )
        version = getattr(info, "registered_model_version", None)
        if registered_model_name and model_card and version is not None:
            mlflow.MlflowClient(tracking_uri).update_model_version(
                registered_model_name, str(version), description=model_card
            )


def model_checkpoint(module: SegmentationModule, network: torch.nn.Module) -> dict[str, Any]:
    """The smallest checkpoint that rebuilds the model (``load_module``): hyperparameters and weights, no optimizer
    state; ``odeon predict`` and ``odeon evaluate`` take a model URI through it, safely (``weights_only``)."""
    state = {name: tensor.detach().cpu() for name, tensor in module.state_dict().items()}
    state.update({CHECKPOINT_PREFIX + name: tensor.detach().cpu() for name, tensor in network.state_dict().items()})
    return {"hyper_parameters": dict(module.hparams), "state_dict": state, "config_version": CONFIG_VERSION}


def model_metadata(module: SegmentationModule) -> dict[str, Any]:
    """What a served or predicted model needs to be read: its classes, their colours, the bands it takes."""
    source = json.loads(module.hparams.get("config_json") or "{}").get("data_source", {})
    return {
        "class_labels": list(module.class_labels),
        "class_colors": list(module.class_colors),
        "image_bands": source.get("image_bands") or list(range(1, module.in_channels + 1)),
        "image_max_value": source.get("image_max_value"),
        "resolution": source.get("resolution"),
        "patch_size": source.get("patch_size"),
    }


@contextlib.contextmanager
def _global_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent API (needed by ``log_model``) with ``uri``, leaving no trace afterwards:
    ``mlflow.set_tracking_uri`` also writes ``MLFLOW_TRACKING_URI`` into the environment, where the next
    training of this process, and every process it starts, would find it."""
    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        # Back to "not set" (the environment's value or MLflow's default): MLflow takes None, its stubs do not say so.
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        if before is not None:
            os.environ["MLFLOW_TRACKING_URI"] = before
