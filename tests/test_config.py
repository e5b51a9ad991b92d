from __future__ import annotations

import copy
import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from odeon_job.config import (
    REDUCE_LR_ON_PLATEAU_DEFAULTS,
    JobConfig,
    apply_overrides,
    config_from_dict,
    json_schema,
    load_config,
    parse_config,
    parse_json,
)
from odeon_job.errors import ConfigError, StorageError
from odeon_job.process.launch import resolve_run_names

EXAMPLES = Path(__file__).parent / "spec_examples"


def _example(name: str, tmp_path: Path) -> str:
    """A specification example, verbatim but for its /path/to/ placeholders."""
    text = (EXAMPLES / name).read_text().replace("/path/to/", f"{tmp_path}/")
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_minimal_example_loads(tmp_path: Path) -> None:
    config = load_config(_example("minimal.json", tmp_path))
    assert config.data_source.train_file == f"{tmp_path}/train_set.csv"
    assert config.data_source.mask_bands == list(range(1, 16))
    assert config.train_setup.model_name == "unet"
    assert (config.train_setup.epochs, config.train_setup.batch_size, config.train_setup.lr) == (3, 3, 0.01)
    assert config.device_setup.accelerator == "gpu" and config.device_setup.device == 1


def test_full_example_loads(tmp_path: Path) -> None:
    config = load_config(_example("full.json", tmp_path))
    source, setup, out = config.data_source, config.train_setup, config.output_setup
    assert source.class_labels is not None and source.class_labels[0] == "batiment"
    assert len(source.class_labels) == 15
    assert source.normalization_weights is not None
    assert source.normalization_weights["val"].mean == [0.43193138, 0.4490423, 0.390175]
    assert source.data_augmentation == {"train": ["rotation90"], "val": [], "test": []}
    assert out.model_filename == "filename.ckpt" and out.version_name == "version_lr_0.01"
    assert out.save_top_k == 3 and out.progress == 1 and out.log_learning_rate is True
    assert setup.optimizer_config is not None and setup.optimizer_config.optimizer == "sgd"
    assert setup.optimizer_config.arguments == {"momentum": 0.5}
    assert setup.scheduler_config is not None
    assert setup.scheduler_config.arguments == {
        "mode": "min",
        "patience": 1,
        "cooldown": 0,
        "factor": 0.5,
        "min_lr": 1e-7,
    }
    assert setup.early_stopping is not None and setup.early_stopping.patience == 30
    assert setup.class_imbalance == [1] * 14 + [0]
    assert setup.deterministic is True and setup.testing is True and setup.val_check_interval == 1.0


def test_device_setup_example_has_the_specification_missing_comma(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_example("device_setup_tab.json", tmp_path))
    message = str(caught.value)
    assert "invalid JSON at line 4, column 6" in message and "Expecting ',' delimiter" in message
    assert "\n" not in message


MINIMAL: dict[str, Any] = {
    "data_source": {"train_file": "train.csv"},
    "train_setup": {"model_name": "unet"},
    "output_setup": {"output_folder": "out"},
}


