"""Initial weights from a path or URL the user names: never downloaded from a hub.

Files load with ``torch.load(..., weights_only=True)``: plain tensors and containers only, so a weights
file cannot run code. ``init_weights`` fills the whole model from a state dict or one of our
checkpoints; ``encoder_weights`` fills a resnet or deeplab encoder from a torchvision ImageNet-style
state dict, its first convolution adapted to the number of bands.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from odeon_job.errors import ConfigError, StorageError
from odeon_job.model_files import load_plain

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
        loaded = {k[len(CHECKPOINT_PREFIX):]: v for k, v in loaded["state_dict"].items()
                  if k.startswith(CHECKPOINT_PREFIX)}
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ConfigError(f"{key}: {url} holds no state dict (a mapping of names to tensors)")
    return loaded


def load_init_weights(model: nn.Module, url: str, state: dict[str, torch.Tensor] | None = None) -> None:
    """Copy every tensor of ``url`` (or of ``state``, read from it) whose name and shape fit ``model``; log
    what was left as initialised (e.g. the classifier when the number of classes differs). Nothing fitting
    is an error."""
    state = state if state is not None else read_state_dict(url, "train_setup.init_weights")
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not fitting:
        raise ConfigError(f"train_setup.init_weights: no tensor of {url} fits this model (its first keys: "
                          f"{', '.join(list(state)[:3]) or 'none'}; the model's: {', '.join(list(own)[:3])})")
    model.load_state_dict(fitting, strict=False)
    left = [k for k in own if k not in fitting]
    log.info("init_weights: %d of %d tensors loaded from %s", len(fitting), len(own), url)
    if left:
        log.warning("init_weights: %d tensor(s) not in %s or of another shape, left as initialised: %s%s",
                    len(left), url, ", ".join(left[:5]), " ..." if len(left) > 5 else "")


def load_encoder_weights(model: nn.Module, url: str, state: dict[str, torch.Tensor] | None = None) -> None:
    """Fill the encoder of a resnet or deeplab model from a torchvision state dict (``state``, read from ``url``)."""
    state = state if state is not None else read_state_dict(url, "train_setup.encoder_weights")
    loader = getattr(model, "load_encoder_state_dict", None)
    if loader is None:
        raise ConfigError("train_setup.encoder_weights: this model has no pretrainable encoder")
    try:
        unused = loader(state)
    except (RuntimeError, KeyError) as error:
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(f"train_setup.encoder_weights: {url} does not fit the encoder: {reason}") from error
    log.info("encoder_weights: encoder loaded from %s (unused: %s)", url, ", ".join(unused[:4]) or "none")
