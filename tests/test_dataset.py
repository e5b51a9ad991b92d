from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from odeon_job.config import DataSource, config_from_dict
from odeon_job.data.dataset import SegmentationDataset
from odeon_job.data.masks import UINT8_IGNORE, first_argmax
from odeon_job.data.samples import Sample
from odeon_job.data.spec import describe_data
from odeon_job.data.transforms import InputScaling, build_transform, scaling_arguments
from odeon_job.errors import DataError

from conftest import make_config, onehot, write_tif


def _source(**values: Any) -> DataSource:
    return config_from_dict(make_config("unused.csv", "out", data_source=values)).data_source


def _pair(tmp_path: Path, image: np.ndarray, mask: np.ndarray, name: str = "a", **mask_options: Any) -> Sample:
    return Sample(
        write_tif(tmp_path / f"{name}_img.tif", image),
        write_tif(tmp_path / f"{name}_msk.tif", mask, **mask_options),
        "train.csv row 1",
    )


def _item(sample: Sample, split: str = "train", **source: Any) -> dict[str, torch.Tensor]:
    data_source = _source(**source)
    spec = describe_data(data_source, sample)
    return SegmentationDataset([sample], spec, split, build_transform(split, data_source, spec.pixel_scale))[0]


def _network_input(sample: Sample, split: str = "train", **source: Any) -> torch.Tensor:
    """The item's image as the module scales it on its device."""
    data_source = _source(**source)
    scale = describe_data(data_source, sample).pixel_scale
    return InputScaling(**scaling_arguments(split, data_source, scale))(_item(sample, split, **source)["image"])


@pytest.fixture
def bands5(tmp_path: Path) -> Sample:
    """A 5-band image whose band b holds the value 10*b everywhere, and a 4-class one-hot mask."""
    image = np.stack([np.full((8, 8), 10 * b, np.uint8) for b in range(1, 6)])
    classes = np.arange(64).reshape(8, 8) % 4
    return _pair(tmp_path, image, onehot(classes, 4))


def test_band_selection_is_one_based_and_ordered_as_listed(bands5: Sample) -> None:
    item = _item(bands5, image_bands=[5, 1, 3])
    assert item["image"].shape == (3, 8, 8)
    assert item["image"].dtype == torch.uint8  # raw: scaled on the device, by the module
    assert item["image"][:, 0, 0].tolist() == [50, 10, 30]
    assert _network_input(bands5, image_bands=[5, 1, 3])[:, 0, 0].tolist() == pytest.approx(
        [50 / 255, 10 / 255, 30 / 255]
    )
    assert _item(bands5)["image"].shape == (5, 8, 8)  # all bands when none are listed


def test_one_hot_mask_gives_the_argmax_of_the_selected_bands(bands5: Sample) -> None:
    expected = torch.from_numpy((np.arange(64).reshape(8, 8) % 4).astype(np.uint8))
    item = _item(bands5)
    assert item["mask"].dtype == torch.uint8  # int64 only on the device, in the module
    assert torch.equal(item["mask"], expected)
    # Bands 2 and 4 only: class 1 becomes 0, class 3 becomes 1; pixels of classes 0 and 2 have no band on.
    subset = _item(bands5, mask_bands=[2, 4])["mask"]
    assert torch.equal(subset[expected == 1], torch.zeros_like(subset[expected == 1]))
    assert torch.equal(subset[expected == 3], torch.ones_like(subset[expected == 3]))
    # Pixels of classes 0 and 2 belong to no selected class: ignored, never relabelled as the first one.
    assert bool((subset[(expected == 0) | (expected == 2)] == UINT8_IGNORE).all())


def test_one_hot_masks_of_0_255_work_like_0_1(tmp_path: Path) -> None:
    classes = np.arange(36).reshape(6, 6) % 3
    sample = _pair(tmp_path, np.zeros((3, 6, 6), np.uint8), onehot(classes, 3, on=255))
    assert torch.equal(_item(sample)["mask"], torch.from_numpy(classes.astype(np.uint8)))


def test_single_band_mask_holds_class_indices(tmp_path: Path) -> None:
    classes = (np.arange(36).reshape(6, 6) % 3).astype(np.uint8)
    sample = _pair(tmp_path, np.zeros((3, 6, 6), np.uint8), classes[None])
    item = _item(sample, class_labels=["a", "b", "c"])
    assert torch.equal(item["mask"], torch.from_numpy(classes))


def test_first_argmax_is_numpys_argmax() -> None:
    raw = np.random.default_rng(0).integers(0, 3, (6, 32, 32)).astype(np.uint8)  # many ties: the first wins
    indices, largest = first_argmax(raw)
    assert np.array_equal(indices, raw.argmax(axis=0)) and np.array_equal(largest, raw.max(axis=0))
    assert first_argmax(raw, np.uint8)[0].dtype == np.uint8


