"""Coming from ODEON: its weights load here, our exports load there, its configurations run.

ODEON's networks are stood in for by tests/odeon_reference.py (same module names, shapes and forward).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from odeon_reference import odeon_checkpoint, randomised, ref_lightunet, ref_unet
from torchvision.models.segmentation.deeplabv3 import ASPP

from odeon_job.config import ModelParams, TrainSetup, config_from_dict
from odeon_job.errors import ConfigError
from odeon_job.tasks.train import train
from odeon_job.training.models import build_model
from odeon_job.training.models.weights import fit_to_weights, load_encoder_weights, load_init_weights, read_state_dict

from conftest import TinyDataset, make_config

N_CLASSES, BANDS = 5, 3


def _setup(model_name: str, init_weights: str, **model_params: object) -> TrainSetup:
    return TrainSetup.model_validate(
        {
            "model_name": model_name,
            "init_weights": init_weights,
            **({"model_params": model_params} if model_params else {}),
        }
    )


def _ours_from(url: str, setup: TrainSetup) -> torch.nn.Module:
    """Our model as ``odeon train`` builds it from ``init_weights``: parameters fitted, tensors translated."""
    state = read_state_dict(url, "train_setup.init_weights")
    setup = fit_to_weights(setup, state)
    model = build_model(setup.model_name, BANDS, N_CLASSES, setup.model_params)
    load_init_weights(model, url, state)
    return model.eval()


def test_odeon_u_nets_have_our_parameter_counts() -> None:
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    for reference, name, bilinear, expected in [
        (ref_unet, "unet", True, 28_955_471),
        (ref_unet, "unet", False, 31_044_431),
        (ref_lightunet, "lightunet", True, 453_303),
        (ref_lightunet, "lightunet", False, 485_943),
    ]:
        ours = build_model(name, 3, 15, ModelParams(upsampling="bilinear" if bilinear else "transposed"))
        assert count(reference(3, 15, bilinear)) == count(ours) == expected


@pytest.mark.parametrize(
    ("reference", "name", "bilinear", "kind"),
    [
        (ref_lightunet, "lightunet", True, "pth"),
        (ref_lightunet, "lightunet", True, "ckpt"),
        (ref_lightunet, "lightunet", False, "ckpt"),
        (ref_unet, "unet", True, "pth"),
    ],
)
def test_odeon_weights_load_by_name_and_predict_what_odeon_predicted(
    reference: Callable[..., torch.nn.Module],
    name: str,
    bilinear: bool,
    kind: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    odeon_model = randomised(reference(BANDS, N_CLASSES, bilinear))
    path = tmp_path / f"odeon.{kind}"
    torch.save(
        odeon_model.state_dict()
        if kind == "pth"
        else odeon_checkpoint(odeon_model, name, BANDS, [f"c{i}" for i in range(N_CLASSES)]),
        path,
    )
    tile = torch.rand(2, BANDS, 48, 48, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.INFO, logger="odeon"):
        ours = _ours_from(str(path), _setup(name, str(path)))
    with torch.no_grad():
        expected, got = odeon_model(tile), ours(tile)
    assert torch.equal(expected.argmax(1), got.argmax(1))
    assert torch.allclose(expected, got, atol=1e-5)
    assert f"holds ODEON {name} weights" in caplog.text
    tensors = len(ours.state_dict())
    assert f"init_weights: {tensors} of {tensors} tensors loaded" in caplog.text
    if bilinear:  # ODEON's interpolation is part of what it predicted: without it, another map
        plain = build_model(name, BANDS, N_CLASSES, ModelParams())
        plain.load_state_dict(ours.state_dict())
        with torch.no_grad():
            assert not torch.allclose(expected, plain.eval()(tile), atol=1e-3)


def test_odeon_weights_of_another_model_or_decoder_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "odeon_lightunet.pth"
    torch.save(ref_lightunet(BANDS, N_CLASSES, bilinear=False).state_dict(), path)
    state = read_state_dict(str(path), "train_setup.init_weights")
    with pytest.raises(
        ConfigError,
        match=r"train_setup.init_weights: .* holds ODEON lightunet weights, but "
        r"train_setup.model_name is unet",
    ):
        fit_to_weights(_setup("unet", str(path)), state)
    with pytest.raises(
        ConfigError,
        match=r"model_params.upsampling: bilinear, but the ODEON weights of .* were "
        r"trained with transposed upsampling",
    ):
        fit_to_weights(_setup("lightunet", str(path), upsampling="bilinear"), state)
    fitted = fit_to_weights(_setup("lightunet", str(path)), state).model_params
    assert (fitted.upsampling, fitted.align_corners) == ("transposed", False)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            "scalar",
            r"inc\.double_conv\.double_conv\.0\.weight \(the first convolution of ODEON's U-Nets\) has shape \[\]",
        ),
        ("no_up", r"up1\.up\.weight \(the first decoder step's upsampling of ODEON's U-Nets\) is missing"),
    ],
)
def test_damaged_odeon_weights_are_refused_by_name(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, damage: str, message: str
) -> None:
    """A 0-d first-layer tensor was an IndexError, missing up1.up tensors a KeyError: tracebacks."""
    state = ref_lightunet(BANDS, N_CLASSES).state_dict()
    if damage == "scalar":
        state["inc.double_conv.double_conv.0.weight"] = torch.tensor(1.0)
    else:
        state = {k: v for k, v in state.items() if not k.startswith("up1.up.")}
    path = tmp_path / "damaged.pth"
    torch.save(state, path)
    data = make_dataset(n=4)
    config = make_config(data.csv, str(tmp_path / "out"), train_setup={"init_weights": str(path)})
    with pytest.raises(
        ConfigError,
        match=r"train_setup\.init_weights: .*damaged\.pth holds ODEON weights that cannot "
        r"be a trained network: " + message,
    ):
        train(config_from_dict(config))
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match=r"train_setup\.encoder_weights: .*damaged\.pth holds ODEON weights"):
        load_encoder_weights(build_model("resnet18", BANDS, N_CLASSES, ModelParams()), str(path))


def _odeon_resnet_state(depth: int = 18) -> dict[str, torch.Tensor]:
    """An ODEON UNetResNet state dict: torchvision's ResNet as ``encoder`` (first convolution for the bands,
    classifier for the classes), its parts registered again as ``conv1``..``conv5``, and its own decoder."""
    encoder = getattr(torchvision.models, f"resnet{depth}")(weights=None, num_classes=N_CLASSES)
    encoder.conv1 = torch.nn.Conv2d(BANDS, 64, 7, stride=2, padding=3, bias=False)
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    aliases = {
        "conv1.0": encoder.conv1,
        "conv1.1": encoder.bn1,
        "conv2": encoder.layer1,
        "conv3": encoder.layer2,
        "conv4": encoder.layer3,
        "conv5": encoder.layer4,
    }
    for prefix, module in aliases.items():
        state.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    state.update(
        {
            "center.block.1.conv.weight": torch.zeros(512, 512, 3, 3),
            "dec5.block.1.conv.weight": torch.zeros(512, 768, 3, 3),
            "final.weight": torch.zeros(N_CLASSES, 32, 1, 1),
        }
    )
    return state


def _saved_and_loaded(
    state: dict[str, torch.Tensor], model_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> tuple[str, torch.nn.Module]:
    """``state`` saved as an ODEON .pth, then our ``model_name`` built from it as odeon train does."""
    path = tmp_path / f"odeon_{model_name}.pth"
    torch.save(state, path)
    with caplog.at_level(logging.INFO, logger="odeon"):
        return str(path), _ours_from(str(path), _setup(model_name, str(path)))


def test_odeon_resnet_weights_fill_our_encoder_and_say_what_did_not_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = _odeon_resnet_state()
    path, ours = _saved_and_loaded(state, "resnet18", tmp_path, caplog)
    encoder = {k: v for k, v in state.items() if k.startswith("encoder.") and not k.startswith("encoder.fc.")}
    own = ours.state_dict()
    assert all(torch.equal(own[k], v) for k, v in encoder.items())
    assert f"init_weights: {len(encoder)} of {len(own)} tensors loaded" in caplog.text
    assert "resnet decoder (center, dec5..dec0, final) has another structure: left as initialised" in caplog.text
    assert "left as initialised: decoder.0." in caplog.text
    # As encoder_weights too: the encoder alone, however many bands.
    model = build_model("resnet18", BANDS, N_CLASSES)
    load_encoder_weights(model, path, read_state_dict(path, "train_setup.encoder_weights"))
    assert torch.equal(
        model.state_dict()["encoder.layer4.1.bn2.running_var"], state["encoder.layer4.1.bn2.running_var"]
    )


def _odeon_deeplab_state() -> dict[str, torch.Tensor]:
    """An ODEON DeeplabV3p state dict: MobileNetV2 ``backbone.features`` (its last block dropped), the
    low-level alias, the unused classifier, torchvision's ASPP, and its decoder's own names."""
    generator = torch.Generator().manual_seed(2)
    mobilenet = torchvision.models.mobilenet_v2(weights=None)
    features = mobilenet.features[:18]
    features[0][0] = torch.nn.Conv2d(BANDS, 32, 3, stride=2, padding=1, bias=False)
    state = {
        f"backbone.features.{k}": torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in features.state_dict().items()
    }
    state.update({f"backbone.low_features.0.{k}": v for k, v in state.items() if k.split(".")[2] in "012"})
    state.update({f"backbone.{k}": v for k, v in mobilenet.classifier.state_dict().items()})
    state.update({f"aspp.{k}": v for k, v in ASPP(320, [12, 24, 36]).state_dict().items()})
    shapes = {
        "conv1.weight": (48, 24, 1, 1),
        "last_conv.0.weight": (256, 304, 3, 3),
        "last_conv.4.weight": (256, 256, 3, 3),
        "last_conv.8.weight": (N_CLASSES, 256, 1, 1),
        "last_conv.8.bias": (N_CLASSES,),
    }
    for bn, size in (("bn1", 48), ("last_conv.1", 256), ("last_conv.5", 256)):
        shapes.update({f"{bn}.{p}": (size,) for p in ("weight", "bias", "running_mean", "running_var")})
    state.update({f"decoder.{k}": torch.randn(shape, generator=generator) for k, shape in shapes.items()})
    state.update({f"decoder.{bn}.num_batches_tracked": torch.tensor(7) for bn in ("bn1", "last_conv.1", "last_conv.5")})
    return state


def test_odeon_deeplab_weights_map_every_tensor_and_say_the_network_differs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = _odeon_deeplab_state()
    _, ours = _saved_and_loaded(state, "deeplab", tmp_path, caplog)
    own = ours.state_dict()
    assert f"init_weights: {len(own)} of {len(own)} tensors loaded" in caplog.text
    assert torch.equal(own["aspp.project.0.weight"], state["aspp.project.0.weight"])
    assert torch.equal(own["decoder.fuse.3.weight"], state["decoder.last_conv.4.weight"])
    assert torch.equal(own["decoder.classifier.bias"], state["decoder.last_conv.8.bias"])
    assert torch.equal(own["backbone.17.conv.0.0.weight"], state["backbone.features.17.conv.0.0.weight"])
    assert "not used: backbone.1.weight, backbone.1.bias" in caplog.text  # the classifier, named
    assert "output stride 32" in caplog.text  # the architecture differs: said, not hidden


def test_our_odeon_pth_export_loads_strictly_in_odeon_and_predicts_the_same(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=6, size=32)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"epochs": 2, "export_checkpoint": ["odeon_pth", "pth"], "model_params": {"align_corners": True}},
        output_setup={"save_top_k": 1, "use_tensorboard": False},
    )
    result = train(config_from_dict(config))
    best = Path(result.best_checkpoint)
    exported = best.with_name(best.stem + ".odeon.pth")
    assert exported.exists() and best.with_suffix(".pth").exists()
    for folder in (best.parent, best.parent.parent / "odeon_val_miou_ckpt"):  # each export follows its checkpoint
        stems = sorted(p.name[: -len(".ckpt")] for p in folder.glob("*.ckpt"))
        assert sorted(p.name[: -len(".odeon.pth")] for p in folder.glob("*.odeon.pth")) == stems
    odeon_model = ref_lightunet(BANDS, 3)
    odeon_model.load_state_dict(torch.load(exported, weights_only=True), strict=True)
    from odeon_job.training.segmentation_module import load_module

    module = load_module(str(best)).eval()
    tile = torch.rand(1, BANDS, 32, 32)
    with torch.no_grad():
        assert torch.allclose(odeon_model.eval()(tile), module.model(tile), atol=1e-5)
    with pytest.raises(ConfigError, match="odeon_pth.*unet or lightunet only, not resnet18"):
        config_from_dict(
            make_config(data.csv, "o", train_setup={"model_name": "resnet18", "export_checkpoint": "odeon_pth"})
        )


def test_a_training_from_an_odeon_checkpoint_keeps_odeon_s_upsampling_in_its_own(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path
) -> None:
    data = make_dataset(n=6, size=32)
    odeon_model = randomised(ref_lightunet(BANDS, 3))
    path = tmp_path / "odeon.ckpt"
    torch.save(odeon_checkpoint(odeon_model, "lightunet", BANDS, ["a", "b", "c"]), path)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={"init_weights": str(path), "lr": 1e-9},
        output_setup={"use_tensorboard": False},
    )
    result = train(config_from_dict(config))
    saved = json.loads((Path(result.run_folder) / "config.json").read_text())
    assert saved["train_setup"]["model_params"]["align_corners"] is True
    checkpoint = torch.load(result.best_checkpoint, weights_only=True)
    assert checkpoint["hyper_parameters"]["model_params"]["align_corners"] is True


def test_odeon_configuration_keys_run(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = make_dataset(n=6, size=32)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        train_setup={
            "epochs": 4,
            "lr": 0.001,
            "optimizer_config": {"optimizer": "sgd", "lr": 0.05},
            # Lightning's EarlyStopping arguments, as ODEON passes them: stops once val_loss < 1000
            "early_stopping": {
                "monitor": "val_loss",
                "mode": "min",
                "patience": 5,
                "min_delta": 0.0,
                "check_finite": True,
                "stopping_threshold": 1000.0,
                "verbose": True,
            },
        },
        output_setup={"export_checkpoint": "pth", "use_tensorboard": False},
    )
    with caplog.at_level(logging.INFO, logger="odeon"):
        result = train(config_from_dict(config))
    assert len(result.history) == 1  # stopped at the threshold after the first validation
    assert "optimizer_config.lr 0.05 wins over train_setup.lr 0.001" in caplog.text
    assert next(iter(result.history.values()))["learning rate"] == pytest.approx(0.05)
    assert Path(result.best_checkpoint).with_suffix(".pth").exists()  # export_checkpoint from output_setup


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        (
            "early_stopping",
            {"monitor": "val_miou", "mode": "min"},
            "train_setup.early_stopping.mode: val_miou improves only when it rises: mode must be 'max'",
        ),
        ("both_exports", None, "train_setup.export_checkpoint: given in both output_setup and train_setup"),
        (
            "optimizer_config",
            {"optimizer": "sgd", "lr": -1},
            "train_setup.optimizer_config.lr: a learning rate is a positive number, got -1",
        ),
    ],
)
def test_odeon_keys_that_make_no_sense_are_refused_by_name(section: str, value: object, message: str) -> None:
    config = make_config("a.csv", "o")
    if section == "both_exports":
        config["train_setup"]["export_checkpoint"] = ".pth"
        config["output_setup"]["export_checkpoint"] = "odeon_pth"
    else:
        config["train_setup"][section] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config_from_dict(config)


# --- histories ------------------------------------------------------------------------------------------------


def _odeon_entry(counts: list[list[int]], labels: list[str], loss: float, lr: float) -> dict[str, object]:
    """An entry as ODEON's JSON logger writes it (from its documented rules, computed here with NumPy)."""
    import numpy as np

    cm = np.array(counts, dtype=float)
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    tn = cm.sum() - tp - fp - fn
    s = 1e-6
    per_class = {
        "Accuracy": (tp + tn) / (tp + fp + tn + fn + s),
        "Precision": tp / (tp + fp + s),
        "Recall": tp / (tp + fn + s),
        "Specificity": tn / (tn + fp + s),
        "F1-Score": 2 * tp / (2 * tp + fp + fn + s),
        "IoU": tp / (tp + fp + fn + s),
        "FPR": fp / (fp + tn + s),
    }
    entry: dict[str, object] = {
        "cm_macro": counts,
        "cm_micro": [[tp.sum(), fp.sum()], [fn.sum(), tn.sum()]],
        "Overall/Accuracy": tp.sum() / (tp.sum() + fp.sum() + s) * 100,
        "Overall/Precision": tp.sum() / (tp.sum() + fp.sum() + fn.sum() + s) * 100,
    }
    for name, values in per_class.items():
        entry[f"Average/{name}"] = values.mean() * 100
        entry.update({f"{label}/{name}": values[i] * 100 for i, label in enumerate(labels)})
    return {**json.loads(json.dumps(entry, default=float)), "loss": loss, "learning rate": lr}


