from __future__ import annotations

import pytest
import torch

from odeon_job.config import config_from_dict
from odeon_job.data.transforms import Normalize, Radiometry, Rotation, Rotation90, build_transform

from conftest import make_config


def _pair(height: int = 32, width: int = 32, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose band 0 encodes the mask's class (value/10): alignment is visible in the data."""
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(height, width, dtype=torch.int64)
    for _ in range(6):
        y, x = torch.randint(0, height - 8, (1,), generator=generator), torch.randint(0, width - 8, (1,),
                                                                                    generator=generator)
        mask[y:y + 8, x:x + 10] = torch.randint(1, classes, (1,), generator=generator)
    image = torch.stack([mask.float() / 10, torch.rand(height, width, generator=generator),
                         torch.full((height, width), 0.5)])
    return image, mask


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_same_generator_seed_gives_the_same_augmentation() -> None:
    image, mask = _pair()
    compose = build_transform("train", config_from_dict(make_config("x.csv", "o", data_source={
        "data_augmentation": {"train": ["rotation90", "rotation", "radiometry"]}})).data_source)
    first, second = compose(image, mask, _generator(7)), compose(image, mask, _generator(7))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(compose(image, mask, _generator(8))[0], first[0])


@pytest.mark.parametrize("seed", range(8))
def test_rotation90_moves_image_and_mask_together(seed: int) -> None:
    image, mask = _pair()
    rotated, rotated_mask = Rotation90()(image, mask, _generator(seed))
    assert torch.equal((rotated[0] * 10).round().long(), rotated_mask)
    k = next(k for k in range(4) if torch.equal(torch.rot90(mask, k), rotated_mask))
    assert torch.equal(rotated, torch.rot90(image, k, dims=(-2, -1)))


def test_rotation90_draws_all_four_angles_and_keeps_non_square_tiles_shape() -> None:
    image, mask = _pair()
    generator = _generator(0)
    rotations = [Rotation90()(image, mask, generator)[1] for _ in range(40)]
    seen = {next(k for k in range(4) if torch.equal(torch.rot90(mask, k), rotated)) for rotated in rotations}
    assert seen == {0, 1, 2, 3}
    image, mask = _pair(16, 32)
    for _ in range(10):
        rotated, rotated_mask = Rotation90()(image, mask, generator)
        assert rotated.shape == (3, 16, 32) and rotated_mask.shape == (16, 32)


@pytest.mark.parametrize("seed", range(6))
def test_rotation_keeps_image_and_mask_aligned(seed: int) -> None:
    image, mask = _pair(40, 40)
    rotated, rotated_mask = Rotation()(image, mask, _generator(seed))
    assert rotated.shape == image.shape and rotated_mask.shape == mask.shape
    assert rotated_mask.dtype == torch.int64 and set(rotated_mask.unique().tolist()) <= set(mask.unique().tolist())
    # The image is interpolated (bilinear), the mask is not: they differ only along class edges.
    agree = ((rotated[0] * 10).round().long() == rotated_mask).float().mean().item()
    assert agree > 0.9
    assert not torch.equal(rotated_mask, mask)  # it did rotate


def test_rotation_by_a_known_angle_matches_rot90() -> None:
    image, mask = _pair(32, 32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("odeon_job.data.transforms._uniform", lambda low, high, generator: 90.0)
        rotated, rotated_mask = Rotation()(image, mask, _generator(0))
    quarter = next(k for k in (1, 3) if torch.equal(torch.rot90(mask, k), rotated_mask))
    assert torch.allclose(rotated, torch.rot90(image, quarter, dims=(-2, -1)), atol=1e-5)


@pytest.mark.parametrize("seed", range(6))
def test_radiometry_changes_the_image_only_and_stays_in_range(seed: int) -> None:
    image, mask = _pair()
    image = torch.cat([image, torch.rand(1, 32, 32)])  # a 4th band (e.g. near infrared)
    changed, same_mask = Radiometry()(image.clone(), mask.clone(), _generator(seed))
    assert torch.equal(same_mask, mask)
    assert changed.shape == image.shape and changed.min() >= 0 and changed.max() <= 1


def test_radiometry_applies_each_effect_about_half_the_time() -> None:
    image = torch.full((3, 16, 16), 0.5)
    image[0] = 0.7
    generator = _generator(0)
    changed = sum(not torch.equal(Radiometry()(image, torch.zeros(16, 16, dtype=torch.int64), generator)[0], image)
                  for _ in range(200))
    assert 150 < changed < 200  # 1 - 0.5**3 = 87.5 % of draws change something


def test_normalize() -> None:
    image = torch.full((2, 4, 4), 0.6)
    normalize = Normalize([0.5, 0.2], [0.1, 0.4])
    out, _ = normalize(image, torch.zeros(4, 4, dtype=torch.int64), _generator(0))
    assert out[:, 0, 0].tolist() == pytest.approx([1.0, 1.0])
    assert torch.allclose(normalize.undo(out), image)


def test_augmentations_apply_to_train_only_and_before_normalization() -> None:
    source = config_from_dict(make_config("x.csv", "o", data_source={
        "data_augmentation": {"train": ["rotation90", "radiometry"]},
        "normalization_weights": {"train": {"mean": [0.5] * 3, "std": [0.5] * 3}},
    })).data_source
    train = build_transform("train", source)
    assert [type(t).__name__ for t in train.transforms] == ["Rotation90", "Radiometry", "Normalize"]
    assert [type(t).__name__ for t in build_transform("val", source).transforms] == ["Normalize"]