def test_every_default_is_the_specification_s() -> None:
    config = config_from_dict(MINIMAL)
    source, setup, out, device = (config.data_source, config.train_setup, config.output_setup, config.device_setup)
    assert source.model_dump() == {
        "train_file": "train.csv",
        "val_file": None,
        "test_file": None,
        "percentage_val": 0.3,
        "image_bands": None,
        "mask_bands": None,
        "class_labels": None,
        "class_colors": None,
        "resolution": None,
        "normalization_weights": None,
        "data_augmentation": None,
        "image_max_value": None,
        "mask_nodata": "auto",
        "patch_size": None,
        "train_windows": "area",
        "grid_overlap": 0,
    }
    assert setup.model_dump() == {
        "model_name": "unet",
        "model_params": {"upsampling": "bilinear", "align_corners": False, "output_stride": 8},
        "init_weights": None,
        "encoder_weights": None,
        "epochs": 1000,
        "batch_size": 3,
        "lr": 0.001,
        "loss": "ce",
        "loss_params": {"gamma": 2.0, "alpha": None, "bce_weight": 0.75, "jaccard_weight": 0.25},
        "class_imbalance": None,
        "optimizer_config": None,
        "scheduler_config": None,
        "early_stopping": None,
        "continue_training": False,
        "export_checkpoint": None,
        "val_check_interval": 1.0,
        "deterministic": False,
        "random_seed": 42,
        "testing": False,
        "precision": "32",
        "channels_last": False,
        "compile": False,
    }
    assert out.model_dump() == {
        "output_folder": "out",
        "model_filename": None,
        "model_out_ext": None,
        "name_exp_log": None,
        "version_name": None,
        "get_prediction": False,
        "prediction_output_type": "uint8",
        "use_tensorboard": True,
        "use_wandb": False,
        "log_learning_rate": False,
        "save_history": True,
        "save_top_k": 3,
        "progress": 1,
        "progress_every": 30.0,  # not in the specification: the plain progress lines where no terminal draws a bar
        "use_mlflow": True,
        "mlflow_tracking_uri": None,
        "mlflow_experiment": None,
        "mlflow_run_name": None,
        "registered_model_name": None,
        "mlflow_required": False,
    }
    assert device.model_dump() == {
        "accelerator": None,
        "device": None,
        "num_nodes": 1,
        "num_workers": 4,
        "num_processes": 1,
        "strategy": None,
        "pin_memory": None,
        "persistent_workers": None,
        "prefetch_factor": None,
        "stop_grace_period": 20.0,
    }


def test_named_plateau_scheduler_takes_the_specification_defaults_for_missing_keys() -> None:
    config = config_from_dict(
        _with(MINIMAL, ("train_setup", "scheduler_config"), {"scheduler": "ReduceLROnPlateau", "patience": 2})
    )
    scheduler = config.train_setup.scheduler_config
    assert scheduler is not None and scheduler.scheduler == "reducelronplateau"
    assert scheduler.arguments == {**REDUCE_LR_ON_PLATEAU_DEFAULTS, "patience": 2}


def test_names_are_case_insensitive_as_the_specification_writes_sgd() -> None:
    config = config_from_dict(_with(MINIMAL, ("train_setup", "optimizer_config"), {"optimizer": "SGD"}))
    assert config.train_setup.optimizer_config is not None
    assert config.train_setup.optimizer_config.optimizer == "sgd"


def test_val_check_interval_keeps_int_batches_and_float_fractions() -> None:
    assert (
        config_from_dict(_with(MINIMAL, ("train_setup", "val_check_interval"), 5)).train_setup.val_check_interval == 5
    )
    interval = config_from_dict(
        _with(MINIMAL, ("train_setup", "val_check_interval"), 0.5)
    ).train_setup.val_check_interval
    assert interval == 0.5 and isinstance(interval, float)


def test_resolution_accepts_one_size_a_pair_or_a_dict_per_split() -> None:
    pair = {"train": [0.5, 0.4], "val": [0.5, 0.4], "test": [0.5, 0.4]}
    for value, expected in [
        (0.5, 0.5),
        ([0.5, 0.5], [0.5, 0.5]),
        ({"train": 0.5}, {"train": 0.5}),
        ([[0.5, 0.4]], pair),
        # ODEON's lists: one per split, train, val, test; a missing test takes the last
        ([0.2, 0.5, 0.3], {"train": 0.2, "val": 0.5, "test": 0.3}),
        ([[0.2, 0.2], [0.5, 0.5]], {"train": [0.2, 0.2], "val": [0.5, 0.5], "test": [0.5, 0.5]}),
    ]:
        assert config_from_dict(_with(MINIMAL, ("data_source", "resolution"), value)).data_source.resolution == expected


def test_two_different_resolutions_are_refused_as_ambiguous_and_version_1_pairs_upgrade() -> None:
    with pytest.raises(
        ConfigError,
        match=r"data_source.resolution: \[0.5, 0.4\] is ambiguous: ODEON reads it as "
        r"train 0.5, val and test 0.4",
    ):
        config_from_dict(_with(MINIMAL, ("data_source", "resolution"), [0.5, 0.4]))
    version_1 = {**_with(MINIMAL, ("data_source", "resolution"), [0.5, 0.4]), "config_version": 1}
    upgraded = config_from_dict(version_1)  # a version-1 configuration meant an [x, y] pixel size
    assert upgraded.data_source.resolution == {"train": [0.5, 0.4], "val": [0.5, 0.4], "test": [0.5, 0.4]}
    assert upgraded.config_version == 2


