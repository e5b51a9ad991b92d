from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torchvision

from odeon_job.config import ModelParams
from odeon_job.errors import ConfigError
from odeon_job.training.models import MODELS, build_model
from odeon_job.training.models.blocks import adapt_first_conv
from odeon_job.training.models.unet import UNet
from odeon_job.training.models.weights import encoder_weights_file, load_encoder_weights, load_init_weights


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _double_conv(c_in: int, c_out: int, batch_norm: bool, bias: bool = True) -> int:
    """Two 3x3 convolutions, each followed by batch norm (2 parameters per channel) when asked."""
    per_conv_bias = c_out if bias else 0
    return 9 * c_in * c_out + per_conv_bias + 9 * c_out * c_out + per_conv_bias + (4 * c_out if batch_norm else 0)


def _unet_parameters(c: int, k: int, f: tuple[int, ...], batch_norm: bool, upsampling: str) -> int:
    total = _double_conv(c, f[0], batch_norm)
    total += sum(_double_conv(f[i], f[i + 1], batch_norm) for i in range(4))
    for i in range(4):
        wide, half = f[i + 1], f[i + 1] // 2
        total += wide * half + half if upsampling == "bilinear" else 4 * wide * half + half
        total += _double_conv(half + f[i], f[i], batch_norm)
    return total + f[0] * k + k


def _resnet_unet_parameters(depth: int, c: int, k: int, upsampling: str) -> int:
    """torchvision's own ResNet count without its classifier, the first convolution for c bands, and
    the decoder: five stages (upsample, concatenate the skip, double convolution) and a 1x1 head."""
    resnet = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    encoder = _count(resnet) - _count(resnet.fc) - 64 * 3 * 49 + 64 * c * 49
    e = 1 if depth in (18, 34) else 4
    ins, skips, outs = (512 * e, 256, 128, 64, 32), (256 * e, 128 * e, 64 * e, 64, 0), (256, 128, 64, 32, 16)
    decoder = sum(_double_conv(i + s, o, batch_norm=True) for i, s, o in zip(ins, skips, outs, strict=True))
    if upsampling == "transposed":
        decoder += sum(4 * i * i + i for i in ins)
    return encoder + decoder + 16 * k + k


def _deeplab_parameters(c: int, k: int) -> int:
    """MobileNetV2's features up to the 320-channel block (torchvision's count), the first convolution
    for c bands, ASPP (1x1, three 3x3 rates and pooling branches of 256 channels, then a projection),
    and the decoder (48-channel reduction, two 3x3 convolutions of 256, a 1x1 classifier)."""
    backbone = _count(torchvision.models.mobilenet_v2(weights=None).features[:18]) - 32 * 3 * 9 + 32 * c * 9
    bn = 2 * 256
    aspp = (320 * 256 + bn) + 3 * (9 * 320 * 256 + bn) + (320 * 256 + bn) + (5 * 256 * 256 + bn)
    decoder = (24 * 48 + 2 * 48) + _double_conv(256 + 48, 256, batch_norm=True, bias=False) + 256 * k + k
    return backbone + aspp + decoder


@pytest.mark.parametrize(("bands", "classes"), [(3, 2), (5, 15)])
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("unet", lambda c, k: _unet_parameters(c, k, (64, 128, 256, 512, 1024), True, "bilinear")),
        ("lightunet", lambda c, k: _unet_parameters(c, k, (8, 16, 32, 64, 128), False, "bilinear")),
        ("resnet18", lambda c, k: _resnet_unet_parameters(18, c, k, "bilinear")),
        ("resnet34", lambda c, k: _resnet_unet_parameters(34, c, k, "bilinear")),
        ("resnet50", lambda c, k: _resnet_unet_parameters(50, c, k, "bilinear")),
        ("resnet101", lambda c, k: _resnet_unet_parameters(101, c, k, "bilinear")),
        ("resnet152", lambda c, k: _resnet_unet_parameters(152, c, k, "bilinear")),
        ("deeplab", _deeplab_parameters),
    ],
)
def test_parameter_count_follows_the_architecture(name: str, expected, bands: int, classes: int) -> None:  # type: ignore[no-untyped-def]
    assert _count(build_model(name, bands, classes)) == expected(bands, classes)


