from __future__ import annotations

import pytest
import torch

from odeon_job.errors import ConfigError
from odeon_job.models import MODELS, build_model
from odeon_job.models.unet import UNet


def _double_conv(c_in: int, c_out: int, batch_norm: bool) -> int:
    """Two 3x3 convolutions with bias, each followed by batch norm (2 parameters per channel)."""
    return 9 * c_in * c_out + c_out + 9 * c_out * c_out + c_out + (4 * c_out if batch_norm else 0)


def _unet_parameters(c: int, k: int, f: tuple[int, ...], batch_norm: bool, upsampling: str) -> int:
    total = _double_conv(c, f[0], batch_norm)
    total += sum(_double_conv(f[i], f[i + 1], batch_norm) for i in range(4))
    for i in range(4):
        wide, half = f[i + 1], f[i + 1] // 2
        total += wide * half + half if upsampling == "bilinear" else 4 * wide * half + half
        total += _double_conv(half + f[i], f[i], batch_norm)
    return total + f[0] * k + k


@pytest.mark.parametrize(("name", "features", "batch_norm"), [
    ("unet", (64, 128, 256, 512, 1024), True),
    ("lightunet", (8, 16, 32, 64, 128), False),
])
@pytest.mark.parametrize(("bands", "classes"), [(3, 2), (5, 15)])
def test_parameter_count_follows_the_architecture(name: str, features: tuple[int, ...], batch_norm: bool,
                                                  bands: int, classes: int) -> None:
    model = build_model(name, bands, classes)
    count = sum(p.numel() for p in model.parameters())
    assert count == _unet_parameters(bands, classes, features, batch_norm, "bilinear")


def test_transposed_upsampling_parameter_count() -> None:
    model = UNet(4, 6, (8, 16, 32, 64, 128), batch_norm=True, upsampling="transposed")
    assert sum(p.numel() for p in model.parameters()) == _unet_parameters(4, 6, (8, 16, 32, 64, 128), True,
                                                                          "transposed")


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize(("bands", "classes"), [(3, 2), (5, 15), (1, 1)])
def test_forward_and_backward(name: str, bands: int, classes: int) -> None:
    model = build_model(name, bands, classes)
    image = torch.randn(2, bands, 32, 32, requires_grad=True)
    logits = model(image)
    assert logits.shape == (2, classes, 32, 32)
    logits.sum().backward()
    assert image.grad is not None and torch.isfinite(image.grad).all()


@pytest.mark.parametrize("size", [(100, 100), (37, 53), (5, 7)])
def test_sizes_not_a_multiple_of_16_are_padded_and_cropped_back(size: tuple[int, int]) -> None:
    model = build_model("lightunet", 3, 4).eval()
    image = torch.rand(1, 3, *size)
    logits = model(image)
    assert logits.shape == (1, 4, *size)
    # Cropping keeps the top-left aligned: the same pixels inside a larger tile give similar logits.
    big = torch.nn.functional.pad(image, (0, 16 - size[1] % 16, 0, 16 - size[0] % 16), mode="replicate")
    assert torch.allclose(model(big)[..., : size[0], : size[1]], logits, atol=1e-5)


def test_initialisation_keeps_the_signal_alive_without_batch_norm() -> None:
    torch.manual_seed(0)
    logits = build_model("lightunet", 3, 5)(torch.randn(4, 3, 64, 64))
    # Measured: PyTorch's default initialisation gives a spread of 0.18 here, He-normal 3.3.
    assert logits.std().item() > 1.0


def test_models_not_available_yet_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"train_setup.model_name: 'deeplab' is not supported yet by this version "
                                          r"\(available: unet, lightunet\)"):
        build_model("deeplab", 3, 2)