def test_convert_history_turns_odeon_s_into_ours_and_back(tmp_path: Path) -> None:
    from odeon_job.commands import cli

    labels = ["bati", "route", "eau"]  # "eau" absent from truth and prediction
    epochs = [[[50, 10, 0], [5, 35, 0], [0, 0, 0]], [[58, 2, 0], [1, 39, 0], [0, 0, 0]]]
    odeon = {
        "0": _odeon_entry([[1, 99, 0], [0, 0, 0], [0, 0, 0]], labels, 9.0, 0.01),  # the sanity check
        "1": _odeon_entry(epochs[0], labels, 0.7, 0.01),
        "2": _odeon_entry(epochs[1], labels, 0.3, 0.005),
    }
    (tmp_path / "metrics.json").write_text(json.dumps(odeon))
    assert (
        cli.main(["convert-history", str(tmp_path / "metrics.json"), str(tmp_path / "ours.json"), "--to", "ours"]) == 0
    )
    ours = json.loads((tmp_path / "ours.json").read_text())
    assert list(ours) == ["0", "1"]
    first = ours["0"]
    assert first["cm_micro"] == epochs[0] and first["loss"] == 0.7 and first["learning rate"] == 0.01
    assert first["bati/IoU"] == pytest.approx(50 / 65) and first["route/IoU"] == pytest.approx(35 / 50)
    assert first["eau/IoU"] is None  # absent: no figure, and out of the average
    assert first["Average/IoU"] == pytest.approx((50 / 65 + 35 / 50) / 2)
    assert first["Overall/Accuracy"] == pytest.approx(85 / 100)
    assert first["cm_macro"][0] == pytest.approx([50 / 60, 10 / 60, 0])
    # And back: ODEON's own entries again (percent, absent class at 0, its 2x2 cm_micro).
    assert cli.main(["convert-history", str(tmp_path / "ours.json"), str(tmp_path / "back.json"), "--to", "odeon"]) == 0
    back = json.loads((tmp_path / "back.json").read_text())
    assert list(back) == ["1", "2"]
    for key in ("1", "2"):
        assert back[key].keys() == odeon[key].keys()
        for name, value in odeon[key].items():
            if name.startswith("cm_"):
                assert back[key][name] == value, name
            else:
                assert back[key][name] == pytest.approx(value, rel=1e-9, abs=1e-9), name


