"""Each loss against values worked out by hand on tensors of one or two pixels."""

from __future__ import annotations

import math

import pytest
import torch

from odeon_job.config import LossParams
from odeon_job.training.losses import build_loss, soft_jaccard

# Two pixels, two classes: pixel A is class 0 with logits (2, 0); pixel B is class 1 with logits (0, 1).
LOGITS = torch.tensor([[[[2.0, 0.0]], [[0.0, 1.0]]]])  # (B=1, C=2, H=1, W=2)
TARGET = torch.tensor([[[0, 1]]])  # (B=1, H=1, W=2)


def _softmax_true(a: float, b: float) -> float:
    """Softmax probability of the first of two logits."""
    return math.exp(a) / (math.exp(a) + math.exp(b))


P_A, P_B = _softmax_true(2, 0), _softmax_true(1, 0)  # probability of the true class at A and B


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_ce() -> None:
    expected = (-math.log(P_A) - math.log(P_B)) / 2
    assert build_loss("ce")(LOGITS, TARGET).item() == pytest.approx(expected)


def test_ce_with_class_imbalance_weights() -> None:
    # torch's weighted mean: sum(w_y * loss) / sum(w_y)
    expected = (1 * -math.log(P_A) + 3 * -math.log(P_B)) / (1 + 3)
    assert build_loss("ce", [1.0, 3.0])(LOGITS, TARGET).item() == pytest.approx(expected)


def test_bce_on_one_hot_targets() -> None:
    # A: one-hot (1, 0) against sigmoid(2), sigmoid(0); B: (0, 1) against sigmoid(0), sigmoid(1).
    terms = [-math.log(_sigmoid(2)), -math.log(1 - _sigmoid(0)), -math.log(1 - _sigmoid(0)), -math.log(_sigmoid(1))]
    assert build_loss("bce")(LOGITS, TARGET).item() == pytest.approx(sum(terms) / 4)


def test_focal_default_gamma_2() -> None:
    expected = ((1 - P_A) ** 2 * -math.log(P_A) + (1 - P_B) ** 2 * -math.log(P_B)) / 2
    assert build_loss("focal")(LOGITS, TARGET).item() == pytest.approx(expected)


def test_focal_with_gamma_0_is_cross_entropy() -> None:
    loss = build_loss("focal", params=LossParams(gamma=0.0))
    assert loss(LOGITS, TARGET).item() == pytest.approx(build_loss("ce")(LOGITS, TARGET).item())


def test_focal_alpha_per_class_and_scalar() -> None:
    base_a, base_b = (1 - P_A) ** 2 * -math.log(P_A), (1 - P_B) ** 2 * -math.log(P_B)
    per_class = build_loss("focal", params=LossParams(alpha=[0.25, 0.75]))
    assert per_class(LOGITS, TARGET).item() == pytest.approx((0.25 * base_a + 0.75 * base_b) / 2)
    scalar = build_loss("focal", params=LossParams(alpha=0.5))
    assert scalar(LOGITS, TARGET).item() == pytest.approx(0.5 * (base_a + base_b) / 2)


def test_soft_jaccard_by_hand() -> None:
    # One pixel of class 0, logits (0, 0): probabilities 0.5 and 0.5, smooth 1.
    logits, target = torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.int64)
    class_0 = (0.5 + 1) / ((0.5 + 1 - 0.5) + 1)  # I = 0.5, U = 0.5 + 1 - 0.5
    class_1 = (0 + 1) / ((0.5 + 0 - 0) + 1)  # I = 0,   U = 0.5
    assert soft_jaccard(logits, target).item() == pytest.approx((class_0 + class_1) / 2)


def test_combo_is_075_bce_plus_025_jaccard_loss() -> None:
    logits, target = torch.zeros(1, 2, 1, 1), torch.zeros(1, 1, 1, dtype=torch.int64)
    jaccard = ((0.5 + 1) / 2 + 1 / 1.5) / 2
    expected = 0.75 * math.log(2) + 0.25 * (1 - jaccard)
    assert build_loss("combo")(logits, target).item() == pytest.approx(expected)
    weighted = build_loss("combo", params=LossParams(bce_weight=0.5, jaccard_weight=0.5))
    assert weighted(logits, target).item() == pytest.approx(0.5 * math.log(2) + 0.5 * (1 - jaccard))


