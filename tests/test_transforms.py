from __future__ import annotations

import pytest
import torch

from odeon_job.config import config_from_dict
from odeon_job.data.transforms import InputScaling, Radiometry, Rotation, Rotation90, build_transform, scaling_arguments

from conftest import make_config


def _pair(height: int = 32, width: int = 32, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """An image whose band 0 encodes the mask's class (value/10): alignment is visible in the data."""
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros(height, width, dtype=torch.int64)
    for _ in range(6):
        y, x = (
            torch.randint(0, height - 8, (1,), generator=generator),
            torch.randint(0, width - 8, (1,), generator=generator),
        )
        mask[y : y + 8, x : x + 10] = torch.randint(1, classes, (1,), generator=generator)
    image = torch.stack(
        [mask.float() / 10, torch.rand(height, width, generator=generator), torch.full((height, width), 0.5)]
    )
    return image, mask


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_same_generator_seed_gives_the_same_augmentation() -> None:
    image, mask = _pair()
    compose = build_transform(
        "train",
        config_from_dict(
            make_config(
                "x.csv", "o", data_source={"data_augmentation": {"train": ["rotation90", "rotation", "radiometry"]}}
            )
        ).data_source,
        1.0,
    )
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
    changed = sum(
        not torch.equal(Radiometry()(image, torch.zeros(16, 16, dtype=torch.int64), generator)[0], image)
        for _ in range(200)
    )
    assert 150 < changed < 200  # 1 - 0.5**3 = 87.5 % of draws change something


def test_radiometry_works_on_the_0_1_scale_of_raw_images() -> None:
    raw = torch.full((3, 16, 16), 200, dtype=torch.uint8)
    changed = [
        Radiometry(scale=255.0)(raw, torch.zeros(16, 16, dtype=torch.uint8), _generator(seed))[0] for seed in range(6)
    ]
    assert all(image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 255.0 for image in changed)
    assert any(not torch.allclose(image, raw.float()) for image in changed)
    # Gamma alone (noise and hue off): 200/255 raised to the drawn gamma, back in raw units.
    answers = iter([True, False, False])  # gamma yes, hue no, noise no
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("odeon_job.data.transforms._chance", lambda p, generator: next(answers))
        patch.setattr("odeon_job.data.transforms._uniform", lambda low, high, generator: 2.0)
        gamma, _ = Radiometry(scale=255.0)(raw, torch.zeros(16, 16, dtype=torch.uint8), _generator(0))
    assert gamma[0, 0, 0].item() == pytest.approx((200 / 255) ** 2 * 255, rel=1e-5)


def test_rotation_and_rotation90_keep_uint8_tiles_or_give_float32() -> None:
    image = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=_generator(1))
    mask = torch.zeros(16, 16, dtype=torch.uint8)
    assert Rotation90()(image, mask, _generator(0))[0].dtype == torch.uint8
    rotated, rotated_mask = Rotation()(image, mask, _generator(0))
    assert rotated.dtype == torch.float32 and rotated_mask.dtype == torch.uint8
    assert rotated.max() <= 255.0 and rotated.min() >= 0.0


def test_input_scaling_scales_then_normalises_per_band_and_batch() -> None:
    scaling = InputScaling(255.0, [0.5, 0.2], [0.1, 0.4])
    raw = torch.tensor([153, 102], dtype=torch.uint8)[:, None, None].expand(2, 4, 4)  # 0.6 and 0.4
    out = scaling(raw)
    assert out.dtype == torch.float32 and out[:, 0, 0].tolist() == pytest.approx([1.0, 0.5], abs=1e-6)
    batch = scaling(raw[None].repeat(3, 1, 1, 1))
    assert batch.shape == (3, 2, 4, 4) and torch.allclose(batch[2], out)
    assert scaling.unit_from_input(out)[:, 0, 0].tolist() == pytest.approx([0.6, 0.4])  # what the network saw
    assert InputScaling(10000.0)(torch.full((1, 2, 2), 5000.0)).unique().tolist() == [0.5]  # no statistics: 0-1
    assert "weight" not in scaling.state_dict()  # rebuilt from the configuration, not kept in checkpoints


def test_augmentations_apply_to_train_only_and_scaling_uses_the_split_statistics() -> None:
    source = config_from_dict(
        make_config(
            "x.csv",
            "o",
            data_source={
                "data_augmentation": {"train": ["rotation90", "radiometry"]},
                "normalization_weights": {
                    "train": {"mean": [0.5] * 3, "std": [0.5] * 3},
                    "val": {"mean": [0.25] * 3, "std": [0.25] * 3},
                },
            },
        )
    ).data_source
    train = build_transform("train", source, 255.0)
    assert [type(t).__name__ for t in train.transforms] == ["Rotation90", "Radiometry"]
    assert train.transforms[1].scale == 255.0
    assert build_transform("val", source, 255.0).transforms == []
    one = torch.full((3, 1, 1), 255, dtype=torch.uint8)
    assert InputScaling(**scaling_arguments("train", source, 255.0))(one).flatten().tolist() == pytest.approx([1.0] * 3)
    assert InputScaling(**scaling_arguments("val", source, 255.0))(one).flatten().tolist() == pytest.approx([3.0] * 3)
    # No test statistics: train's.
    assert InputScaling(**scaling_arguments("test", source, 255.0))(one).flatten().tolist() == pytest.approx([1.0] * 3)
