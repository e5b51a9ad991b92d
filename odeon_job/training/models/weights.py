"""Initial weights from a path or URL the user names: never downloaded from a hub.

Files load with ``torch.load(..., weights_only=True)``: plain tensors and containers only, so a weights
file cannot run code. ``init_weights`` fills the whole model from a state dict or a checkpoint, ours
or ODEON's (its ``.pth`` and ``.ckpt``, recognised by their layer names and translated by
:mod:`odeon_job.training.models.odeon_names`); ``encoder_weights`` fills a resnet or deeplab encoder from a
torchvision ImageNet-style state dict (or ODEON's model of that kind), its first convolution adapted
to the number of bands.
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from odeon_job.config import TrainSetup, catalog
from odeon_job.errors import ConfigError, StorageError
from odeon_job.storage.model_files import load_plain
from odeon_job.training.models.odeon_names import (
    MalformedWeights,
    from_odeon,
    odeon_architecture,
    odeon_unet_upsampling,
)

log = logging.getLogger("odeon")

#: Prefix of the network's weights in our checkpoints (the LightningModule's ``model`` attribute).
CHECKPOINT_PREFIX = "model."


def read_state_dict(url: str, key: str) -> dict[str, torch.Tensor]:
    """The tensors of the state dict or Lightning checkpoint at ``url`` (``key``: what it is, for errors)."""
    try:
        loaded = load_plain(url)
    except StorageError as error:
        raise ConfigError(f"{key}: {error}") from error
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):  # a Lightning checkpoint
        loaded = {
            k[len(CHECKPOINT_PREFIX) :]: v for k, v in loaded["state_dict"].items() if k.startswith(CHECKPOINT_PREFIX)
        }
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ConfigError(f"{key}: {url} holds no state dict (a mapping of names to tensors)")
    return loaded


def architecture_of(state: dict[str, torch.Tensor], key: str, url: str) -> str | None:
    """ODEON's architecture of a state dict read from ``url`` (``key``: the configuration's), None for ours; damaged
    ODEON weights are refused by name."""
    try:
        return odeon_architecture(state)
    except MalformedWeights as error:
        raise ConfigError(f"{key}: {url} holds ODEON weights that cannot be a trained network: {error}") from None


def load_init_weights(model: nn.Module, url: str, state: dict[str, torch.Tensor] | None = None) -> None:
    """Copy every tensor of ``url`` (or of ``state``, read from it) whose name and shape fit ``model``; log
    what was left as initialised (e.g. the classifier when the number of classes differs). Nothing fitting
    is an error."""
    state = state if state is not None else read_state_dict(url, "train_setup.init_weights")
    own = model.state_dict()
    origin = architecture_of(state, "train_setup.init_weights", url)
    if origin is not None:
        translation = from_odeon(state, origin, list(own))
        state = translation.state
        log.info(
            "init_weights: %s holds ODEON %s weights: %d tensor(s) translated to this model's names%s",
            url,
            origin,
            len(state),
            f"; not used: {_listed(translation.unused)}" if translation.unused else "",
        )
        if translation.note:
            log.warning("init_weights: %s", translation.note)
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise ConfigError(
            f"train_setup.init_weights: no tensor of {url} fits this model (its first keys: "
            f"{', '.join(list(state)[:3]) or 'none'}; the model's: {', '.join(list(own)[:3])})"
            + (f"; it holds ODEON {origin} weights" if origin else "")
        )
    model.load_state_dict(fitting, strict=False)
    left = [k for k in own if k not in fitting]
    log.info("init_weights: %d of %d tensors loaded from %s", len(fitting), len(own), url)
    if left:
        log.warning(
            "init_weights: %d tensor(s) not in %s or of another shape, left as initialised: %s",
            len(left),
            url,
            _listed(left),
        )


#: ``encoder_weights`` naming torchvision's ImageNet weights of the model's encoder.
IMAGENET = "imagenet"


def encoder_weights_file(model_name: str, encoder_weights: str | None) -> str | None:
    """Where ``encoder_weights`` are read from: the path or URL given, or for ``"imagenet"`` the file torchvision
    keeps in its cache (``$TORCH_HOME/hub/checkpoints``), which must be there: nothing is downloaded."""
    if encoder_weights is None or encoder_weights.lower() != IMAGENET:
        return encoder_weights
    enum_name = catalog.MODELS[model_name].imagenet_weights
    if enum_name is None:
        raise ConfigError(f'train_setup.encoder_weights: "imagenet": {model_name} has no pretrainable encoder')
    import torchvision

    url = getattr(torchvision.models, enum_name).DEFAULT.url
    folder = os.path.join(torch.hub.get_dir(), "checkpoints")
    path = os.path.join(folder, os.path.basename(url))
    if not os.path.isfile(path):
        raise ConfigError(
            f'train_setup.encoder_weights: "imagenet" for {model_name} reads torchvision\'s {os.path.basename(url)} '
            f"from {folder}, which does not hold it (nothing is downloaded at run time): fetch {url} there, or set "
            "TORCH_HOME to the folder whose hub/checkpoints holds it"
        )
    return path


def _listed(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" ... ({len(names)} in all)" if len(names) > shown else "")


def load_encoder_weights(model: nn.Module, url: str, state: dict[str, torch.Tensor] | None = None) -> None:
    """Fill the encoder of a resnet or deeplab model from a torchvision state dict (``state``, read from ``url``)."""
    state = state if state is not None else read_state_dict(url, "train_setup.encoder_weights")
    origin = architecture_of(state, "train_setup.encoder_weights", url)
    if origin == "resnet":  # its encoder is torchvision's ResNet, as ours
        state = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    elif origin == "deeplab":  # its backbone is torchvision's MobileNetV2 features, as ours
        state = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.features.")}
    elif origin is not None:
        raise ConfigError(
            f"train_setup.encoder_weights: {url} holds ODEON {origin} weights, which have no "
            "pretrainable encoder; use init_weights for them"
        )
    loader = getattr(model, "load_encoder_state_dict", None)
    if loader is None:
        raise ConfigError("train_setup.encoder_weights: this model has no pretrainable encoder")
    try:
        unused = loader(state)
    except (RuntimeError, KeyError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(f"train_setup.encoder_weights: {url} does not fit the encoder: {reason}") from error
    log.info(
        "encoder_weights: encoder loaded from %s%s (unused: %s)",
        url,
        f" (ODEON {origin} weights)" if origin else "",
        ", ".join(unused[:4]) or "none",
    )


def fit_to_weights(setup: TrainSetup, state: dict[str, torch.Tensor]) -> TrainSetup:
    """``setup`` with the model parameters ODEON's ``init_weights`` (``state``) were trained with, so the model
    predicts what it predicted in ODEON: its U-Nets interpolate with ``align_corners=True`` and upsample
    bilinearly unless trained ``deterministic`` (a transposed convolution). A parameter the user set is kept
    when it agrees, and refused when it contradicts the weights; a model of another kind is refused."""
    origin = architecture_of(state, "train_setup.init_weights", str(setup.init_weights))
    if origin is None:
        return setup
    fits = setup.model_name == origin or (origin == "resnet" and setup.model_name.startswith("resnet"))
    if not fits:
        raise ConfigError(
            f"train_setup.init_weights: {setup.init_weights} holds ODEON {origin} weights, but "
            f"train_setup.model_name is {setup.model_name}"
        )
    if origin not in ("unet", "lightunet"):
        return setup
    params, chosen = setup.model_params, setup.model_params.model_fields_set
    upsampling = odeon_unet_upsampling(state)
    if "upsampling" in chosen and params.upsampling != upsampling:
        raise ConfigError(
            f"train_setup.model_params.upsampling: {params.upsampling}, but the ODEON weights of "
            f"{setup.init_weights} were trained with {upsampling} upsampling"
        )
    align = upsampling == "bilinear"
    if "align_corners" in chosen and params.align_corners != align:
        log.warning(
            "init_weights: ODEON interpolated these weights with align_corners=%s; "
            "model_params.align_corners %s is kept as you set it",
            align,
            params.align_corners,
        )
        align = params.align_corners
    if (params.upsampling, params.align_corners) != (upsampling, align):
        log.info(
            "init_weights: ODEON %s weights: model_params.upsampling %s, align_corners %s, as ODEON",
            origin,
            upsampling,
            str(align).lower(),
        )
    fitted = params.model_copy(update={"upsampling": upsampling, "align_corners": align})
    return setup.model_copy(update={"model_params": fitted})
