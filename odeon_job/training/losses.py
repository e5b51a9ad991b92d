"""Loss name (``train_setup.loss``) → a module taking (logits (B, C, H, W), class indices (B, H, W)).

Pixels whose class index is ``IGNORE_INDEX`` (no selected class, or the mask's nodata) count in no loss:
each loss is a mean over the other pixels, and 0 for a batch that has none (never NaN). Each is computed
from sums over pixels (:class:`SummedLoss`), so a split's loss is that of all its pixels at once.

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


class SummedLoss(nn.Module):
    """A loss computed from sums over pixels (:meth:`sums`), so that the loss of a split is the loss of all its
    scored pixels at once: the sums of its batches (and processes) added up, then :meth:`from_sums`. A mean of
    batch losses would weigh each batch alike (a short last batch as a full one, a batch of rare heavily weighted
    classes as one of common ones), and would change with the batch size and the number of processes."""

    def sums_size(self, n_classes: int) -> int:
        """How many sums :meth:`sums` returns for ``n_classes`` classes."""
        return 2

    def sums(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(k,) float32 sums over the batch's pixels (NaN stays NaN)."""
        raise NotImplementedError

    def from_sums(self, sums: torch.Tensor) -> torch.Tensor:
        """The loss of the pixels whose sums these are (0 when none was scored): by default a numerator over a
        count of terms."""
        return sums[0] / sums[1].clamp(min=torch.finfo(sums.dtype).tiny)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.from_sums(self.sums(logits, target))


def _stacked(*values: torch.Tensor) -> torch.Tensor:
    """Sums as one float32 vector (counts included: never in a half-precision type, even under autocast)."""
    return torch.cat([value.float().reshape(-1) for value in values])


class CrossEntropyLoss(SummedLoss):
    """Cross-entropy, ``weight`` per class: ``sum(w_y * l) / sum(w_y)`` over the pixels not ignored."""

    weight: torch.Tensor | None  # a buffer: it follows the module to its device

    def __init__(self, weight: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)

    def sums(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = F.cross_entropy(logits, target, weight=self.weight, ignore_index=IGNORE_INDEX, reduction="sum")
        valid = target != IGNORE_INDEX
        weights = valid.sum() if self.weight is None else (self.weight[target.clamp(min=0)] * valid).sum()
        return _stacked(total, weights)


class BCELoss(SummedLoss):
    def sums(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return _bce_sums(logits, target)


def _bce_sums(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The binary cross-entropy of every (pixel, class) not ignored, and their number."""
    valid = (target != IGNORE_INDEX)[:, None]
    losses = F.binary_cross_entropy_with_logits(logits, one_hot(target, logits.shape[1]), reduction="none")
    return _stacked((losses * valid).sum(), valid.sum() * logits.shape[1])


class FocalLoss(SummedLoss):
    """Mean over pixels of ``-alpha_t (1 - p_t)^gamma log p_t``, ``p_t`` the softmax probability of the
    true class; ``alpha`` is one weight for all pixels or one per class (none: 1)."""

    alpha: torch.Tensor | None  # a buffer

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None) -> None:
        super().__init__()
        self.gamma = gamma
        self.register_buffer("alpha", torch.tensor(alpha, dtype=torch.float32) if alpha is not None else None)

    def sums(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target != IGNORE_INDEX
        classes = target.clamp(min=0)
        log_p = F.log_softmax(logits, dim=1).gather(1, classes[:, None])[:, 0]
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = loss * (self.alpha[classes] if self.alpha.ndim else self.alpha)
        return _stacked((loss * valid).sum(), valid.sum())


def jaccard_sums(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per class, over the pixels not ignored: Σ P·T, Σ P and Σ T (P the sigmoid probabilities, T the one-hot
    truth): (3 * classes,)."""
    valid = (target != IGNORE_INDEX)[:, None]
    probabilities, truth = torch.sigmoid(logits) * valid, one_hot(target, logits.shape[1])
    dims = (0, 2, 3)
    return _stacked((probabilities * truth).sum(dims), probabilities.sum(dims), truth.sum(dims))


def jaccard_from_sums(sums: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over classes of (|P∩T| + smooth) / (|P∪T| + smooth) (``smooth`` keeps classes absent from both at 1)."""
    intersection, predicted, truth = sums.reshape(3, -1)
    return ((intersection + smooth) / (predicted + truth - intersection + smooth)).mean()


def soft_jaccard(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Mean over classes of (|P∩T| + smooth) / (|P∪T| + smooth), P the sigmoid probabilities and T the
    one-hot truth, summed over the batch's pixels not ignored."""
    return jaccard_from_sums(jaccard_sums(logits, target), smooth)


class ComboLoss(SummedLoss):
    """``bce_weight * BCE + jaccard_weight * (1 - soft Jaccard)``; over a split, both from the split's sums (the
    Jaccard of all its pixels, not a mean of the batches' Jaccards)."""

    def __init__(self, bce_weight: float = 0.75, jaccard_weight: float = 0.25) -> None:
        super().__init__()
        self.bce_weight, self.jaccard_weight = bce_weight, jaccard_weight

    def sums_size(self, n_classes: int) -> int:
        return 2 + 3 * n_classes

    def sums(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.cat([_bce_sums(logits, target), jaccard_sums(logits, target)])

    def from_sums(self, sums: torch.Tensor) -> torch.Tensor:
        bce = super().from_sums(sums[:2])
        return self.bce_weight * bce + self.jaccard_weight * (1 - jaccard_from_sums(sums[2:]))


#: The losses by name (``catalog.LOSSES``): each built from the class weights and loss parameters.
LOSSES: dict[str, Callable[[Sequence[float] | None, LossParams], SummedLoss]] = {
    "ce": lambda weights, params: CrossEntropyLoss(
        torch.tensor(weights, dtype=torch.float32) if weights is not None else None
    ),
    "bce": lambda weights, params: BCELoss(),
    "focal": lambda weights, params: FocalLoss(params.gamma, params.alpha),
    "combo": lambda weights, params: ComboLoss(params.bce_weight, params.jaccard_weight),
}


def build_loss(name: str, class_weights: Sequence[float] | None = None, params: LossParams | None = None) -> SummedLoss:
    """The loss ``name``; ``class_weights`` (``class_imbalance``) apply to the losses the catalog says."""
    return LOSSES[name](class_weights, params or LossParams())
