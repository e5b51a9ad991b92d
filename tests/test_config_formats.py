"""Configurations in YAML as well as JSON, and the hints a misplaced key or a misnamed file gets."""

from __future__ import annotations

import io
import json
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from odeon_job.commands import cli
from odeon_job.config import JobConfig, config_from_dict, load_config
from odeon_job.errors import ConfigError

MINIMAL: dict[str, Any] = {
    "data_source": {"train_file": "train.csv"},
    "train_setup": {"model_name": "unet"},
    "output_setup": {"output_folder": "out"},
}

FULL: dict[str, Any] = {
    "data_source": {
        "train_file": "train.csv",
        "val_file": "val.csv",
        "image_bands": [1, 2, 3],
        "mask_bands": [1, 2],
        "patch_size": 256,
        "normalization_weights": {"train": {"mean": [0.4, 0.4, 0.4], "std": [0.2, 0.2, 0.2]}},
        "class_labels": ["on", "off"],
    },
    "train_setup": {
        "model_name": "resnet34",
        "epochs": 20,
        "batch_size": 8,
        "lr": 1e-3,
        "loss": "focal",
        "optimizer_config": {"optimizer": "adamw", "weight_decay": 0.01},
        "early_stopping": {"patience": 5},
    },
    "output_setup": {"output_folder": "out", "version_name": "2026-12-03", "use_tensorboard": False},
    "device_setup": {"accelerator": "cpu", "num_workers": 0},
}


def _sections(model: type[BaseModel] = JobConfig, path: str = "") -> dict[str, type[BaseModel]]:
    """Every object of the schema (but dicts of them), by dotted path: "" the top level."""
    found = {path: model}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) is dict or any(
            typing.get_origin(a) is dict for a in typing.get_args(annotation)
        ):
            continue
        for candidate in (annotation, *typing.get_args(annotation)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found.update(_sections(candidate, f"{path}.{name}" if path else name))
    return found


SECTIONS = _sections()
TOP_SECTIONS = ["", "data_source", "train_setup", "output_setup", "device_setup"]
#: Keys a second place accepts on purpose: ODEON merges its sections, so its configurations may give
#: ``export_checkpoint`` in output_setup.
ACCEPTED_ELSEWHERE = {("output_setup", "export_checkpoint")}


def _placed(data: dict[str, Any], section: str, key: str) -> dict[str, Any]:
    placed = json.loads(json.dumps(data))
    node = placed
    for part in filter(None, section.split(".")):
        node = node.setdefault(part, {})
    node[key] = 1
    return placed


@pytest.mark.parametrize("home", [path for path in SECTIONS if path])
def test_every_key_put_in_another_section_is_told_where_it_belongs(home: str) -> None:
    keys = list(SECTIONS[home].model_fields)
    checked = 0
    for key in keys:
        homes = [path for path, model in SECTIONS.items() if key in model.model_fields]
        for elsewhere in TOP_SECTIONS:
            if elsewhere in homes or (elsewhere, key) in ACCEPTED_ELSEWHERE:
                continue
            with pytest.raises(ConfigError) as raised:
                config_from_dict(_placed(MINIMAL, elsewhere, key))
            where = f"{elsewhere}.{key}" if elsewhere else key
            lines = [line for line in str(raised.value).splitlines() if f": {where}: unknown key" in line]
            assert lines, (where, str(raised.value))
            assert f"it belongs in {home}" in lines[0], lines[0]
            checked += 1
    assert checked >= len(keys)


def test_a_key_in_its_own_section_with_a_typo_gets_the_spelling_not_a_move() -> None:
    with pytest.raises(ConfigError, match=r"train_setup\.epoch: unknown key \(did you mean 'epochs'\?\)$"):
        config_from_dict(_placed(MINIMAL, "train_setup", "epoch"))


# --- YAML ---------------------------------------------------------------------------------------------------


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_the_same_configuration_as_yaml_and_as_json_is_the_same_configuration(tmp_path: Path) -> None:
    from_json = load_config(_write(tmp_path, "c.json", json.dumps(FULL, indent=2)))
    from_yaml = load_config(_write(tmp_path, "c.yaml", yaml.safe_dump(FULL, sort_keys=False)))
    from_yml = load_config(_write(tmp_path, "c.yml", yaml.safe_dump(FULL, default_flow_style=True)))
    assert from_yaml.model_dump() == from_json.model_dump() == from_yml.model_dump()
    assert from_yaml.train_setup.lr == 1e-3


def test_yaml_values_are_those_a_json_reader_would_give(tmp_path: Path) -> None:
    text = """
data_source:
  train_file: train.csv
  class_labels: [yes, no, on, off, 2026-12-03]
train_setup:
  model_name: unet
  lr: 1e-3          # a number (PyYAML's YAML 1.1 would keep it text)
output_setup:
  output_folder: out
  version_name: 2026-12-03   # text, not a date
  use_tensorboard: false
"""
    config = load_config(_write(tmp_path, "c.yaml", text))
    assert config.train_setup.lr == 0.001
    assert config.data_source.class_labels == ["yes", "no", "on", "off", "2026-12-03"]
    assert config.output_setup.version_name == "2026-12-03"
    assert config.output_setup.use_tensorboard is False


def test_yaml_errors_name_the_line_of_the_key(tmp_path: Path) -> None:
    text = (
        "data_source:\n  train_file: train.csv\ntrain_setup:\n  model_name: unet\n  epochs: ten\n"
        "  get_prediction: true\noutput_setup:\n  output_folder: out\n"
    )
    source = _write(tmp_path, "c.yaml", text)
    with pytest.raises(ConfigError) as raised:
        load_config(source)
    lines = str(raised.value).splitlines()
    assert f"{source}, line 5: train_setup.epochs: Input should be a valid integer" in lines[0]
    assert lines[1] == (
        f"{source}, line 6: train_setup.get_prediction: unknown key; it belongs in output_setup "
        "(output_setup.get_prediction)"
    )


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("c.yaml", "data_source: [unclosed\n", r"c\.yaml: invalid YAML at line 2, column 1"),
        (
            "c.json",
            "data_source:\n  train_file: a.csv\n",
            r"c\.json: not JSON \(line 1, column 1.*name the file \.yaml",
        ),
        ("c.yaml", '{\t"data_source": {}}', r"c\.yaml: invalid YAML, but valid JSON: name the file \.json"),
        ("c.yaml", "a: 1\na: 2\n", r"c\.yaml: line 2: the key 'a' appears twice"),
        ("c.yaml", "a: !!python/object/apply:os.system [true]\n", r"c\.yaml: invalid YAML at line 1"),
        ("c.yaml", "a: &x [*x]\n", r"c\.yaml: an alias refers to the object that contains it"),
        ("c.yaml", "base: &b {x: 1}\nother:\n  <<: *b\n", r"c\.yaml: line 3: merge keys \(<<\) are not accepted"),
        ("c.yaml", "", r"c\.yaml: the YAML document is empty"),
        ("c.yaml", "- 1\n- 2\n", r"c\.yaml: the configuration must be a JSON object, got list"),
    ],
)
def test_a_malformed_or_misnamed_file_gets_one_line(tmp_path: Path, name: str, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, name, text))


