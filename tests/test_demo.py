from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio

from odeon_job.commands import demo
from odeon_job.commands.cli import main


def test_demo_tiles_are_georeferenced_and_masks_one_hot(tmp_path: Path) -> None:
    dataset = demo.write_dataset(str(tmp_path), n_train=2, n_val=1, n_test=1, size=64)
    rows = Path(dataset.train_csv).read_text().splitlines()
    assert rows == ["img/tile_0000.tif,msk/tile_0000.tif", "img/tile_0001.tif,msk/tile_0001.tif"]
    with (
        rasterio.open(tmp_path / "img" / "tile_0001.tif") as image,
        rasterio.open(tmp_path / "msk" / "tile_0001.tif") as mask,
    ):
        assert (image.count, image.dtypes[0], image.width) == (3, "uint8", 64)
        assert image.crs.to_epsg() == 2154 and image.res == (0.2, 0.2)
        assert image.transform == mask.transform and image.transform.c == demo.ORIGIN[0] + 64 * 0.2
        onehot = mask.read()
    assert onehot.shape == (5, 64, 64) and set(np.unique(onehot)) <= {0, 1}
    assert (onehot.sum(axis=0) == 1).all()
    assert sum(dataset.val_class_frequencies) == pytest.approx(1.0)


@pytest.mark.slow
def test_demo_learns_well_above_the_majority_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The real command, on a smaller dataset than `odeon demo` writes: tiles of 128 x 128 pixels.
    monkeypatch.setattr(demo, "write_demo", functools.partial(demo.write_demo, n_train=64, n_val=8, n_test=4, size=128))
    assert main(["demo", "--output", str(tmp_path)]) == 0
    config = json.loads((tmp_path / "demo_config.json").read_text())
    assert config["train_setup"]["model_name"] == "lightunet"
    runs = list((tmp_path / "runs" / "demo").iterdir())
    assert len(runs) == 1
    history = json.loads((runs[0] / "history_val.json").read_text())
    final = history[str(config["train_setup"]["epochs"] - 1)]["Average/IoU"]
    counts = np.zeros(5)
    for row in (tmp_path / "data" / "val.csv").read_text().splitlines():
        with rasterio.open(tmp_path / "data" / row.split(",")[1]) as mask:
            counts += mask.read().reshape(5, -1).sum(axis=1)
    majority = counts.max() / counts.sum() / np.count_nonzero(counts)  # IoU of the majority class, over classes
    assert final > majority + 0.3, (final, majority)
    err = capsys.readouterr().err
    assert f"final validation mIoU {final:.3f}" in err

    # With no MLflow settings, the run is recorded in the local store under the output folder.
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("demo").experiment_id])
    assert run.info.run_name == f"demo/{runs[0].name}" and run.info.status == "FINISHED"
    recorded = [m.value for m in client.get_metric_history(run.info.run_id, "val/Average/IoU")]
    assert recorded == [entry["Average/IoU"] for entry in history.values()]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"checkpoints", "figures", "run"}
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert [model.source_run_id for model in models] == [run.info.run_id]

    # The test report: a class map (the demo's colours) and an error map per test tile, scenes.csv, the figures.
    predictions = sorted((runs[0] / "predictions").glob("*.tif"))
    assert len(predictions) == 4 and len(list((runs[0] / "errors").glob("*.tif"))) == 4
    with rasterio.open(predictions[0]) as first:
        assert first.count == 1 and first.nodata == 255
        assert [first.colormap(1)[i][:3] for i in range(5)] == [
            tuple(int(color[i : i + 2], 16) for i in (1, 3, 5)) for color in demo.CLASS_COLORS
        ]
    assert len((runs[0] / "scenes.csv").read_text().splitlines()) == 5
    assert {p.name for p in (runs[0] / "figures").iterdir()} >= {"confusion_matrix_test.png", "training_curves.png"}
    # odeon predict with the run folder maps the test images as the test phase did (each tile in one window)
    images = [
        str(tmp_path / "data" / row.split(",")[0]) for row in (tmp_path / "data" / "test.csv").read_text().split()
    ]
    (tmp_path / "images.csv").write_text("\n".join(images) + "\n")
    arguments = ["--images", str(tmp_path / "images.csv"), "--output", str(tmp_path / "maps")]
    assert main(["predict", "--model", str(runs[0]), *arguments, "--num-workers", "0"]) == 0
    for path in predictions:
        with rasterio.open(path) as tested, rasterio.open(tmp_path / "maps" / path.name) as predicted:
            assert (tested.read() == predicted.read()).all() and tested.transform == predicted.transform