def test_convert_history_names_a_file_that_is_not_a_history(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from odeon_job.commands import cli

    (tmp_path / "bad.json").write_text(json.dumps({"1": {"loss": 0.5, "cm_macro": [[1, 2]]}}))
    assert cli.main(["convert-history", str(tmp_path / "bad.json"), str(tmp_path / "o.json"), "--to", "ours"]) == 2
    assert (
        f"{tmp_path / 'bad.json'}: entry '1': cm_macro is not a square matrix of pixel counts"
        in capsys.readouterr().err
    )
    assert not (tmp_path / "o.json").exists()


def test_validate_says_which_odeon_weights_do_not_fit_the_model(
    make_dataset: Callable[..., TinyDataset], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from odeon_job.commands import cli

    data = make_dataset(n=4)
    weights = tmp_path / "odeon.pth"
    torch.save(ref_lightunet(BANDS, 3).state_dict(), weights)
    config = make_config(
        data.csv, str(tmp_path / "out"), train_setup={"model_name": "unet", "init_weights": str(weights)}
    )
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert cli.main(["validate", "-c", str(tmp_path / "c.json")]) == 2
    assert (
        f"odeon: error: train_setup.init_weights: {weights} holds ODEON lightunet weights, but "
        "train_setup.model_name is unet" in capsys.readouterr().err
    )


# --- properties -----------------------------------------------------------------------------------------------

_size = st.floats(min_value=0.01, max_value=100, allow_nan=False)
_entry = st.one_of(_size, st.lists(_size, min_size=2, max_size=2))


@settings(max_examples=200, deadline=None)
@given(
    value=st.one_of(
        _size,
        st.lists(_size, min_size=2, max_size=2),
        st.lists(_entry, min_size=1, max_size=3),
        st.dictionaries(st.sampled_from(["train", "val", "test"]), _entry, min_size=1),
    )
)
def test_a_resolution_is_read_one_way_or_refused_as_ambiguous(value: object) -> None:
    from odeon_job.config import SPLITS

    config = make_config("a.csv", "o")
    config["data_source"]["resolution"] = value
    two_numbers = isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value)
    if two_numbers and value[0] != value[1]:  # type: ignore[index]
        with pytest.raises(ConfigError, match="is ambiguous"):
            config_from_dict(config)
        return
    try:
        read = config_from_dict(config).data_source.resolution
    except ConfigError as error:  # only a list of one bare number, which is neither form
        assert isinstance(value, list) and len(value) == 1 and not isinstance(value[0], list), error
        return
    per_split = isinstance(value, list) and (
        len(value) == 3 or (len(value) in (1, 2) and any(isinstance(v, list) for v in value))
    )
    if per_split:  # ODEON's order: train, val, test; a missing one takes the last
        assert isinstance(read, dict) and list(read) == list(SPLITS)
        assert all(read[split] == value[min(i, len(value) - 1)] for i, split in enumerate(SPLITS))  # type: ignore
    else:
        assert read == value


@settings(max_examples=60, deadline=None)
@given(
    counts=st.integers(min_value=2, max_value=6).flatmap(
        lambda n: st.lists(st.lists(st.integers(0, 10_000), min_size=n, max_size=n), min_size=n, max_size=n)
    ),
    loss=st.floats(0, 10, allow_nan=False),
    lr=st.floats(1e-6, 1, allow_nan=False),
)
def test_a_history_goes_to_odeon_and_back_unchanged(counts: list[list[int]], loss: float, lr: float) -> None:
    from odeon_job.tasks.convert_history import from_odeon, to_odeon
    from odeon_job.training.evaluation import Evaluation
    from odeon_job.training.metrics import confusion_metrics

    labels = [f"c{i}" for i in range(len(counts))]
    confusion = torch.tensor(counts)
    ours = {"0": Evaluation(loss, confusion, confusion_metrics(confusion, labels)).entry(lr)}
    back = from_odeon(to_odeon(ours))
    assert back.keys() == ours.keys()
    for key, value in ours["0"].items():
        assert back["0"][key] == (pytest.approx(value) if isinstance(value, float) else value), key


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[" * 200_000 + "]" * 200_000, "objects or lists nested too deeply for a history"),
        ('{"1": {"loss": "abc", "cm_macro": [[1, 2], [3, 4]]}}', "entry '1': loss is 'abc', not a number"),
        (
            '{"1": {"loss": 0.5, "learning rate": [1], "cm_macro": [[1, 2], [3, 4]]}}',
            "entry '1': learning rate is [1], not a number",
        ),
        ('{"1": {"loss": 0.5, "cm_macro": [[1, NaN], [3, 4]]}}', "entry '1': cm_macro[0][1] is nan: a pixel count"),
        (
            '{"1": {"loss": 0.5, "cm_macro": [[1, 1e300], [3, 4]]}}',
            "entry '1': cm_macro[0][1] is 1e+300: a pixel count",
        ),
        ('{"1": {"loss": 0.5, "cm_macro": [[1, -2], [3, 4]]}}', "entry '1': cm_macro[0][1] is -2.0: a pixel count"),
        ('{"1": {"loss": 0.5, "cm_macro": [[1, 2.5], [3, 4]]}}', "entry '1': cm_macro[0][1] is 2.5: a pixel count"),
        (
            '{"1": {"loss": 0.5, "cm_macro": [[1, "x"], [3, 4]]}}',
            "entry '1': cm_macro is not a square matrix of pixel counts (it holds values that are not numbers)",
        ),
        ('{"1": {"cm_macro": [[1, 2], [3, 4]]}}', "entry '1': no loss"),
    ],
)
def test_convert_history_refuses_what_is_not_a_history_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """Each was a traceback, or (NaN, 1e300, negative counts) a history of -9223372036854775808 pixels, exit 0."""
    from odeon_job.commands import cli

    (tmp_path / "bad.json").write_text(content)
    assert cli.main(["convert-history", str(tmp_path / "bad.json"), str(tmp_path / "o.json"), "--to", "ours"]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"odeon: error: {tmp_path / 'bad.json'}: {message}") and error.count("\n") == 1, error
    assert not (tmp_path / "o.json").exists()


