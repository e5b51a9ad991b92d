"""Every name the configuration accepts for a model, loss, optimizer and scheduler, and the options each
one uses: the one place to add one (then its builder, under the same name).

torch-free: the schema, ``odeon validate`` and ``--help`` read it. The configuration's ``Literal``s and
its checks of which option applies to which model or loss are derived from here; the builders
(``models.MODELS``, ``losses.LOSSES``, ``optimizers.OPTIMIZERS`` / ``SCHEDULERS``) are keyed by these names, and
a test checks that both sides hold the same ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Model:
    #: The ``train_setup.model_params`` keys it uses.
    params: tuple[str, ...]
    #: Whether ``encoder_weights`` (a torchvision ImageNet-style state dict) fills its encoder.
    pretrainable_encoder: bool = False
    #: The torchvision weights enum whose ``DEFAULT`` ImageNet weights ``encoder_weights: "imagenet"`` names.
    imagenet_weights: str | None = None
    #: Whether it has ODEON's U-Net layer names (``init_weights`` translation, ``odeon_pth`` exports).
    odeon_u_net: bool = False


@dataclass(frozen=True)
class Loss:
    #: The ``train_setup.loss_params`` keys it uses.
    params: tuple[str, ...] = ()
    #: Probabilities by softmax over classes (else a sigmoid per class).
    softmax: bool = True
    #: Whether ``class_imbalance`` weights it.
    class_weights: bool = False


#: The names of the figures over all classes in every metric name (``Average/IoU``, ``Overall/Accuracy``): no class
#: label may take one, or its own figures would be written over them.
SUMMARY_NAMES = ("Average", "Overall")


def label_problem(labels: Iterable[str]) -> str | None:
    """Why ``labels`` cannot name classes, or None: each is part of every metric name (``<label>/IoU``), a table
    row, a style entry and log lines, so it is visible, on one line, and not one of :data:`SUMMARY_NAMES`."""
    for label in labels:
        if not label.strip() or not label.isprintable():
            return f"{label!r}: a class label is a name of visible characters on one line"
        if label in SUMMARY_NAMES:
            return f'"{label}" names the figures over all classes ({label}/IoU...): give the class another label'
    return None


_U_NET = ("upsampling", "align_corners")

MODELS: dict[str, Model] = {
    "unet": Model(_U_NET, odeon_u_net=True),
    "lightunet": Model(_U_NET, odeon_u_net=True),
    **{
        f"resnet{depth}": Model(_U_NET, pretrainable_encoder=True, imagenet_weights=f"ResNet{depth}_Weights")
        for depth in (18, 34, 50, 101, 152)
    },
    "deeplab": Model(("output_stride",), pretrainable_encoder=True, imagenet_weights="MobileNet_V2_Weights"),
}

LOSSES: dict[str, Loss] = {
    "ce": Loss(class_weights=True),
    "bce": Loss(softmax=False),
    "focal": Loss(("gamma", "alpha")),
    "combo": Loss(("bce_weight", "jaccard_weight"), softmax=False),
}

OPTIMIZERS = ("adam", "radam", "adamax", "sgd", "rmsprop", "adamw")
SCHEDULERS = ("reducelronplateau", "cycliclr", "cosineannealinglr", "cosineannealingwarmrestarts")


def users_of(key: str, entries: dict[str, Model] | dict[str, Loss]) -> tuple[str, ...]:
    """The names whose entry uses the option ``key``."""
    return tuple(name for name, entry in entries.items() if key in entry.params)


def spoken(names: tuple[str, ...] | list[str]) -> str:
    """``a, b, c or d``, for descriptions."""
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)