def test_aliases_that_multiply_are_refused_before_they_expand(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10**9 values
    with pytest.raises(ConfigError, match=r"aliases expand to \d+ values, more than the 100000"):
        load_config(_write(tmp_path, "bomb.yaml", "\n".join(lines) + "\n"))


def test_yaml_from_the_standard_input_and_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(yaml.safe_dump(FULL)))
    assert load_config("-").model_dump() == config_from_dict(FULL).model_dump()
    bad = _write(
        tmp_path, "c.yaml", yaml.safe_dump({**MINIMAL, "train_setup": {"model_name": "unet", "save_top_k": 2}})
    )
    assert cli.main(["validate", "-c", bad]) == 2
    err = capsys.readouterr().err
    assert f"{bad}, line 7: train_setup.save_top_k: unknown key; it belongs in output_setup" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_yaml_from_object_storage(bucket: Any, make_dataset: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.conftest import make_config

    data = make_dataset(n=4)
    config = make_config(str(data.csv), str(bucket.url("runs")))
    url = bucket.put("c.yaml", yaml.safe_dump(config))
    assert cli.main(["validate", "-c", url]) == 0
    assert "OK: 4 samples checked" in capsys.readouterr().out


@pytest.mark.slow
def test_the_same_configuration_as_yaml_and_as_json_gives_the_same_run(make_dataset: Any, tmp_path: Path) -> None:
    from conftest import make_config

    data = make_dataset(n=6)
    runs = {}
    for name, dump in (("c.json", json.dumps), ("c.yaml", yaml.safe_dump)):
        config = make_config(data.csv, str(tmp_path / f"out-{name}"), train_setup={"epochs": 2, "deterministic": True})
        path = _write(tmp_path, name, dump(config))
        assert cli.main(["train", "-c", path]) == 0
        run = tmp_path / f"out-{name}" / "exp" / "v"
        saved = json.loads((run / "config.json").read_text())
        saved["output_setup"]["output_folder"] = "(the run's)"
        runs[name] = (saved, json.loads((run / "history_val.json").read_text()))
    assert runs["c.yaml"] == runs["c.json"]  # the same resolved configuration, the same figures epoch by epoch