def test_convert_history_refuses_a_file_too_large_to_be_a_history_before_reading_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from odeon_job.commands import cli
    from odeon_job.tasks import convert_history

    monkeypatch.setattr(convert_history, "MAX_HISTORY_BYTES", 1000)
    (tmp_path / "big.json").write_text('{"1": {"loss": 0.5, "cm_macro": [[' + ", ".join(["7"] * 600) + "]]}}")
    assert cli.main(["convert-history", str(tmp_path / "big.json"), str(tmp_path / "o.json"), "--to", "odeon"]) == 2
    assert "more than the 1000 a history is read up to" in capsys.readouterr().err
    big = [[1] * 1025] * 1025  # more classes than any mask holds: refused before its figures are computed
    (tmp_path / "wide.json").write_text(json.dumps({"1": {"loss": 0.5, "cm_micro": big}}))
    monkeypatch.setattr(convert_history, "MAX_HISTORY_BYTES", 2**30)
    assert cli.main(["convert-history", str(tmp_path / "wide.json"), str(tmp_path / "o.json"), "--to", "odeon"]) == 2
    assert "cm_micro is not a square matrix of pixel counts (of at most 1024 classes)" in capsys.readouterr().err


def test_exports_odeon_would_not_take_as_expected_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    """An ODEON configuration's export_checkpoint "pth" for a U-Net gave files ODEON cannot load (46 missing, 46
    unexpected keys), silently; an odeon_pth of a model interpolating without align_corners predicts otherwise."""
    from odeon_job.tasks.preflight import warn_about_exports

    def warnings(train_setup: dict[str, object]) -> str:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="odeon"):
            warn_about_exports(config_from_dict(make_config("a.csv", "o", train_setup=train_setup)))
        return caplog.text

    assert 'add "odeon_pth" to export_checkpoint' in warnings({"model_name": "unet", "export_checkpoint": "pth"})
    assert warnings({"model_name": "resnet18", "export_checkpoint": "pth"}) == ""  # ODEON has no such file to load
    assert "align_corners=True" in warnings({"model_name": "lightunet", "export_checkpoint": "odeon_pth"})
    assert (
        warnings(
            {
                "model_name": "lightunet",
                "export_checkpoint": ["odeon_pth", ".pth"],
                "model_params": {"align_corners": True},
            }
        )
        == ""
    )