def test_a_single_augmentation_name_is_a_list_of_one() -> None:
    config = config_from_dict(_with(MINIMAL, ("data_source", "data_augmentation"), {"train": "rotation90"}))
    assert config.data_source.data_augmentation == {"train": ["rotation90"]}


def test_run_names_default_to_the_start_date_and_time() -> None:
    config = resolve_run_names(config_from_dict(MINIMAL), dt.datetime(2026, 11, 24, 8, 5, 9))
    assert (config.output_setup.name_exp_log, config.output_setup.version_name) == ("2026-11-24", "08-05-09")
    named = _with(_with(MINIMAL, ("output_setup", "name_exp_log"), "exp"), ("output_setup", "version_name"), "v1")
    config = resolve_run_names(config_from_dict(named))
    assert (config.output_setup.name_exp_log, config.output_setup.version_name) == ("exp", "v1")


def _with(data: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return data


ONE_HOT = _with(_with(MINIMAL, ("data_source", "image_bands"), [1, 2, 3]), ("data_source", "mask_bands"), [1, 2, 3, 4])

INVALID = [
    pytest.param(
        ("data_source", "train_fil"),
        "x",
        "data_source.train_fil: unknown key (did you mean 'train_file'?)",
        id="unknown-key",
    ),
    pytest.param(
        ("train_setup", "class imbalance"),
        [1, 1, 1, 1],
        "train_setup.class imbalance: unknown key (did you mean 'class_imbalance'?)",
        id="spaced-key",
    ),
    pytest.param(
        ("data_source", "normalization_weights"),
        {"train": {"meen": [0.5] * 3, "mean": [0.5] * 3, "std": [0.2] * 3}},
        "data_source.normalization_weights.train.meen: unknown key (did you mean 'mean'?)",
        id="nested-unknown-key",
    ),
    pytest.param(
        ("train_setup", "epochs"), "ten", "train_setup.epochs: Input should be a valid integer", id="wrong-type"
    ),
    pytest.param(
        ("train_setup", "epochs"),
        0,
        "train_setup.epochs: Input should be greater than or equal to 1",
        id="out-of-range",
    ),
    pytest.param(
        ("train_setup", "deterministic"),
        [True],
        "train_setup.deterministic: Input should be a valid boolean",
        id="wrong-type-bool",
    ),
    pytest.param(
        ("data_source", "image_bands"),
        [0, 1, 2],
        "data_source.image_bands[0]: band indices are 1-based, as in GDAL: 0 is not a band",
        id="band-zero",
    ),
    pytest.param(
        ("data_source", "mask_bands"), [1, 2, 2, 3], "data_source.mask_bands: 2 is listed twice", id="band-twice"
    ),
    pytest.param(
        ("data_source", "class_labels"),
        ["a", "b"],
        "data_source.class_labels: 2 labels but mask_bands selects 4 bands",
        id="labels-length",
    ),
    pytest.param(
        ("train_setup", "class_imbalance"),
        [1, 1],
        "train_setup.class_imbalance: 2 weights but there are 4 classes",
        id="imbalance-length",
    ),
    pytest.param(
        ("data_source", "normalization_weights"),
        {"train": {"mean": [0.5, 0.5], "std": [0.2, 0.2]}},
        "data_source.normalization_weights.train.mean: 2 values but image_bands selects 3 bands",
        id="normalization-length",
    ),
    pytest.param(
        ("data_source", "normalization_weights"),
        {"train": {"mean": [0.5] * 3, "std": [0.2] * 2}},
        "data_source.normalization_weights.train.std: 2 values but mean has 3",
        id="mean-std-length",
    ),
    pytest.param(
        ("data_source", "normalization_weights"),
        {"training": {"mean": [0.5] * 3, "std": [0.2] * 3}},
        "data_source.normalization_weights.training: 'training' is not one of train, val, test (did you mean 'train'?)",
        id="bad-split",
    ),
    pytest.param(
        ("train_setup", "model_name"),
        "unett",
        "train_setup.model_name: 'unett' is not one of unet, "
        "lightunet, resnet18, resnet34, resnet50, resnet101, resnet152, deeplab (did you mean 'unet'?)",
        id="bad-model",
    ),
    pytest.param(
        ("train_setup", "model_name"),
        "resnet150",
        "train_setup.model_name: 'resnet150' is a slip in the specification: the ResNet with 152 layers is 'resnet152'",
        id="resnet150",
    ),
    pytest.param(
        ("train_setup", "loss"), "dice", "train_setup.loss: 'dice' is not one of ce, bce, focal, combo", id="bad-loss"
    ),
    pytest.param(
        ("train_setup", "optimizer_config"),
        {"optimizer": "adamm"},
        "train_setup.optimizer_config.optimizer: 'adamm' is not one of adam, radam, adamax, sgd, rmsprop, "
        "adamw (did you mean 'adam'?)",
        id="bad-optimizer",
    ),
    pytest.param(
        ("train_setup", "optimizer_config"),
        {"optimizer": "adam", "lr": "fast"},
        "train_setup.optimizer_config.lr: a learning rate is a positive number, got 'fast'",
        id="bad-lr",
    ),
    pytest.param(
        ("data_source", "data_augmentation"),
        {"train": ["rotate"]},
        "data_source.data_augmentation.train[0]: 'rotate' is not one of rotation90, rotation, radiometry "
        "(did you mean 'rotation'?)",
        id="bad-augmentation",
    ),
    pytest.param(
        ("data_source", "data_augmentation"),
        {"val": ["rotation90"]},
        "data_source.data_augmentation.val: augmentations apply to the train split only",
        id="val-augmentation",
    ),
    pytest.param(
        ("data_source", "percentage_val"),
        1.5,
        "data_source.percentage_val: Input should be less than 1",
        id="percentage",
    ),
    pytest.param(
        ("device_setup", "device"),
        "cuda:0",
        'device_setup.device: \'cuda:0\' is not a device id ("0") or list of ids ("0,1")',
        id="device",
    ),
    pytest.param(
        ("train_setup", "val_check_interval"),
        1.5,
        "train_setup.val_check_interval: a fraction of an epoch must be in (0, 1], got 1.5",
        id="interval",
    ),
    pytest.param(
        ("output_setup", "version_name"),
        "../v",
        "output_setup.version_name: must be a single folder name",
        id="version-path",
    ),
    pytest.param(
        ("output_setup", "prediction_output_type"),
        "uint16",
        "output_setup.prediction_output_type: 'uint16' is not one of bit, uint8, float32",
        id="prediction-type",
    ),
    pytest.param(
        ("data_source", "resolution"),
        {"trian": 0.5},
        "data_source.resolution: 'trian' is not a split (train, val, test)",
        id="resolution-split",
    ),
]


@pytest.mark.parametrize(("path", "value", "message"), INVALID)
def test_invalid_config_names_the_json_path(path: tuple[str, ...], value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict(_with(ONE_HOT, path, value), "config.json")
    text = str(caught.value)
    assert text.startswith("config.json: " + message), text
    assert "\n" not in text


@pytest.mark.parametrize("model", ["unet", "lightunet", "resnet18", "resnet152", "deeplab"])
@pytest.mark.parametrize("loss", ["ce", "bce", "focal", "combo"])
def test_a_resolved_config_loads_again(model: str, loss: str) -> None:
    """config.json holds every key with its value: loading it again must give the same config."""
    config = resolve_run_names(
        config_from_dict(_with(_with(ONE_HOT, ("train_setup", "model_name"), model), ("train_setup", "loss"), loss))
    )
    assert config_from_dict(json.loads(config.model_dump_json())) == config


@pytest.mark.parametrize(
    ("train_setup", "message"),
    [
        (
            {"model_name": "unet", "model_params": {"output_stride": 16}},
            "train_setup.model_params.output_stride: applies to deeplab, not unet",
        ),
        (
            {"model_name": "deeplab", "model_params": {"upsampling": "transposed"}},
            "train_setup.model_params.upsampling: applies to unet, lightunet, resnet18",
        ),
        (
            {"model_name": "unet", "loss": "ce", "loss_params": {"gamma": 1.0}},
            "train_setup.loss_params.gamma: applies to the focal loss, not ce",
        ),
        (
            {"model_name": "unet", "loss": "focal", "loss_params": {"jaccard_weight": 0.5}},
            "train_setup.loss_params.jaccard_weight: applies to the combo loss, not focal",
        ),
        (
            {"model_name": "unet", "loss": "focal", "loss_params": {"alpha": [1, 2]}},
            "train_setup.loss_params.alpha: 2 weights but there are 4 classes",
        ),
        (
            {"model_name": "lightunet", "encoder_weights": "w.pth"},
            "train_setup.encoder_weights: lightunet has no pretrainable encoder",
        ),
        ({"model_name": "deeplab", "batch_size": 1}, "train_setup.batch_size: deeplab needs at least 2 samples"),
        (
            {"model_name": "deeplab", "model_params": {"output_stride": 12}},
            "train_setup.model_params.output_stride: 12 is not one of 8, 16",
        ),
    ],
)
def test_model_and_loss_options_must_fit_the_model_and_loss(train_setup: dict[str, Any], message: str) -> None:
    data = copy.deepcopy(ONE_HOT)
    data["train_setup"] = train_setup
    with pytest.raises(ConfigError, match="^config: " + re.escape(message)):
        config_from_dict(data)


def test_default_options_of_another_model_are_harmless() -> None:
    data = _with(ONE_HOT, ("train_setup", "model_params"), {"output_stride": 8, "upsampling": "transposed"})
    assert config_from_dict(data).train_setup.model_params.upsampling == "transposed"


def test_class_imbalance_only_weights_ce() -> None:
    data = _with(_with(ONE_HOT, ("train_setup", "loss"), "bce"), ("train_setup", "class_imbalance"), [1, 1, 1, 1])
    with pytest.raises(ConfigError, match=r"train_setup\.class_imbalance: weights the ce loss only"):
        config_from_dict(data)


def test_a_single_mask_band_needs_the_class_labels() -> None:
    with pytest.raises(ConfigError, match=r"data_source\.class_labels: mask_bands selects a single band, read as"):
        config_from_dict(_with(MINIMAL, ("data_source", "mask_bands"), [1]))
    config = config_from_dict(
        _with(_with(MINIMAL, ("data_source", "mask_bands"), [1]), ("data_source", "class_labels"), ["a", "b", "c"])
    )
    assert config.data_source.class_labels == ["a", "b", "c"]


def test_missing_sections_and_keys_are_each_reported() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"data_source": {}, "train_setup": {"model_name": "unet"}})
    lines = str(caught.value).splitlines()
    assert "config: data_source.train_file: required key is missing" in lines
    assert "config: output_setup: required key is missing" in lines


