"""The model card a run leaves: what the model was trained on, how, its figures per class, how to use it, with
epochs numbered as the console numbers them and the files' own numbers beside them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from odeon_job.commands import cli
from odeon_job.outputs.callbacks.report import LEGEND

from conftest import make_config


def test_the_model_card_says_what_how_how_well_and_how_to_use(make_dataset: Any, tmp_path: Path, capsys: Any) -> None:
    data, test = make_dataset(n=8), make_dataset(n=3, name="test", seed=1)
    config = make_config(
        data.csv,
        str(tmp_path / "out"),
        data_source={"test_file": test.csv, "class_labels": ["field", "road", "roof"]},
        train_setup={"epochs": 3},
    )
    (tmp_path / "c.json").write_text(json.dumps(config))
    assert cli.main(["train", "-c", str(tmp_path / "c.json")]) == 0
    console = capsys.readouterr().err
    run = tmp_path / "out" / "exp" / "v"
    card = (run / "model_card.md").read_text()

    assert card.startswith("# Model card: lightunet, exp/v\n")
    assert "semantic segmentation of 3-band images at the files' own pixel size into 3 classes" in card
    assert f"| train | `{data.csv}` | 6 |" in card and f"| test | `{test.csv}` | 3 |" in card
    assert f"| val | `{data.csv} (held out: percentage_val)` | 2 |" in card
    assert re.search(r"\| 1 \| road \| `#[0-9A-Fa-f]{6}` \|", card)
    assert "3 of 3 epochs run." in card

    history = json.loads((run / "history_val.json").read_text())
    best = min(history, key=lambda key: history[key]["loss"])
    (checkpoint,) = [p.name for p in (run / "odeon_val_loss_ckpt").glob(f"*epoch={best}-*.ckpt")]
    line = next(line for line in card.splitlines() if line.startswith("- Best epoch"))
    assert line.startswith(f'- Best epoch (lowest validation loss): {int(best) + 1} (history key "{best}", ')
    assert f"checkpoint `{checkpoint}`" in line and f"mIoU {history[best]['Average/IoU']:.4f}" in line
    assert f"epoch {int(best) + 1}/3: train_loss" in console  # the console's number for the same epoch
    assert console.count(LEGEND) == 1  # the console's names → the other outputs', once

    tested = next(iter(json.loads((run / "history_test.json").read_text()).values()))
    for label in ("field", "road", "roof", "Average"):
        figures = [tested[f"{label}/{name}"] for name in ("IoU", "F1-Score", "Precision", "Recall")]
        shown = " | ".join(f"{value:.4f}" if value is not None else "-" for value in figures)
        assert f"| {label} | {shown} |" in card
    assert f"odeon predict --model {run} --images IMAGES --output MAPS" in card