@pytest.mark.parametrize("name", ["ce", "bce", "focal", "combo"])
def test_every_loss_trains_towards_the_truth(name: str) -> None:
    torch.manual_seed(0)
    target = torch.randint(0, 3, (2, 8, 8))
    logits = torch.zeros(2, 3, 8, 8, requires_grad=True)
    loss_fn = build_loss(name)
    first = loss_fn(logits, target).item()
    optimizer = torch.optim.Adam([logits], lr=0.5)
    for _ in range(30):
        optimizer.zero_grad()
        loss_fn(logits, target).backward()
        optimizer.step()
    assert loss_fn(logits, target).item() < first / 2
    assert (logits.argmax(1) == target).float().mean().item() == 1.0


# --- ignored pixels (IGNORE_INDEX: no selected class, or the mask's nodata) count in no loss -------------


@pytest.mark.parametrize(
    ("name", "weights", "params"),
    [
        ("ce", None, None),
        ("ce", [1.0, 3.0], None),
        ("bce", None, None),
        ("focal", None, LossParams(gamma=2.0, alpha=[0.25, 0.75])),
        ("combo", None, None),
    ],
)
def test_an_ignored_pixel_counts_in_no_loss(name: str, weights: list[float] | None, params: LossParams | None) -> None:
    """A third pixel marked ignored, whatever its logits, leaves every loss and its gradient as on the two
    real pixels alone; a batch with only ignored pixels has loss 0, not NaN."""
    from odeon_job.data.masks import IGNORE_INDEX

    loss = build_loss(name, weights, params)
    with_ignored = torch.cat([LOGITS, torch.tensor([[[[-7.0]], [[9.0]]]])], dim=3).requires_grad_()
    target = torch.tensor([[[0, 1, IGNORE_INDEX]]])
    value = loss(with_ignored, target)
    assert value.item() == pytest.approx(loss(LOGITS, TARGET).item())
    value.backward()
    assert torch.equal(with_ignored.grad[..., 2], torch.zeros(1, 2, 1))  # type: ignore[index]
    nothing = loss(LOGITS.clone().requires_grad_(), torch.full_like(TARGET, IGNORE_INDEX))
    assert nothing.item() == 0.0
    nothing.backward()


# --- a split's loss is the loss of all its scored pixels at once -----------------------------------------


@pytest.mark.parametrize(
    ("name", "weights", "params"),
    [
        ("ce", None, None),
        ("ce", [0.2, 1.0, 5.0], None),
        ("bce", None, None),
        ("focal", None, LossParams(gamma=2.0, alpha=[0.25, 0.5, 0.75])),
        ("combo", None, None),
    ],
)
def test_a_split_s_loss_is_its_pixels_loss_whatever_the_batches(
    name: str, weights: list[float] | None, params: LossParams | None
) -> None:
    """Seven tiles of mixed classes and ignored pixels: the batches' sums added up (batches of 1, 3 or 7, in
    two "processes") give the loss computed over all the pixels at once; a mean of batch losses weighted by
    their scored pixels does not (with class weights, rare heavy classes in small batches)."""
    from odeon_job.data.masks import IGNORE_INDEX
    from odeon_job.training.metrics import Sums

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(7, 3, 6, 6, generator=generator) * 2
    target = torch.randint(0, 2, (7, 6, 6), generator=generator)
    target[:2, :4] = 2  # two tiles heavy with the rare, heavily weighted class
    target[torch.rand(7, 6, 6, generator=generator) < 0.2] = IGNORE_INDEX
    loss = build_loss(name, weights, params)
    # All pixels at once: one image, the tiles side by side.
    whole = loss(logits.permute(1, 0, 2, 3).reshape(1, 3, 7 * 6, 6), target.reshape(1, 7 * 6, 6)).item()
    for batch_size in (1, 3, 7):
        processes = [Sums(loss.sums_size(3)), Sums(loss.sums_size(3))]
        for number, start in enumerate(range(0, 7, batch_size)):
            processes[number % 2].update(
                loss.sums(logits[start : start + batch_size], target[start : start + batch_size])
            )
        total = sum(p.compute() for p in processes if p.update_count)  # what the DDP sync adds up
        assert loss.from_sums(total).item() == pytest.approx(whole, rel=1e-6), batch_size
    if name == "ce" and weights:
        batches = [
            (loss(logits[i : i + 1], target[i : i + 1]).item(), int((target[i] != IGNORE_INDEX).sum()))
            for i in range(7)
        ]
        weighted_by_pixels = sum(value * count for value, count in batches) / sum(count for _, count in batches)
        assert abs(weighted_by_pixels - whole) > 0.01  # what the split's loss was before