def test_config_must_be_an_object() -> None:
    with pytest.raises(ConfigError, match="must be a JSON object, got list"):
        parse_config("[1, 2]", "c.json")


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as caught:
        load_config(str(tmp_path / "nope.json"))
    assert str(caught.value) == f"{tmp_path / 'nope.json'}: not found"


def test_json_schema_describes_every_section_and_rejects_unknown_keys() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == {"config_version", "data_source", "train_setup", "output_setup", "device_setup"}
    assert schema["additionalProperties"] is False
    train_setup = schema["$defs"]["TrainSetup"]
    assert train_setup["properties"]["epochs"]["default"] == 1000
    assert "resnet152" in json.dumps(train_setup["properties"]["model_name"])
    assert JobConfig.model_json_schema() == {k: v for k, v in schema.items() if k != "$schema"}


# --- hostile or absurd configurations: refused with one short line, in linear time ------------------------


def test_a_duplicate_key_is_an_error_naming_it() -> None:
    text = (
        '{"data_source": {"train_file": "a.csv"}, "train_setup": {"model_name": "unet", "lr": 0.1, "lr": 5}, '
        '"output_setup": {"output_folder": "out"}}'
    )
    with pytest.raises(ConfigError, match=r"^config: the key 'lr' appears twice in one object"):
        parse_config(text)