def test_class_index_outside_the_labels_is_named(tmp_path: Path) -> None:
    classes = np.full((1, 6, 6), 7, np.uint8)
    sample = _pair(tmp_path, np.zeros((3, 6, 6), np.uint8), classes)
    with pytest.raises(DataError, match=r"row 1: .*a_msk.tif holds class index 7, outside 0..2"):
        _item(sample, class_labels=["a", "b", "c"])


def test_single_band_mask_without_labels_is_refused(tmp_path: Path) -> None:
    sample = _pair(tmp_path, np.zeros((3, 6, 6), np.uint8), np.zeros((1, 6, 6), np.uint8))
    with pytest.raises(
        DataError,
        match=r"data_source.class_labels: .*_msk\.tif has a single band, read as class "
        r"indices 0..n-1: class_labels must",
    ):
        _item(sample)


def test_normalization_uses_the_split_weights_else_train_s(bands5: Sample) -> None:
    weights = {"train": {"mean": [0.1], "std": [0.5]}, "val": {"mean": [0.2], "std": [0.25]}}
    value = 10 / 255  # band 1
    train = _network_input(bands5, "train", image_bands=[1], normalization_weights=weights)
    val = _network_input(bands5, "val", image_bands=[1], normalization_weights=weights)
    test = _network_input(bands5, "test", image_bands=[1], normalization_weights=weights)
    assert train[0, 0, 0].item() == pytest.approx((value - 0.1) / 0.5)
    assert val[0, 0, 0].item() == pytest.approx((value - 0.2) / 0.25)
    assert test[0, 0, 0].item() == pytest.approx((value - 0.1) / 0.5)  # no test weights: train's


def test_without_weights_images_are_scaled_to_0_1(tmp_path: Path) -> None:
    image = np.array([0, 51, 255], np.uint8).reshape(1, 1, 3).repeat(3, 0)
    sample = _pair(tmp_path, image, onehot(np.zeros((1, 3), np.uint8), 2))
    assert _network_input(sample)[0, 0].tolist() == pytest.approx([0.0, 0.2, 1.0])


def test_uint16_images_need_image_max_value(tmp_path: Path) -> None:
    image = np.full((4, 6, 6), 5000, np.uint16)
    sample = _pair(tmp_path, image, onehot(np.zeros((6, 6), np.uint8), 2))
    with pytest.raises(DataError, match=r"row 1: .*a_img.tif is uint16, .*set data_source.image_max_value"):
        _item(sample)
    item = _item(sample, image_max_value=10000)["image"]
    assert item.dtype == torch.float32 and item.max().item() == 5000  # any type with a scale: float32, raw
    assert _network_input(sample, image_max_value=10000).max().item() == pytest.approx(0.5)


def test_band_outside_the_file_is_named(bands5: Sample) -> None:
    with pytest.raises(
        DataError,
        match=r"row 1: .*a_img.tif has 5 band\(s\); data_source.image_bands asks for "
        "band 6",
    ):
        _item(bands5, image_bands=[1, 6])
    with pytest.raises(DataError, match=r"a_msk.tif has 4 band\(s\); data_source.mask_bands asks for band 9"):
        _item(bands5, mask_bands=[1, 9])


def test_image_and_mask_of_different_sizes_are_refused(tmp_path: Path) -> None:
    sample = _pair(tmp_path, np.zeros((3, 8, 8), np.uint8), onehot(np.zeros((6, 8), np.uint8), 2))
    with pytest.raises(DataError, match=r"row 1: image .*a_img.tif is 8x8 pixels but mask .*a_msk.tif is 8x6"):
        _item(sample)


def test_missing_and_unreadable_files_are_named(tmp_path: Path) -> None:
    sample = Sample(str(tmp_path / "nope.tif"), str(tmp_path / "nope_m.tif"), "train.csv row 4")
    with pytest.raises(DataError, match=r"^train.csv row 4: .*nope.tif not found$"):
        _item(sample)
    (tmp_path / "junk.tif").write_text("not a tiff")
    junk = Sample(str(tmp_path / "junk.tif"), str(tmp_path / "junk.tif"), "train.csv row 5")
    with pytest.raises(DataError, match=r"^train.csv row 5: cannot open .*junk.tif"):
        _item(junk)


def test_resolution_resamples_image_and_mask_together(tmp_path: Path) -> None:
    classes = np.zeros((8, 8), np.uint8)
    classes[:, 4:] = 1
    sample = _pair(tmp_path, np.zeros((3, 8, 8), np.uint8), onehot(classes, 2))  # 0.2 m pixels
    item = _item(sample, resolution={"train": 0.4})
    assert item["image"].shape == (3, 4, 4) and item["mask"].shape == (4, 4)
    assert item["mask"][:, :2].eq(0).all() and item["mask"][:, 2:].eq(1).all()
    assert _item(sample, "val", resolution={"train": 0.4})["mask"].shape == (8, 8)  # val: native


# --- ignored pixels: no selected class, the mask's nodata; non-finite images ----------------------------