def test_transposed_upsampling_parameter_counts() -> None:
    model = UNet(4, 6, (8, 16, 32, 64, 128), batch_norm=True, upsampling="transposed")
    assert _count(model) == _unet_parameters(4, 6, (8, 16, 32, 64, 128), True, "transposed")
    resnet = build_model("resnet50", 4, 6, ModelParams(upsampling="transposed"))
    assert _count(resnet) == _resnet_unet_parameters(50, 4, 6, "transposed")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("bands", "classes"), [(3, 2), (5, 15), (3, 15), (5, 2)])
def test_forward_and_backward(name: str, bands: int, classes: int) -> None:
    model = build_model(name, bands, classes)
    image = torch.randn(2, bands, 64, 64, requires_grad=True)
    logits = model(image)
    assert logits.shape == (2, classes, 64, 64)
    logits.sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_one_band_one_class(name: str) -> None:
    assert build_model(name, 1, 1).eval()(torch.rand(1, 1, 48, 48)).shape == (1, 1, 48, 48)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("size", [(100, 100), (37, 53)])
def test_any_input_size_gives_an_output_of_the_same_size(name: str, size: tuple[int, int]) -> None:
    assert build_model(name, 3, 4).eval()(torch.rand(1, 3, *size)).shape == (1, 4, *size)


def test_padding_keeps_pixels_in_place() -> None:
    model = build_model("resnet18", 3, 4).eval()
    image = torch.rand(1, 3, 50, 40)
    big = torch.nn.functional.pad(image, (0, 24, 0, 14), mode="replicate")  # to 64 x 64: what the model does
    assert torch.allclose(model(big)[..., :50, :40], model(image), atol=1e-5)


@pytest.mark.parametrize(("output_stride", "size"), [(8, 8), (16, 4)])
def test_deeplab_output_stride(output_stride: int, size: int) -> None:
    model = build_model("deeplab", 3, 2, ModelParams(output_stride=output_stride)).eval()
    seen: list[torch.Size] = []
    model.aspp.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape))
    model(torch.rand(1, 3, 64, 64))
    assert seen == [torch.Size([1, 320, size, size])]


def test_initialisation_keeps_the_signal_alive_without_batch_norm() -> None:
    torch.manual_seed(0)
    logits = build_model("lightunet", 3, 5)(torch.randn(4, 3, 64, 64))
    # Measured: PyTorch's default initialisation gives a spread of 0.18 here, He-normal 3.3.
    assert logits.std().item() > 1.0


def test_no_model_downloads_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    for name in MODELS:
        build_model(name, 4, 3)


def test_first_conv_adaptation() -> None:
    rgb = torch.randn(8, 3, 7, 7)
    assert torch.equal(adapt_first_conv(rgb, 3), rgb)
    five = adapt_first_conv(rgb, 5)
    assert five.shape == (8, 5, 7, 7)
    assert torch.allclose(five[:, 2], rgb.mean(dim=1) * 3 / 5)
    # A grey image gives the same response through the adapted kernel as through the RGB one.
    assert torch.allclose(five.sum(dim=1), rgb.sum(dim=1), atol=1e-5)


@pytest.mark.parametrize(
    ("name", "torchvision_model"),
    [
        ("resnet18", lambda: torchvision.models.resnet18(weights=None)),
        ("resnet50", lambda: torchvision.models.resnet50(weights=None)),
        ("deeplab", lambda: torchvision.models.mobilenet_v2(weights=None)),
    ],
)
def test_encoder_weights_from_a_torchvision_state_dict(tmp_path: Path, name: str, torchvision_model) -> None:  # type: ignore[no-untyped-def]
    imagenet = torchvision_model().state_dict()  # ImageNet-style: same keys and shapes
    path = tmp_path / "encoder.pth"
    torch.save(imagenet, path)
    model = build_model(name, 5, 3)
    load_encoder_weights(model, str(path))
    if name == "deeplab":
        loaded, first, rest = model.backbone.state_dict(), "0.0.weight", "17.conv.2.weight"
        source_first, source_rest = imagenet["features.0.0.weight"], imagenet["features.17.conv.2.weight"]
    else:
        loaded, first, rest = model.encoder.state_dict(), "conv1.weight", "layer4.0.conv1.weight"
        source_first, source_rest = imagenet["conv1.weight"], imagenet["layer4.0.conv1.weight"]
    assert torch.equal(loaded[rest], source_rest)
    assert torch.allclose(loaded[first], adapt_first_conv(source_first, 5))