def test_deep_nesting_is_one_line_not_a_recursion_error() -> None:
    for depth in (40, 100_000):
        with pytest.raises(ConfigError, match="nested"):
            parse_json("[" * depth + "]" * depth)


def test_a_configuration_above_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from odeon_job.config import MAX_CONFIG_BYTES

    big = tmp_path / "big.json"
    big.write_text('{"x": "' + "a" * MAX_CONFIG_BYTES + '"}')
    with pytest.raises(ConfigError, match=rf"big.json: {MAX_CONFIG_BYTES + 9} bytes, more than the"):
        load_config(str(big))
    with pytest.raises(ConfigError, match="more than the"):
        apply_overrides({}, ["train_setup.model_name=" + "x" * MAX_CONFIG_BYTES])


def test_error_lines_quote_huge_values_cut_short() -> None:
    huge = "u" * 5_000_000
    for section, values in (
        ("train_setup", {"model_name": huge}),
        ("output_setup", {"version_name": "a/" + huge}),
        ("device_setup", {"device": huge}),
    ):
        config = json.loads(json.dumps(MINIMAL))
        config.setdefault(section, {}).update(values)
        with pytest.raises(ConfigError) as raised:
            config_from_dict(config)
        assert len(str(raised.value)) < 600 and "characters)" in str(raised.value)


