"""Loss name (``train_setup.loss``) → a module taking (logits (B, C, H, W), class indices (B, H, W)).

Pixels whose class index is ``IGNORE_INDEX`` (no selected class, or the mask's nodata) count in no loss:
each loss is a mean over the other pixels, and 0 for a batch that has none (never NaN).

- ``ce``: cross-entropy, ``class_imbalance`` weighting the classes.
- ``bce``: binary cross-entropy with logits on the one-hot targets (each class a sigmoid).
- ``focal``: multi-class focal loss (Lin et al. 2017) on the softmax: ``-alpha_t (1 - p_t)^gamma log p_t``.
- ``combo``: ``bce_weight * BCE + jaccard_weight * (1 - soft Jaccard)``, 0.75 and 0.25 by default.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from odeon_job.config import LossParams
from odeon_job.data.masks import IGNORE_INDEX


def one_hot(target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, H, W) class indices → (B, C, H, W) float one-hot; an ignored pixel is all zeros."""
    valid = target != IGNORE_INDEX
    encoded = F.one_hot(target.clamp(min=0), n_classes).permute(0, 3, 1, 2).to(torch.float32)
    return encoded * valid[:, None]


def _valid_mean(values: torch.Tensor, valid: torch.Tensor, per_pixel: int = 1) -> torch.Tensor:
    """Mean of ``values`` over the valid pixels (``per_pixel`` values each); 0 when none is valid."""
    return (values * valid).sum() / (valid.sum() * per_pixel).clamp(min=1)


class CrossEntropyLoss(nn.Module):
    """Cross-entropy, ``weight`` per class: ``sum(w_y * l) / sum(w_y)`` over the pixels not ignored."""

    def __init__(self, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = F.cross_entropy(logits, target, weight=self.weight, ignore_index=IGNORE_INDEX, reduction="sum")
        valid = target != IGNORE_INDEX
        if self.weight is None:
            return total / valid.sum().clamp(min=1)
        weights = self.weight[target.clamp(min=0)] * valid
        return total / weights.sum().clamp(min=torch.finfo(weights.dtype).tiny)


class BCELoss(nn.Module):
    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _masked_bce(logits, target)


def _masked_bce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    valid = (target != IGNORE_INDEX)[:, None]
    losses = F.binary_cross_entropy_with_logits(logits, one_hot(target, logits.shape[1]), reduction="none")
    return _valid_mean(losses, valid, per_pixel=logits.shape[1])


class FocalLoss(nn.Module):
    """Mean over pixels of ``-alpha_t (1 - p_t)^gamma log p_t``, ``p_t`` the softmax probability of the
    true class; ``alpha`` is one weight for all pixels or one per class (none: 1)."""

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32) if alpha is not None else None)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE_INDEX
        classes = target.clamp(min=0)
        log_p = F.log_softmax(logits, dim=1).gather(1, classes[:, None])[:, 0]
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = loss * (self.alpha[classes] if self.alpha.ndim else self.alpha)
        return _valid_mean(loss, valid)


def soft_jaccard(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over classes of (|P∩T| + smooth) / (|P∪T| + smooth), P the sigmoid probabilities and T the
    one-hot truth, summed over the batch's pixels not ignored (``smooth`` keeps classes absent from both
    at 1)."""
    valid = (target != IGNORE_INDEX)[:, None]
    probabilities, truth = torch.sigmoid(logits) * valid, one_hot(target, logits.shape[1])
    dims = (0, 2, 3)
    intersection = (probabilities * truth).sum(dims)
    union = probabilities.sum(dims) + truth.sum(dims) - intersection
    return ((intersection + smooth) / (union + smooth)).mean()


class ComboLoss(nn.Module):
    def __init__(self, bce_weight: float = 0.75, jaccard_weight: float = 0.25) -> None:
        super().__init__()
        self.bce_weight, self.jaccard_weight = bce_weight, jaccard_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        bce = _masked_bce(logits, target)
        return self.bce_weight * bce + self.jaccard_weight * (1 - soft_jaccard(logits, target))


#: The losses by name (``catalog.LOSSES``): each built from the class weights and loss parameters.
LOSSES: dict[str, Callable[[Sequence[float] | None, LossParams], nn.Module]] = {
    "ce": lambda weights, params: CrossEntropyLoss(
        torch.tensor(weights, dtype=torch.float32) if weights is not None else None),
    "bce": lambda weights, params: BCELoss(),
    "focal": lambda weights, params: FocalLoss(params.gamma, params.alpha),
    "combo": lambda weights, params: ComboLoss(params.bce_weight, params.jaccard_weight),
}


def build_loss(name: str, class_weights: Sequence[float] | None = None,
               params: LossParams | None = None) -> nn.Module:
    """The loss ``name``; ``class_weights`` (``class_imbalance``) apply to the losses the catalog says."""
    return LOSSES[name](class_weights, params or LossParams())