def test_a_one_hot_pixel_with_no_class_on_is_ignored_not_class_one(tmp_path: Path) -> None:
    """A pixel no band covers (all zeros) was the argmax of zeros: the first class, silently."""
    classes = np.arange(36).reshape(6, 6) % 3
    mask = onehot(classes, 3)
    mask[:, 0, :] = 0  # the first row: no class
    item = _item(_pair(tmp_path, np.zeros((3, 6, 6), np.uint8), mask))
    assert bool((item["mask"][0] == UINT8_IGNORE).all())
    assert torch.equal(item["mask"][1:], torch.from_numpy(classes[1:].astype(np.uint8)))


def test_one_hot_nodata_counts_as_off(tmp_path: Path) -> None:
    classes = np.arange(36).reshape(6, 6) % 3
    mask = onehot(classes, 3)
    mask[:, :, 0] = 200  # every band holds the file's nodata value in the first column
    item = _item(_pair(tmp_path, np.zeros((3, 6, 6), np.uint8), mask, nodata=200), mask_nodata="file")
    assert bool((item["mask"][:, 0] == UINT8_IGNORE).all())
    assert torch.equal(item["mask"][:, 1:], torch.from_numpy(classes[:, 1:].astype(np.uint8)))


@pytest.mark.parametrize(
    ("file_nodata", "setting", "ignored"),
    [
        (9, "file", True),  # the file's own nodata
        (None, 9, True),  # a configured value
        (9, "none", False),  # nodata switched off: 9 is then outside the classes, an error
        (None, "file", False),  # nothing declares 9: an error
    ],
)
def test_class_index_nodata_is_ignored_and_other_values_are_errors(
    tmp_path: Path, file_nodata: int | None, setting: Any, ignored: bool
) -> None:
    classes = (np.arange(36).reshape(6, 6) % 3).astype(np.uint8)
    classes[0, :] = 9
    options = {"nodata": file_nodata} if file_nodata is not None else {}
    sample = _pair(tmp_path, np.zeros((3, 6, 6), np.uint8), classes[None], **options)
    if ignored:
        item = _item(sample, class_labels=["a", "b", "c"], mask_nodata=setting)
        assert bool((item["mask"][0] == UINT8_IGNORE).all())
        assert torch.equal(item["mask"][1:], torch.from_numpy(classes[1:]))
    else:
        with pytest.raises(DataError, match=r"row 1: .*a_msk.tif holds class index 9, outside 0..2 .*mask_nodata"):
            _item(sample, class_labels=["a", "b", "c"], mask_nodata=setting)


def test_an_image_with_nan_pixels_is_refused_naming_the_row_and_file(tmp_path: Path) -> None:
    image = np.full((3, 6, 6), 100.0, np.float32)
    image[1, 2, 3] = np.nan
    image[0, 0, 0] = np.inf
    sample = _pair(tmp_path, image, onehot(np.zeros((6, 6), int), 2))
    with pytest.raises(DataError, match=r"train.csv row 1: .*a_img.tif has 2 NaN or infinite pixel value"):
        _item(sample, image_max_value=1000)


@pytest.mark.parametrize(("setting", "expected"), [("auto", "error"), ("file", "ignored"), ("none", "class 0")])
def test_a_declared_nodata_that_is_also_a_class_is_never_guessed(tmp_path: Path, setting: str, expected: str) -> None:
    """A class-index mask declaring nodata 0 where 0 is a class: ignoring class 0 silently (or training on
    nodata silently) would both be wrong guesses; the default asks, "file" and "none" decide."""
    classes = (np.arange(36).reshape(6, 6) % 3).astype(np.uint8)
    sample = _pair(tmp_path, np.zeros((3, 6, 6), np.uint8), classes[None], nodata=0)
    if expected == "error":
        with pytest.raises(
            DataError,
            match=r"a_msk.tif declares nodata 0, also the class index 0: set "
            r"data_source.mask_nodata to \"file\" .* \"none\"",
        ):
            _item(sample, class_labels=["a", "b", "c"], mask_nodata=setting)
        return
    mask = _item(sample, class_labels=["a", "b", "c"], mask_nodata=setting)["mask"]
    zero = torch.from_numpy(classes == 0)
    assert bool((mask[zero] == (UINT8_IGNORE if expected == "ignored" else 0)).all())


def test_a_one_hot_mask_declaring_its_on_value_as_nodata_is_refused_by_default(tmp_path: Path) -> None:
    """0/255 class bands written with nodata 255 would have every labelled pixel ignored."""
    classes = np.arange(36).reshape(6, 6) % 3
    sample = _pair(tmp_path, np.zeros((3, 6, 6), np.uint8), onehot(classes, 3, on=255), nodata=255)
    with pytest.raises(DataError, match=r"declares nodata 255, a value its class bands may hold for \"on\""):
        _item(sample)
    assert torch.equal(_item(sample, mask_nodata="none")["mask"], torch.from_numpy(classes.astype(np.uint8)))