def test_encoder_weights_of_another_network_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    with pytest.raises(ConfigError, match=r"train_setup.encoder_weights: .*resnet18.pth does not fit the encoder"):
        load_encoder_weights(build_model("resnet50", 3, 2), str(path))


def test_init_weights_from_a_state_dict_and_from_a_checkpoint(tmp_path: Path) -> None:
    source = build_model("lightunet", 3, 4)
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    torch.save(
        {
            "epoch": 3,
            "state_dict": {f"model.{k}": v for k, v in source.state_dict().items()},
            "hyper_parameters": {"config": {}},
        },
        tmp_path / "run.ckpt",
    )
    for file in ("weights.pth", "run.ckpt"):
        target = build_model("lightunet", 3, 4)
        load_init_weights(target, str(tmp_path / file))
        assert all(
            torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values(), strict=True)
        )


def test_init_weights_for_other_classes_keep_the_rest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = build_model("lightunet", 3, 15)
    torch.save(source.state_dict(), tmp_path / "w.pth")
    target = build_model("lightunet", 3, 4)
    with caplog.at_level(logging.INFO, logger="odeon"):
        load_init_weights(target, str(tmp_path / "w.pth"))
    assert torch.equal(target.inc[0].weight, source.inc[0].weight)
    assert "left as initialised: outc.weight, outc.bias" in caplog.text


def test_init_weights_that_fit_nothing_or_are_not_weights(tmp_path: Path) -> None:
    torch.save(build_model("lightunet", 3, 2).state_dict(), tmp_path / "light.pth")
    with pytest.raises(ConfigError, match="train_setup.init_weights: no tensor of .*light.pth fits this model"):
        load_init_weights(build_model("deeplab", 3, 2), str(tmp_path / "light.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match=r"train_setup.init_weights: .*junk.pth: damaged: not a complete torch file"):
        load_init_weights(build_model("lightunet", 3, 2), str(tmp_path / "junk.pth"))
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled_module.pth")  # code, not weights
    with pytest.raises(
        ConfigError,
        match=r"pickled_module.pth: refused: it holds objects that only code could "
        r"rebuild.*nothing in it was run",
    ):
        load_init_weights(build_model("lightunet", 3, 2), str(tmp_path / "pickled_module.pth"))


@pytest.mark.parametrize(
    ("name", "file_name", "torchvision_model"),
    [
        ("resnet18", "resnet18-f37072fd.pth", lambda: torchvision.models.resnet18(weights=None)),
        ("deeplab", "mobilenet_v2-7ebf99e0.pth", lambda: torchvision.models.mobilenet_v2(weights=None)),
    ],
)
def test_imagenet_encoder_weights_by_name_come_from_torchvision_s_cache(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, file_name: str, torchvision_model
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    with pytest.raises(ConfigError) as missing:  # offline and not placed: one line, the file and the folder
        encoder_weights_file(name, "imagenet")
    assert f"reads torchvision's {file_name} from {checkpoints}" in str(missing.value)
    assert "\n" not in str(missing.value) and "https://download.pytorch.org/models/" + file_name in str(missing.value)

    checkpoints.mkdir(parents=True)
    placed = torchvision_model().state_dict()  # a generated state dict under the name torchvision expects
    torch.save(placed, checkpoints / file_name)
    path = encoder_weights_file(name, "ImageNet")
    assert path == str(checkpoints / file_name)
    model = build_model(name, 3, 2)
    load_encoder_weights(model, path)  # type: ignore[arg-type]
    loaded = model.backbone.state_dict() if name == "deeplab" else model.encoder.state_dict()
    key = "17.conv.2.weight" if name == "deeplab" else "layer4.0.conv1.weight"
    assert torch.equal(loaded[key], placed[f"features.{key}" if name == "deeplab" else key])
    assert encoder_weights_file(name, "/some/where.pth") == "/some/where.pth"  # a path is a path


def test_imagenet_encoder_weights_for_a_model_without_encoder_are_refused_by_the_schema() -> None:
    from odeon_job.config import config_from_dict

    with pytest.raises(ConfigError, match=r"train_setup.encoder_weights: .*lightunet"):
        config_from_dict(
            {
                "data_source": {"train_file": "t.csv"},
                "train_setup": {"model_name": "lightunet", "encoder_weights": "imagenet"},
                "output_setup": {"output_folder": "o"},
            }
        )