def test_duplicate_checks_are_linear() -> None:
    labels = [f"class {i}" for i in range(1_000_000)]
    config = json.loads(json.dumps(MINIMAL))
    config["data_source"]["class_labels"] = labels + ["class 7"]
    with pytest.raises(ConfigError, match="'class 7' is listed twice"):  # quadratic: hours
        config_from_dict(config)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=30,
    )
)
def test_any_json_value_is_a_config_or_one_clear_error(value: Any) -> None:
    """Whatever JSON arrives, the loader answers a JobConfig or a ConfigError, never another exception."""
    try:
        config_from_dict(parse_json(json.dumps(value)))
    except ConfigError as error:
        assert str(error).strip()


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_mask_nodata_that_no_integer_pixel_can_hold_is_refused(value: str) -> None:
    """NaN or an infinity were accepted and meant "ignore nothing" on every integer mask, silently."""
    text = (
        '{"data_source": {"train_file": "t.csv", "mask_nodata": ' + value + '}, "train_setup": {}, '
        '"output_setup": {"output_folder": "o"}, "device_setup": {}}'
    )
    with pytest.raises(
        ConfigError,
        match=r"data_source\.mask_nodata: .* matches no pixel of an integer mask: give a "
        r"finite number, or \"file\"",
    ):
        parse_config(text)


def test_the_mode_tiles_or_scenes_is_asked_of_the_configuration() -> None:
    base = {
        "data_source": {"train_file": "a.csv", "test_file": "t.csv"},
        "train_setup": {"model_name": "lightunet"},
        "output_setup": {"output_folder": "o", "get_prediction": True},
    }
    tiles = config_from_dict(base)
    assert (tiles.data_source.reads_scenes, tiles.data_source.item_name, tiles.stitches_scenes) == (
        False,
        "tile",
        False,
    )
    scenes = config_from_dict({**base, "data_source": {**base["data_source"], "patch_size": 64}})
    assert (scenes.data_source.reads_scenes, scenes.data_source.item_name, scenes.stitches_scenes) == (
        True,
        "window",
        True,
    )
    no_predictions = config_from_dict(
        {**base, "output_setup": {"output_folder": "o"}, "data_source": {**base["data_source"], "patch_size": 64}}
    )
    assert no_predictions.data_source.reads_scenes and not no_predictions.stitches_scenes


@pytest.mark.parametrize("label", ["Average", "Overall"])
def test_a_class_may_not_take_the_name_of_the_figures_over_all_classes(label: str) -> None:
    """A class labelled "Average" wrote its own IoU over Average/IoU: val_miou, the best checkpoint and the gate
    silently followed one class."""
    with pytest.raises(ConfigError, match=rf'data_source\.class_labels: "{label}" names the figures over all classes'):
        config_from_dict(_with(ONE_HOT, ("data_source", "class_labels"), ["a", label, "c", "d"]))
    labels = ["a", label.lower(), "c", "d"]  # (metric names are case-sensitive: "average" is a class like another)
    assert config_from_dict(_with(ONE_HOT, ("data_source", "class_labels"), labels)).data_source.class_labels == labels


@pytest.mark.parametrize("label", ["", "  ", "a\nb", "tab\there"])
def test_a_class_label_is_a_visible_name_on_one_line(label: str) -> None:
    """An empty label made metric names such as val//IoU; a newline broke the model card's tables, the QGIS style
    and every log line naming the classes."""
    with pytest.raises(ConfigError, match=r"data_source\.class_labels: .* a class label is a name"):
        config_from_dict(_with(ONE_HOT, ("data_source", "class_labels"), [label, "b", "c", "d"]))
