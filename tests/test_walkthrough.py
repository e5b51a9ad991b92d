"""The README's "Train on your own data", run as written on data the test makes: CSVs → stats → validate → train →
predict. Only speed is the test's own: one epoch of small batches, on the CPU, without DataLoader workers (given
as extra --set arguments after the README's), and a generated stand-in for torchvision's ImageNet file."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
import yaml

from conftest import split_csvs

ROOT = Path(__file__).resolve().parent.parent
SPEED = ["--set", "train_setup.epochs=1", "--set", "train_setup.batch_size=2", "--set", "device_setup.num_workers=0"]


def walkthrough() -> tuple[dict[str, Any], list[list[str]]]:
    """The README walkthrough's configuration and its `odeon` commands, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("[start:walkthrough]", 1)[1].split("[end:walkthrough]", 1)[0]
    config = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]
    commands = [
        shlex.split(line, comments=True)
        for block in re.findall(r"```console\n(.*?)```", section, re.S)
        for line in block.splitlines()
        if line.startswith("odeon ")
    ]
    return config, commands


def test_the_walkthrough_names_every_step() -> None:
    config, commands = walkthrough()
    assert [command[1] for command in commands] == ["stats", "validate", "train", "predict"]
    assert config["train_setup"]["encoder_weights"] == "imagenet"


@pytest.mark.slow
def test_a_newcomer_s_path_from_the_readme_alone(
    make_dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, commands = walkthrough()
    split_csvs(make_dataset, tmp_path)
    (tmp_path / "landcover.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), checkpoints / "resnet34-b627a593.pth")
    new_images = tmp_path / "new-images"
    new_images.mkdir()
    for image in sorted((tmp_path / "data" / "test" / "img").glob("*.tif"))[:2]:
        (new_images / image.name).write_bytes(image.read_bytes())
    env = {**__import__("os").environ, "TORCH_HOME": str(tmp_path / "torch")}

    def odeon(arguments: list[str]) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "odeon_job", *arguments], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, (arguments, result.stderr[-3000:])
        return result

    stats, validate, train, predict = commands
    pasted = json.loads(odeon(stats[1:]).stdout)  # step 3: paste what it prints
    config["data_source"].update(pasted["data_source"])
    config["train_setup"].update(pasted["train_setup"])
    (tmp_path / "landcover.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    assert "OK:" in odeon(validate[1:]).stdout
    trained = odeon([*train[1:], *SPEED, "--set", "device_setup.accelerator=cpu"])
    assert "encoder loaded from imagenet" in trained.stderr
    run = tmp_path / "runs" / "landcover" / "first"
    for name in ("model_card.md", "history_val.json", "config.json", "scenes.csv"):
        assert (run / name).is_file(), name
    odeon([*predict[1:], "--accelerator", "cpu", "--num-workers", "0"])
    maps = sorted(path.name for path in (tmp_path / "maps").glob("*.tif"))
    assert maps == sorted(path.name for path in new_images.glob("*.tif"))
